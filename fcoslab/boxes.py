"""Box utilities. All boxes are float (..., 4) in (x1, y1, x2, y2) absolute pixels, width = x2 - x1."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Area of boxes (Tensor[N, 4]) in (x1, y1, x2, y2) format -> Tensor[N]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _pairwise_inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter, union


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of boxes a (Tensor[N, 4]) and b (Tensor[M, 4]) in xyxy format -> Tensor[N, M]."""
    inter, union = _pairwise_inter_union(a, b)
    return inter / union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise GIoU of boxes a (Tensor[N, 4]) and b (Tensor[M, 4]) in xyxy format -> Tensor[N, M]."""
    inter, union = _pairwise_inter_union(a, b)
    iou = inter / union
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull


def ltrb_iou(pred: Tensor, target: Tensor, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """IoU and GIoU of boxes given as distances from a shared point.

    Args:
        pred, target: float (N, 4) distances (left, top, right, bottom) in pixels from the same point.
    Returns:
        (iou, giou), each float (N,).
    """
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    pred_area = (pl + pr) * (pt + pb)
    target_area = (tl + tr) * (tt + tb)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)).clamp(min=0) * \
            (torch.minimum(pt, tt) + torch.minimum(pb, tb)).clamp(min=0)
    union = pred_area + target_area - inter
    iou = inter / union.clamp(min=eps)
    hull = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb))
    giou = iou - (hull - union) / hull.clamp(min=eps)
    return iou, giou


def ltrb_to_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """Boxes from distances: points float (P, 2) xy and ltrb float (..., P, 4) (left, top, right, bottom)
    pixels -> float (..., P, 4) xyxy pixels."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> COCO (x, y, w, h); used only at the COCO evaluation edge."""
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)


def xywh_to_xyxy(boxes) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes (any (N, 4) sequence, e.g. a results json's ``bbox`` values) -> float64
    (N, 4) ``(x1, y1, x2, y2)``; the inverse of :func:`xyxy_to_xywh`, in numpy for the metrics."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, 2:] += out[:, :2]
    return out
