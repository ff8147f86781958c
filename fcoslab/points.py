"""The geometry of the feature pyramid: level sizes of an input, and the points every level predicts at.

Used by the model (to report its points), by targets (to assign them) and by the plots (to draw them),
so that all three agree on where a level's points lie.
"""

from __future__ import annotations

import torch
from torch import Tensor


def level_sizes(height: int, width: int, strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (h, w) of each level for an input of ``height`` x ``width`` pixels padded to a multiple of the
    largest stride (``ModelConfig.size_divisibility``): ``(height // s, width // s)`` for each stride."""
    d = max(strides)
    if height % d or width % d:
        raise ValueError(f"input {height}x{width} is not padded to a multiple of {d}")
    return [(height // s, width // s) for s in strides]


def make_points(sizes: list[tuple[int, int]], strides: tuple[int, ...], offset: float,
                device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Point locations of every level, level after level, row-major within a level.

    Returns:
        points float (P, 2) xy pixels at ``(i + offset) * stride``; strides float (P,).
    """
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + offset) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + offset) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))  # (h*w, 2)
        point_strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(point_strides)
