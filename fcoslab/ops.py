"""Public ops with two backends: a pure-torch reference and a CuPy RawKernel.

``backend="auto"`` runs the CuPy kernel when the tensors live on CUDA and cupy imports, and the torch
reference (:mod:`fcoslab.ops_reference`) otherwise. ``backend="cupy"`` on CPU tensors is an error,
never a silent fallback. The environment variable ``FCOSLAB_BACKEND=torch`` turns the kernels off.
:func:`backends` says what is available and why not.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from torch import Tensor

from . import ops_reference as reference

BACKENDS = ("auto", "torch", "cupy")


def _kernels_turned_off() -> bool:
    return os.environ.get("FCOSLAB_BACKEND", "").lower() == "torch"


def backends() -> dict[str, str]:
    """``{"torch": "available", "cupy": "available" or the reason it is not}``."""
    from .cuda import unavailable_reason

    reason = unavailable_reason()
    if _kernels_turned_off():
        reason = "turned off by FCOSLAB_BACKEND=torch" + (f" ({reason})" if reason else "")
    return {"torch": "available", "cupy": reason or "available"}


def _use_cupy(backend: str, tensors: Sequence[Tensor], op: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    from .cuda import unavailable_reason

    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        return on_cuda and not _kernels_turned_off() and unavailable_reason() is None
    if not on_cuda:
        raise ValueError(f"{op}: backend='cupy' needs CUDA tensors, got tensors on "
                         f"{sorted({str(t.device) for t in tensors})}; use backend='auto' or 'torch'")
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"{op}: backend='cupy' is unavailable: {reason}")
    return True


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, backend: str = "auto") -> Tensor:
    """Non-maximum suppression, with torchvision.ops.nms's contract.

    Args:
        boxes (Tensor[N, 4]): float, in (x1, y1, x2, y2) pixels.
        scores (Tensor[N]): float.
        iou_threshold: boxes overlapping a kept, higher-scored box with IoU > threshold are removed.
    Returns:
        int64 Tensor[N_kept]: indices of kept boxes, in decreasing score order (ties: lower index first).
    """
    if _use_cupy(backend, (boxes, scores), "nms"):
        from .cuda import nms as cupy_nms

        return cupy_nms(boxes, scores, None, iou_threshold)
    return reference.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, backend: str = "auto") -> Tensor:
    """NMS within groups (class, or image x class): boxes of different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 4]): float, in (x1, y1, x2, y2) pixels.
        scores (Tensor[N]): float.
        idxs (Tensor[N]): int64 group of each box.
        iou_threshold: as in :func:`nms`.
    Returns:
        int64 Tensor[N_kept], indices in decreasing score order, as torchvision.ops.batched_nms.
    """
    if _use_cupy(backend, (boxes, scores, idxs), "batched_nms"):
        from .cuda import nms as cupy_nms

        return cupy_nms(boxes, scores, idxs, iou_threshold)
    return reference.nms(boxes, scores, iou_threshold, idxs=idxs)


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "sum", backend: str = "auto") -> Tensor:
    """Sigmoid focal loss with integer labels.

    Equal (values and gradients) to ``torchvision.ops.sigmoid_focal_loss(logits, one_hot(labels),
    alpha, gamma, reduction)`` without building the one-hot (N, K) tensor on the kernel path.

    Args:
        logits (Tensor[N, K]): float32, float16 or bfloat16.
        labels (Tensor[N]): int64, a class in [0, K) or -1 for background.
        alpha: weight of positives (1 - alpha for negatives); negative disables it.
        gamma: focusing exponent.
        reduction: "none" (Tensor[N, K]), "mean" or "sum" (scalars).
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"sigmoid_focal_loss: reduction must be none, mean or sum, got {reduction!r}")
    if _use_cupy(backend, (logits, labels), "sigmoid_focal_loss"):
        from .cuda import sigmoid_focal_loss as cupy_focal

        return cupy_focal(logits, labels, alpha, gamma, reduction)
    return reference.sigmoid_focal_loss(logits, labels, alpha, gamma, reduction)


def fcos_assign(points: Tensor, strides: Tensor, regress_ranges: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                center_radius: Optional[float], backend: str = "auto") -> Tensor:
    """Assign each point to at most one ground-truth box, by the FCOS rules.

    A point p matches box g when all hold: g is not padding (label >= 0) and has positive width and
    height; min(l, t, r, b) > 0 with l = px - x1, t = py - y1, r = x2 - px, b = y2 - py;
    lo <= max(l, t, r, b) <= hi for the point's regress range; with center sampling,
    |px - cx| < radius * stride and |py - cy| < radius * stride. Among matching boxes the smallest
    area wins; equal areas go to the lowest index.

    Args:
        points (Tensor[P, 2]): float xy pixels.
        strides (Tensor[P]): float stride of each point's level.
        regress_ranges (Tensor[P, 2]): float (lo, hi) of each point's level.
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels.
        gt_labels (Tensor[B, M]): int64, -1 marks padding.
        center_radius: float, or None for no center sampling.
    Returns:
        int64 Tensor[B, P]: index of the assigned box in ``gt_boxes[b]``, or -1.
    """
    tensors = (points, strides, regress_ranges, gt_boxes, gt_labels)
    if _use_cupy(backend, tensors, "fcos_assign"):
        from .cuda import fcos_assign as cupy_assign

        return cupy_assign(*tensors, center_radius)
    return reference.fcos_assign(*tensors, center_radius)


__all__ = ["nms", "batched_nms", "sigmoid_focal_loss", "fcos_assign", "backends"]
