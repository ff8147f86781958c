"""FCOS training targets: which ground-truth box each point regresses, and what it regresses."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ..config import AssignConfig


def point_regress_ranges(level_sizes: list[tuple[int, int]], regress_ranges, device) -> Tensor:
    """The (lo, hi) range of each point's level: float (P, 2)."""
    counts = torch.tensor([h * w for h, w in level_sizes], device=device)
    ranges = torch.tensor(regress_ranges, dtype=torch.float32, device=device)  # (L, 2)
    return ranges.repeat_interleave(counts, dim=0)


def centerness_target(ltrb: Tensor) -> Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) for float (..., 4) distances -> (...)."""
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-6)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-6))
    return ratio.clamp(min=0).sqrt()


def fcos_targets(points: Tensor, strides: Tensor, level_sizes: list[tuple[int, int]], gt_boxes: Tensor,
                 gt_labels: Tensor, cfg: AssignConfig) -> dict[str, Tensor]:
    """Targets of every point of every image.

    Args:
        points (Tensor[P, 2]), strides (Tensor[P]): from the model's output.
        level_sizes: the (h, w) of each level, in order, as the model reports them.
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels; gt_labels (Tensor[B, M]): int64, -1 = padding.
    Returns (dict):
        ``matched`` int64 (B, P) box index or -1; ``labels`` int64 (B, P) class or -1 (background);
        ``ltrb`` float (B, P, 4) distances to the matched box (0 for background);
        ``centerness`` float (B, P) center-ness target (0 for background).
    """
    ranges = point_regress_ranges(level_sizes, cfg.regress_ranges, points.device)
    matched = ops.fcos_assign(points, strides, ranges, gt_boxes, gt_labels, cfg.center_radius,
                              range_bounds=cfg.range_bounds, area_order=cfg.area_order)  # (B, P)
    positive = matched >= 0
    safe = matched.clamp(min=0)
    B, P = matched.shape
    if gt_boxes.shape[1] == 0:
        boxes = gt_boxes.new_zeros((B, P, 4))
        labels = torch.full((B, P), -1, dtype=torch.int64, device=points.device)
    else:
        boxes = torch.gather(gt_boxes, 1, safe[..., None].expand(B, P, 4))  # (B, P, 4)
        labels = torch.where(positive, torch.gather(gt_labels, 1, safe), torch.full_like(safe, -1))
    ltrb = torch.cat([points[None] - boxes[..., :2], boxes[..., 2:] - points[None]], dim=-1)  # (B, P, 4)
    ltrb = torch.where(positive[..., None], ltrb, torch.zeros_like(ltrb))
    ctr = torch.where(positive, centerness_target(ltrb), torch.zeros_like(ltrb[..., 0]))
    return {"matched": matched, "labels": labels, "ltrb": ltrb, "centerness": ctr}
