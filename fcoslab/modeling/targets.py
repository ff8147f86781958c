"""Training targets: which ground-truth box each point regresses, and what it regresses.

The assignment is FCOS's (:func:`fcos_targets`), ATSS's (:func:`atss_targets`) or TAL's (:func:`tal_targets`),
chosen by ``assign.method`` in :func:`assign_targets`; all three return the same dict, so the loss and the
decoding do not depend on the method."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import ops
from ..boxes import ltrb_to_boxes
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
    return targets_of_matched(points, matched, gt_boxes, gt_labels)


def targets_of_matched(points: Tensor, matched: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> dict[str, Tensor]:
    """:func:`fcos_targets`' dict from any assignment ``matched`` int64 (B, P) (box index or -1), so that
    every assignment method trains the same loss: the points (P, 2), boxes (B, M, 4) and labels (B, M) as there."""
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


def atss_targets(points: Tensor, strides: Tensor, level_sizes: list[tuple[int, int]], gt_boxes: Tensor,
                 gt_labels: Tensor, cfg: AssignConfig, image_sizes: Optional[Tensor] = None) -> dict[str, Tensor]:
    """:func:`fcos_targets`' dict under ATSS (:func:`fcoslab.ops.atss_assign`, ``assign.atss_topk`` and
    ``assign.atss_anchor_scale``); ``image_sizes`` int (B, 2) (h, w) before padding keeps padding points
    out of the candidates. Arguments as :func:`fcos_targets`'."""
    matched = ops.atss_assign(points, strides, level_sizes, gt_boxes, gt_labels, cfg.atss_topk,
                              cfg.atss_anchor_scale, image_sizes=image_sizes)  # (B, P)
    return targets_of_matched(points, matched, gt_boxes, gt_labels)


def tal_targets(outputs: dict, gt_boxes: Tensor, gt_labels: Tensor, cfg: AssignConfig) -> dict[str, Tensor]:
    """:func:`fcos_targets`' dict under task-aligned assignment (:func:`fcoslab.ops.tal_assign`): the points
    inside a box whose predictions (the class's sigmoid score and the decoded box, both detached) align best
    with it, ``assign.tal_topk`` of them, alignment ``score^tal_alpha * IoU^tal_beta``.

    The labels stay hard (1 for the box's class): FCOS's focal loss, box loss and center-ness loss train on
    these targets unchanged, where TOOD trains the classifier on the normalised alignment instead.
    TAL rather than YOLOX's SimOTA: SimOTA needs a dynamic k and a cost-matrix solve per image, while TAL is
    one per-point-per-box metric and a fixed top-k, which maps onto one kernel for the whole batch.

    Args:
        outputs: the model's output dict (``points``, ``cls_logits`` (B, P, K), ``bbox_ltrb`` (B, P, 4)).
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels; gt_labels (Tensor[B, M]): int64, -1 = padding.
    """
    points = outputs["points"]
    scores = torch.sigmoid(outputs["cls_logits"].detach().float())  # (B, P, K)
    pred_boxes = ltrb_to_boxes(points, outputs["bbox_ltrb"].detach().float())  # (B, P, 4)
    matched = ops.tal_assign(points, pred_boxes, scores, gt_boxes, gt_labels, cfg.tal_topk, cfg.tal_alpha,
                             cfg.tal_beta)  # (B, P)
    return targets_of_matched(points, matched, gt_boxes, gt_labels)


def assign_targets(outputs: dict, gt_boxes: Tensor, gt_labels: Tensor, cfg: AssignConfig,
                   image_sizes: Optional[Tensor] = None) -> dict[str, Tensor]:
    """The targets of a batch by ``assign.method``: :func:`fcos_targets`, :func:`atss_targets` or
    :func:`tal_targets`, each returning the same dict.

    Args:
        outputs: the model's output dict (``points``, ``strides``, ``level_sizes``; TAL also reads
            ``cls_logits`` and ``bbox_ltrb``).
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels; gt_labels (Tensor[B, M]): int64, -1 = padding.
        image_sizes (Tensor[B, 2] or None): int (h, w) of each image before padding (ATSS reads it).
    """
    points, strides, sizes = outputs["points"], outputs["strides"], outputs["level_sizes"]
    if cfg.method == "fcos":
        return fcos_targets(points, strides, sizes, gt_boxes, gt_labels, cfg)
    if cfg.method == "atss":
        return atss_targets(points, strides, sizes, gt_boxes, gt_labels, cfg, image_sizes)
    if cfg.method == "tal":
        return tal_targets(outputs, gt_boxes, gt_labels, cfg)
    raise ValueError(f"assign.method must be fcos, atss or tal, got {cfg.method!r}")
