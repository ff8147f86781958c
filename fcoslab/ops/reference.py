"""Readable, vectorised pure-torch references of the four ops (no Python loop over boxes or points).

These are the CPU backend of :mod:`fcoslab.ops` and the ground truth the CuPy kernels are tested
against. Contracts are documented on the public functions in :mod:`fcoslab.ops`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..boxes import box_iou


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, idxs: Optional[Tensor] = None) -> Tensor:
    """Greedy NMS as a fixed point: box i is kept iff no kept, higher-ranked box overlaps it.

    Boxes are ranked by decreasing score (ties: lower index first). ``suppresses[j, i]`` says that
    box j (ranked above i) overlaps i by more than the threshold (and, with ``idxs``, has i's group).
    Starting from "keep all", ``keep = not any(keep[j] and suppresses[j, i])`` is iterated; after
    step t the first t ranks are final, and the greedy answer is its unique fixed point, reached
    in as many steps as the longest chain of suppressions (a handful in practice).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    suppresses = _suppression_matrix(boxes[order].float(), None if idxs is None else idxs[order], iou_threshold)
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    while True:
        new_keep = ~suppresses[keep].any(dim=0)
        if torch.equal(new_keep, keep):
            return order[keep]
        keep = new_keep


def _suppression_matrix(ranked: Tensor, group: Optional[Tensor], iou_threshold: float,
                        max_block_elements: int = 1 << 22) -> Tensor:
    """``(N, N)`` bool, True where ranked box j < i overlaps box i by more than the threshold (same group).

    Built in blocks of rows, each against the boxes ranked after its first row only, so that the float
    intermediates stay under ``max_block_elements`` elements each: the bool result (N^2 bytes) is the
    only thing of size N x N (20k boxes: 0.4 GB, where a whole float IoU matrix and its corner tensors
    took over 13 GB).
    """
    n = len(ranked)
    out = torch.zeros(n, n, dtype=torch.bool, device=ranked.device)
    rows_per_block = max(1, max_block_elements // n)
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        block = box_iou(ranked[start:stop], ranked[start:]) > iou_threshold  # (rows, N - start)
        if group is not None:
            block &= group[start:stop, None] == group[None, start:]
        out[start:stop, start:] = block
    return out.triu_(diagonal=1)


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "sum") -> Tensor:
    """Focal loss (Lin et al. 2017) on sigmoid logits with integer labels (-1 = background)."""
    num_classes = logits.shape[-1]
    targets = (labels[:, None] == torch.arange(num_classes, device=logits.device)).to(logits.dtype)  # (N, K)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def fcos_assign(points: Tensor, strides: Tensor, regress_ranges: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                center_radius: Optional[float], range_bounds: str = "closed", area_order: str = "exact") -> Tensor:
    """Match every point to the smallest ground-truth box that may claim it, as (B, P, M) masks."""
    B, M = gt_labels.shape
    P = points.shape[0]
    if M == 0 or P == 0:
        return torch.full((B, P), -1, dtype=torch.int64, device=points.device)
    px, py = points[:, 0].view(1, P, 1), points[:, 1].view(1, P, 1)  # (1, P, 1)
    x1, y1, x2, y2 = (gt_boxes[..., i].view(B, 1, M) for i in range(4))  # (B, 1, M)
    ltrb = torch.stack([px - x1, py - y1, x2 - px, y2 - py], dim=-1)  # (B, P, M, 4)
    valid = (gt_labels >= 0) & (x2 > x1).view(B, M) & (y2 > y1).view(B, M)  # (B, M)
    match = valid.view(B, 1, M) & (ltrb.amin(dim=-1) > 0)  # (B, P, M)
    max_side = ltrb.amax(dim=-1)
    lo, hi = regress_ranges[:, 0].view(1, P, 1), regress_ranges[:, 1].view(1, P, 1)
    if range_bounds == "open":
        match &= (max_side > lo) & (max_side < hi)
    else:
        match &= (max_side >= lo) & (max_side <= hi)
    if center_radius is not None:
        reach = (center_radius * strides).view(1, P, 1)
        match &= ((px - (x1 + x2) / 2).abs() < reach) & ((py - (y1 + y2) / 2).abs() < reach)
    area = ((x2 - x1) * (y2 - y1)).expand(B, P, M)
    if area_order == "float32_1e8":  # the largest float32(1e8 - area); unmatched boxes score 0
        score = torch.where(match, 1e8 - area.float(), torch.zeros_like(area, dtype=torch.float32))
        best, largest = score.max(dim=-1)  # (B, P): first index among equal scores
        return torch.where(best < 1e-5, torch.full_like(largest, -1), largest)
    area = torch.where(match, area, torch.full_like(area, float("inf")))
    smallest = area.argmin(dim=-1)  # (B, P): first index among equal areas
    return torch.where(match.any(dim=-1), smallest, torch.full_like(smallest, -1))
