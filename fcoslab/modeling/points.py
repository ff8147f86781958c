"""The geometry of the feature pyramid: level sizes of an input, and the points every level predicts at.

Used by the model (to report its points), by targets (to assign them) and by the plots (to draw them),
so that all three agree on where a level's points lie.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def level_sizes(height: int, width: int, strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (h, w) of each level for an input of ``height`` x ``width`` pixels, as the network computes them:
    every stride-2 step (ResNet's stem, pooling and stages, the FPN's P6 and P7 convolutions) makes
    ``ceil(n / 2)`` of ``n``. For an input padded to a multiple of the largest stride this is
    ``(height // s, width // s)``."""
    sizes, h, w, s = [], height, width, 1
    for stride in strides:
        while s < stride:
            h, w, s = -(-h // 2), -(-w // 2), s * 2
        sizes.append((h, w))
    return sizes


def make_points(sizes: list[tuple[int, int]], strides: tuple[int, ...], offset: float,
                device: torch.device | str = "cpu", input_size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Point locations of every level, level after level, row-major within a level.

    Points lie at ``(i + offset) * spacing`` with spacing the level's stride; given the padded
    ``input_size`` (H, W), the spacing is ``H // h`` down and ``W // w`` across instead, as torchvision's
    anchor generator places them (``model.point_spacing=input_ratio``; the same unless the input is
    padded to less than the largest stride).

    Returns:
        points float (P, 2) xy pixels; strides float (P,), the nominal stride of each point's level.
    """
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        sy, sx = (input_size[0] // h, input_size[1] // w) if input_size else (s, s)
        ys = (torch.arange(h, device=device, dtype=torch.float32) + offset) * sy
        xs = (torch.arange(w, device=device, dtype=torch.float32) + offset) * sx
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))  # (h*w, 2)
        point_strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(point_strides)


def point_input_size(model_cfg, height: int, width: int) -> tuple[int, int] | None:
    """The ``input_size`` argument of :func:`make_points` for a padded input under ``model.point_spacing``."""
    return (height, width) if model_cfg.point_spacing == "input_ratio" else None


def level_names(strides) -> list[str]:
    """The pyramid levels' names from their strides: stride 2^k is ``Pk`` (8, 16, ... 128 -> P3 ... P7;
    a P2-P6 pyramid starts at stride 4)."""
    return [f"P{int(round(math.log2(int(s))))}" for s in strides]
