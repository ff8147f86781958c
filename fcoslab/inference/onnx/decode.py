"""Decoding in operations that trace into a static ONNX graph: :func:`traceable_decode` gives the detections of
:func:`fcoslab.modeling.decode.decode` for one image, with NMS emitted as ONNX ``NonMaxSuppression``
(:class:`_NonMaxSuppression`'s ``symbolic``).

Decoding has shapes that depend on the data (the boxes above the threshold, the boxes NMS keeps). The
torch.export-based exporter (torch 2.14) stops on them (it traces the eager NMS and fails on a guard on a
data-dependent size, ``GuardOnDataDependentSymNode``), so fcoslab exports with the TorchScript-based one.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ... import ops
from ...config import DecodeConfig


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (one image, per class): boxes (1, C, 4) xyxy, scores (1, K', C) with the
    box's score in its class row and 0 elsewhere; a box competes in a row where its score is above 0.5.
    Returns int64 (S, 3) rows ``(0, class, box)``, class after class, decreasing score within a class."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        rows = []
        with warnings.catch_warnings():  # under export, :meth:`symbolic` replaces what is traced here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            for k in range(scores.shape[1]):
                live = torch.nonzero(scores[0, k] > 0.5)[:, 0]  # (C_k,)
                keep = live[ops.nms(boxes[0, live], scores[0, k, live], iou_threshold)]  # (S_k,)
                rows.append(torch.stack([torch.zeros_like(keep), torch.full_like(keep, k), keep], dim=1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, const(2 ** 62, torch.int64),
                    const(iou_threshold, torch.float32), const(0.5, torch.float32))


def _level_candidates(scores: Tensor, ltrb: Tensor, points: Tensor, start, n, pre: int, K: int):
    """The ``pre`` best (point, class) pairs of one level (its points ``start .. start + n``), as
    :func:`fcoslab.modeling.decode.decode` picks them; a level of fewer than ``pre`` pairs is padded with -inf scores
    so that every level gives ``pre`` candidates whatever the input size. Returns scores (pre,), boxes
    (pre, 4) xyxy, labels int64 (pre,)."""
    flat = scores[start:start + n].reshape(-1)  # (n*K,)
    flat = torch.cat([flat, flat.new_full((pre,), -math.inf)])  # (n*K + pre,)
    top, idx = flat.topk(pre)  # (pre,)
    point = (idx // K) % n + start  # (pre,) padding slots wrap round to points of the level
    dist = ltrb[point]  # (pre, 4)
    xy = points[point]  # (pre, 2)
    return top, torch.cat([xy - dist[:, :2], xy + dist[:, 2:]], dim=1), idx % K


def traceable_decode(outputs: dict, image_sizes: Tensor, orig_sizes: Tensor, cfg: DecodeConfig,
                     num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`fcoslab.modeling.decode.decode` of one image, in operations that trace into a static ONNX graph.

    The same per-level top-k, threshold, clipping, NMS and ``max_detections``; the differences are of form:
    every level yields ``pre_nms_topk`` candidates (padded with -inf, never above the threshold); candidates
    are ranked by score, equal scores by candidate index (onnxruntime's TopK breaks ties so, and fcoslab's NMS
    ranks so), and NMS gets ``C - rank`` as its score, since onnxruntime's NonMaxSuppression promises no order
    among equal scores; class-aware NMS uses NonMaxSuppression's class dimension (no coordinate offsets, so
    no precision lost). One difference can remain: scores exactly equal at a level's top-k cut, where torch's
    topk (in :func:`fcoslab.modeling.decode.decode`) promises no order.

    Args:
        outputs: the model's output dict for a batch of one image.
        image_sizes (Tensor[1, 2]): int64 (h, w) before padding; orig_sizes (Tensor[1, 2]): int64 (h, w) original.
    Returns:
        boxes float32 (N, 4) xyxy original pixels, scores float32 (N,), labels int64 (N,), decreasing score.
    """
    K, pre = num_classes, cfg.pre_nms_topk
    scores = torch.sigmoid(outputs["cls_logits"][0].float())  # (P, K)
    if outputs["centerness"] is not None:
        scores = torch.sqrt(scores * torch.sigmoid(outputs["centerness"][0].float())[:, None])
    ltrb, points = outputs["bbox_ltrb"][0].float(), outputs["points"]
    cands, start = [], 0
    for h, w in outputs["level_sizes"]:
        cands.append(_level_candidates(scores, ltrb, points, start, h * w, pre, K))
        start = start + h * w
    cand = torch.cat([c[0] for c in cands])  # (C,) C = L * pre
    boxes = torch.cat([c[1] for c in cands])  # (C, 4)
    labels = torch.cat([c[2] for c in cands])  # (C,)
    hw = image_sizes[0].to(torch.float32)  # (2,) h, w
    limit = torch.stack([hw[1], hw[0], hw[1], hw[0]])  # (4,) as w, h, w, h
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    valid = cand > cfg.score_thresh
    C = cand.shape[0]
    order = torch.where(valid, cand, torch.full_like(cand, -math.inf)).topk(C).indices  # (C,) rank -> candidate
    rank_score = torch.arange(C, 0, -1, dtype=torch.float32)  # (C,) distinct, decreasing
    valid_r, labels_r = valid[order], labels[order]
    if cfg.class_agnostic_nms:
        member = valid_r[None]  # (1, C)
    else:
        member = valid_r[None] & (labels_r[None] == torch.arange(K)[:, None])  # (K, C)
    nms_scores = torch.where(member, rank_score[None], torch.zeros_like(rank_score)[None])  # (K', C)
    selected = _NonMaxSuppression.apply(boxes[order][None], nms_scores[None], float(cfg.nms_thresh))  # (S, 3)
    kept = torch.zeros(C).index_fill(0, selected[:, 2], 1.0) > 0  # (C,) by rank
    final = order[torch.nonzero(kept)[:, 0][: cfg.max_detections]]  # (N,) in rank order
    scale = orig_sizes[0].to(torch.float32) / hw  # (2,) as sy, sx
    return boxes[final] * torch.stack([scale[1], scale[0], scale[1], scale[0]]), cand[final], labels[final]
