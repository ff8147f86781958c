"""Readable, vectorised pure-torch references of the ops (no Python loop over boxes or points).

These are the CPU backend of :mod:`fcoslab.ops` and the ground truth the CuPy kernels are tested
against. Contracts are documented on the public functions in :mod:`fcoslab.ops`.
"""

from __future__ import annotations

from typing import Optional, Sequence

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


# ------------------------------------------------------------------- ATSS and TAL (pairs, then selection)
# Each assigner is two steps: a (B, M, P) matrix per (image, box, point) pair (``atss_pairs``, ``tal_pairs``:
# the CuPy kernels compute the same matrices bit for bit), then the selection from those matrices
# (``atss_select``, ``tal_select``), which is torch code on either backend.

def gt_valid(gt_boxes: Tensor, gt_labels: Tensor) -> Tensor:
    """Boxes that may be assigned: not padding (label >= 0), positive width and height. bool (B, M)."""
    return (gt_labels >= 0) & (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])


def _box_columns(gt_boxes: Tensor) -> tuple[Tensor, ...]:
    B, M = gt_boxes.shape[:2]
    return tuple(gt_boxes[..., i].float().view(B, M, 1) for i in range(4))  # 4 x (B, M, 1)


def _inside(px: Tensor, py: Tensor, x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> Tensor:
    """min(l, t, r, b) > 0 for points (1, 1, P) and boxes (B, M, 1): bool (B, M, P)."""
    return (px - x1 > 0) & (py - y1 > 0) & (x2 - px > 0) & (y2 - py > 0)


def atss_pairs(points: Tensor, strides: Tensor, gt_boxes: Tensor, anchor_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Squared distance from each point to each box centre, IoU of the point's anchor box (a square of side
    ``anchor_scale * stride`` centred on it) with the box, and whether the point is inside the box.

    Returns (dist2, iou, inside), each (B, M, P): float32, float32, bool.
    """
    P = points.shape[0]
    px, py = points[:, 0].float().view(1, 1, P), points[:, 1].float().view(1, 1, P)  # (1, 1, P)
    x1, y1, x2, y2 = _box_columns(gt_boxes)  # (B, M, 1)
    dx, dy = px - (x1 + x2) / 2, py - (y1 + y2) / 2
    dist2 = dx * dx + dy * dy  # (B, M, P)
    side = (anchor_scale * strides.float()).view(1, 1, P)
    half = side / 2
    iw = (torch.minimum(px + half, x2) - torch.maximum(px - half, x1)).clamp(min=0)
    ih = (torch.minimum(py + half, y2) - torch.maximum(py - half, y1)).clamp(min=0)
    inter = iw * ih
    iou = inter / (side * side + (x2 - x1) * (y2 - y1) - inter)  # the anchor's area is > 0
    return dist2, iou, _inside(px, py, x1, y1, x2, y2)


def _with_empty_slot(x: Tensor, value) -> Tensor:
    """(B, M, P) -> (B, M, P + 1): a last column that index P points at, for slots without a point."""
    return torch.cat([x, x.new_full((*x.shape[:2], 1), value)], dim=-1)


def resolve_claims(claims: Tensor, iou: Tensor) -> Tensor:
    """Each point to the claiming box of highest ``iou`` (ties: lowest box index), or -1.

    Args: claims bool (B, M, P), iou float (B, M, P). Returns int64 (B, P).
    """
    claimed_iou = torch.where(claims, iou, torch.full_like(iou, -1.0))
    best = claimed_iou.argmax(dim=1)  # (B, P): the first box among equal IoUs
    return torch.where(claims.any(dim=1), best, torch.full_like(best, -1))


def _claims_of(chosen: Tensor, index: Tensor, P: int) -> Tensor:
    """bool (B, M, P): True at the points ``index`` (B, M, C) names where ``chosen`` (B, M, C) is True
    (a box names a point at most once)."""
    B, M = chosen.shape[:2]
    claims = torch.zeros((B, M, P + 1), dtype=torch.bool, device=chosen.device)
    return claims.scatter_(2, torch.where(chosen, index, torch.full_like(index, P)), True)[..., :P]


def atss_select(dist2: Tensor, iou: Tensor, inside: Tensor, valid: Tensor, level_counts: Sequence[int], topk: int,
                eligible: Optional[Tensor] = None) -> Tensor:
    """ATSS from :func:`atss_pairs`' matrices: matched box index (B, P), int64, or -1.

    Per box and level, the ``topk`` eligible points nearest the box centre (ties: lower point index) are
    candidates; the threshold is mean + std (unbiased; 0 for one candidate) of the candidates' IoUs over
    all levels, capped at the best IoU of a candidate inside the box; positives are candidates inside the
    box with IoU >= threshold. A level's slots stay ``topk`` even when it has fewer eligible points (the
    rest are empty), so the statistics of a box do not depend on how far the batch is padded.

    Args:
        dist2, iou (Tensor[B, M, P]): float32; inside (Tensor[B, M, P]): bool.
        valid (Tensor[B, M]): bool, boxes that may be assigned (:func:`gt_valid`).
        level_counts: points of each level, in order (sum P).
        eligible (Tensor[B, P] or None): bool, points that may be candidates (inside the image); None: all.
    """
    B, M, P = iou.shape
    if M == 0 or P == 0:
        return torch.full((B, P), -1, dtype=torch.int64, device=iou.device)
    if eligible is not None:
        dist2 = torch.where(eligible[:, None, :], dist2, torch.full_like(dist2, float("inf")))
    slots, start = [], 0
    for n in level_counts:
        nearest = torch.sort(dist2[..., start:start + n], dim=-1, stable=True).indices[..., :topk] + start
        empty = nearest.new_full((B, M, topk - nearest.shape[-1]), P)
        slots.append(torch.cat([nearest, empty], dim=-1))  # (B, M, topk)
        start += n
    index = torch.cat(slots, dim=-1)  # (B, M, L * topk) point of each slot, P = empty
    filled = torch.gather(_with_empty_slot(dist2, float("inf")), 2, index).isfinite() & valid[..., None]
    cand_iou = torch.gather(_with_empty_slot(iou, 0.0), 2, index)  # (B, M, C)
    cand_inside = torch.gather(_with_empty_slot(inside, False), 2, index) & filled
    count = filled.sum(dim=-1)  # (B, M)
    weight = filled.to(cand_iou.dtype)
    mean = (cand_iou * weight).sum(dim=-1) / count.clamp(min=1)
    var = (((cand_iou - mean[..., None]) * weight) ** 2).sum(dim=-1) / (count - 1).clamp(min=1)
    best_inside = torch.where(cand_inside, cand_iou, torch.full_like(cand_iou, -1.0)).amax(dim=-1)  # (B, M)
    threshold = torch.minimum(mean + var.sqrt(), best_inside)
    positive = cand_inside & (cand_iou >= threshold[..., None])  # (B, M, C)
    return resolve_claims(_claims_of(positive, index, P), iou)


def tal_pairs(points: Tensor, pred_boxes: Tensor, scores: Tensor, gt_boxes: Tensor,
              gt_labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Predicted score of each box's class at each point, IoU of the point's predicted box with the box (0
    where the union is empty), and whether the point is inside the box.

    Returns (score, iou, inside), each (B, M, P): float32, float32, bool.
    """
    B, M = gt_labels.shape
    P = points.shape[0]
    cls = gt_labels.clamp(min=0)[:, None, :].expand(B, P, M)  # padding reads class 0, never used
    score = torch.gather(scores.float(), 2, cls).transpose(1, 2)  # (B, M, P)
    px, py = points[:, 0].float().view(1, 1, P), points[:, 1].float().view(1, 1, P)
    x1, y1, x2, y2 = _box_columns(gt_boxes)  # (B, M, 1)
    q1, r1, q2, r2 = (pred_boxes[..., i].float().view(B, 1, P) for i in range(4))  # (B, 1, P)
    iw = (torch.minimum(q2, x2) - torch.maximum(q1, x1)).clamp(min=0)
    ih = (torch.minimum(r2, y2) - torch.maximum(r1, y1)).clamp(min=0)
    inter = iw * ih  # (B, M, P)
    union = (q2 - q1) * (r2 - r1) + (x2 - x1) * (y2 - y1) - inter
    iou = torch.where(union > 0, inter / union, torch.zeros_like(union))
    return score.contiguous(), iou, _inside(px, py, x1, y1, x2, y2)


def tal_select(score: Tensor, iou: Tensor, inside: Tensor, valid: Tensor, topk: int, alpha: float,
               beta: float) -> Tensor:
    """TAL from :func:`tal_pairs`' matrices: matched box index (B, P), int64, or -1.

    Per box, the ``topk`` points inside it with the largest alignment ``score^alpha * iou^beta`` (ties: lower
    point index) claim it. The alignment is computed in float64 and rounded to float32: torch's CPU
    ``pow`` runs a vectorised and a scalar formula (at a tensor's tail) that differ in the last bit, which
    would break exact ties by position in the tensor (and so by batch size); in float64 the two agree once
    rounded.
    """
    B, M, P = iou.shape
    if M == 0 or P == 0:
        return torch.full((B, P), -1, dtype=torch.int64, device=iou.device)
    candidate = inside & valid[..., None]  # (B, M, P)
    align = (score.double().pow(alpha) * iou.double().pow(beta)).float()
    key = torch.where(candidate, align, torch.full_like(align, -1.0))
    top = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :topk]  # (B, M, k)
    chosen = torch.gather(candidate, 2, top)
    return resolve_claims(_claims_of(chosen, top, P), iou)
