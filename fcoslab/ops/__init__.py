"""Public ops with three backends: a pure-torch reference, torchvision's compiled NMS, and CuPy RawKernels.

``backend="auto"`` runs the CuPy kernel when the tensors live on CUDA and cupy imports. Otherwise, on
CPU tensors, :func:`nms` and :func:`batched_nms` run torchvision's compiled NMS (wrapped to return
exactly the reference's answer, see :func:`_torchvision_nms`), and everything else runs the torch
reference (:mod:`fcoslab.ops.reference`). ``backend="torch"`` always runs the reference (the ground truth the
other backends are tested against); ``backend="torchvision"`` exists for :func:`nms` and
:func:`batched_nms` only. ``backend="cupy"`` on CPU tensors is an error, never a silent fallback. The
environment variable ``FCOSLAB_BACKEND=torch`` turns the CuPy kernels off (torchvision's NMS stays on).
:func:`backends` says what is available and why not.

The package owns the ops, their torch reference (:mod:`.reference`) and the CuPy kernels (:mod:`.cuda`);
it imports only :mod:`fcoslab.boxes` and :mod:`fcoslab.errors` (modeling and inference import it).
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Sequence

import torch
from torch import Tensor

from . import reference

BACKENDS = ("auto", "torch", "torchvision", "cupy")
_NO_TORCHVISION = tuple(b for b in BACKENDS if b != "torchvision")  # ops torchvision has no counterpart of


def _kernels_turned_off() -> bool:
    return os.environ.get("FCOSLAB_BACKEND", "").lower() == "torch"


@functools.lru_cache(maxsize=None)
def _torchvision_reason(device_type: str) -> Optional[str]:
    """None when ``torchvision.ops.nms`` has a compiled kernel for ``device_type`` ("cpu", "cuda"), else why not."""
    try:
        import torchvision  # noqa: F401  (registers the torchvision:: operators)
    except Exception as e:  # ImportError, or a torch/torchvision version mismatch raising at import
        return f"torchvision does not import ({type(e).__name__}: {e})"
    try:
        has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", device_type.upper())
    except Exception as e:  # operator not registered (torchvision built without its C++ ops), unknown device
        return f"torchvision has no compiled nms ({e})"
    return None if has_kernel else f"torchvision has no {device_type} nms kernel"


def backends() -> dict[str, str]:
    """``{"torch": "available", "torchvision": ..., "cupy": ...}``, each "available" or the reason it is not.

    "torchvision" (compiled NMS for :func:`nms` and :func:`batched_nms`) is reported for CPU tensors.
    """
    from .cuda import unavailable_reason

    reason = unavailable_reason()
    if _kernels_turned_off():
        reason = "turned off by FCOSLAB_BACKEND=torch" + (f" ({reason})" if reason else "")
    return {"torch": "available", "torchvision": _torchvision_reason("cpu") or "available",
            "cupy": reason or "available"}


def _choose(backend: str, tensors: Sequence[Tensor], op: str, allowed: Sequence[str] = _NO_TORCHVISION) -> str:
    """The backend that runs ``op``: "torch", "torchvision" or "cupy" (``allowed`` lists the op's choices)."""
    if backend not in allowed:
        raise ValueError(f"{op}: backend must be one of {tuple(allowed)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    from .cuda import unavailable_reason

    device_types = {t.device.type for t in tensors}
    on_cuda = device_types == {"cuda"}
    if backend == "auto":
        if on_cuda and not _kernels_turned_off() and unavailable_reason() is None:
            return "cupy"
        if "torchvision" in allowed and device_types == {"cpu"} and _torchvision_reason("cpu") is None:
            return "torchvision"
        return "torch"
    if backend == "torchvision":
        if len(device_types) != 1:
            raise ValueError(f"{op}: tensors on several devices: {sorted({str(t.device) for t in tensors})}")
        reason = _torchvision_reason(device_types.pop())
        if reason:
            raise RuntimeError(f"{op}: backend='torchvision' is unavailable: {reason}")
        return "torchvision"
    if not on_cuda:
        raise ValueError(f"{op}: backend='cupy' needs CUDA tensors, got tensors on "
                         f"{sorted({str(t.device) for t in tensors})}; use backend='auto' or 'torch'")
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"{op}: backend='cupy' is unavailable: {reason}")
    return "cupy"


def _torchvision_nms(boxes: Tensor, scores: Tensor, idxs: Optional[Tensor], iou_threshold: float) -> Tensor:
    """torchvision's compiled NMS, run so that it returns exactly what :func:`reference.nms` returns.

    - Ties: boxes are ranked first (stable sort by decreasing score, as the reference), and torchvision
      gets them in rank order with strictly decreasing scores ``m, m - 1, ..., 1``, so its own sort
      (which promises no order among equal scores) cannot reorder them.
    - Groups: ranks are sorted by group (stable, so each group stays in rank order) and torchvision runs
      once per group of two boxes or more (a lone box is always kept). No coordinate offsets, so
      no precision is lost however many groups and however large the images (torchvision.ops.batched_nms
      offsets coordinates in float32 on small inputs), and the work is sum(m_g^2) rather than N^2 (10k
      boxes in 80 groups: 8 ms, against 76 ms for one call on float64-offset boxes, one CPU thread).
    - Precision: coordinates are cast to float32 as the reference does; on CPU torchvision computes each
      IoU with the reference's float32 operations in the same order, and the threshold is rounded to
      float32 as the reference compares, so the result is bit-for-bit the reference's. (A group of more
      than 2^24 boxes, beyond float32's exact integers, runs in float64.)

    Args:
        boxes (Tensor[N, 4]): float (any float dtype), (x1, y1, x2, y2).
        scores (Tensor[N]): float.
        idxs (Tensor[N] or None): int group of each box; None is one group.
        iou_threshold: float.
    Returns:
        int64 Tensor[N_kept]: indices in decreasing score order, ties lower index first.
    """
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,) rank -> box index
    if idxs is None:
        ranks, sizes = None, [n]
    else:
        group = idxs[order]  # (N,) group of each rank
        ranks = torch.sort(group, stable=True).indices  # (N,) ranks, group after group, increasing within
        sizes = torch.unique_consecutive(group[ranks], return_counts=True)[1].tolist()
    dtype = torch.float32 if max(sizes) <= 1 << 24 else torch.float64
    grouped = boxes[order if ranks is None else order[ranks]].to(dtype)  # (N, 4)
    decreasing = torch.arange(max(sizes), 0, -1, dtype=dtype, device=boxes.device)  # distinct rank scores
    threshold = float(torch.tensor(iou_threshold, dtype=dtype))  # the reference compares in float32
    kept, lone, start = [], [], 0  # kept positions in ``grouped``
    for size, part in zip(sizes, grouped.split(sizes)):
        if size == 1:
            lone.append(start)
        else:
            kept.append(torch.ops.torchvision.nms(part, decreasing[:size], threshold).add_(start))
        start += size
    kept.append(torch.tensor(lone, dtype=torch.int64, device=boxes.device))
    kept_ranks = torch.cat(kept) if ranks is None else torch.sort(ranks[torch.cat(kept)]).values
    return order[kept_ranks]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, backend: str = "auto") -> Tensor:
    """Non-maximum suppression, with torchvision.ops.nms's contract.

    Args:
        boxes (Tensor[N, 4]): float (float32, float64, float16 or bfloat16; IoUs are computed in float32),
            in (x1, y1, x2, y2) pixels.
        scores (Tensor[N]): float.
        iou_threshold: boxes overlapping a kept, higher-scored box with IoU > threshold are removed.
        backend: "auto" (CuPy kernel on CUDA, else torchvision's compiled NMS), "torch", "torchvision", "cupy".
    Returns:
        int64 Tensor[N_kept]: indices of kept boxes, in decreasing score order (ties: lower index first).
    """
    chosen = _choose(backend, (boxes, scores), "nms", BACKENDS)
    if chosen == "cupy":
        from .cuda import nms as cupy_nms

        return cupy_nms(boxes, scores, None, iou_threshold)
    if chosen == "torchvision":
        return _torchvision_nms(boxes, scores, None, iou_threshold)
    return reference.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, backend: str = "auto") -> Tensor:
    """NMS within groups (class, or image x class): boxes of different ``idxs`` never suppress each other.

    Args:
        boxes (Tensor[N, 4]): float, in (x1, y1, x2, y2) pixels.
        scores (Tensor[N]): float.
        idxs (Tensor[N]): int64 group of each box (any values).
        iou_threshold: as in :func:`nms`.
        backend: as in :func:`nms`.
    Returns:
        int64 Tensor[N_kept], indices in decreasing score order (ties: lower index first), as
        torchvision.ops.batched_nms but without its float32 coordinate offsets (see :func:`_torchvision_nms`).
    """
    chosen = _choose(backend, (boxes, scores, idxs), "batched_nms", BACKENDS)
    if chosen == "cupy":
        from .cuda import nms as cupy_nms

        return cupy_nms(boxes, scores, idxs, iou_threshold)
    if chosen == "torchvision":
        return _torchvision_nms(boxes, scores, idxs, iou_threshold)
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
    if _choose(backend, (logits, labels), "sigmoid_focal_loss") == "cupy":
        from .cuda import sigmoid_focal_loss as cupy_focal

        return cupy_focal(logits, labels, alpha, gamma, reduction)
    return reference.sigmoid_focal_loss(logits, labels, alpha, gamma, reduction)


RANGE_BOUNDS, AREA_ORDERS = ("closed", "open"), ("exact", "float32_1e8")  # fcos_assign's rules (see its docstring)


def fcos_assign(points: Tensor, strides: Tensor, regress_ranges: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                center_radius: Optional[float], backend: str = "auto", *, range_bounds: str = "closed",
                area_order: str = "exact") -> Tensor:
    """Assign each point to at most one ground-truth box, by the FCOS rules.

    A point p matches box g when all hold: g is not padding (label >= 0) and has positive width and
    height; min(l, t, r, b) > 0 with l = px - x1, t = py - y1, r = x2 - px, b = y2 - py;
    lo <= max(l, t, r, b) <= hi for the point's regress range (``range_bounds="open"``: lo < max < hi);
    with center sampling, |px - cx| < radius * stride and |py - cy| < radius * stride. Among matching
    boxes the smallest area wins; equal areas go to the lowest index. ``area_order="float32_1e8"`` ranks
    them as torchvision's FCOS does instead: the largest float32 ``1e8 - area`` wins (lowest index among
    equal values), so areas that round alike there tie (float32 steps of 8 px^2 below 3.3e7 px^2) and a
    box of area 1e8 px^2 or more never matches.

    The CuPy kernel implements the defaults (``closed``, ``exact``); any other rule runs the torch
    reference under ``backend="auto"``, and is an error under ``backend="cupy"``.

    Args:
        points (Tensor[P, 2]): float xy pixels.
        strides (Tensor[P]): float stride of each point's level.
        regress_ranges (Tensor[P, 2]): float (lo, hi) of each point's level.
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels.
        gt_labels (Tensor[B, M]): int64, -1 marks padding.
        center_radius: float, or None for no center sampling.
        range_bounds: "closed" or "open", as above.
        area_order: "exact" or "float32_1e8", as above.
    Returns:
        int64 Tensor[B, P]: index of the assigned box in ``gt_boxes[b]``, or -1.
    """
    if range_bounds not in RANGE_BOUNDS or area_order not in AREA_ORDERS:
        raise ValueError(f"fcos_assign: range_bounds must be one of {RANGE_BOUNDS} and area_order one of "
                         f"{AREA_ORDERS}, got {range_bounds!r}, {area_order!r}")
    tensors = (points, strides, regress_ranges, gt_boxes, gt_labels)
    chosen = _choose(backend, tensors, "fcos_assign")
    if chosen == "cupy" and (range_bounds, area_order) != (RANGE_BOUNDS[0], AREA_ORDERS[0]):
        if backend == "cupy":
            raise ValueError(f"fcos_assign: the CuPy kernel implements range_bounds='closed' and area_order='exact' "
                             f"only, got {range_bounds!r}, {area_order!r}; use backend='auto' or 'torch'")
        chosen = "torch"
    if chosen == "cupy":
        from .cuda import fcos_assign as cupy_assign

        return cupy_assign(*tensors, center_radius)
    return reference.fcos_assign(*tensors, center_radius, range_bounds, area_order)


def _inside_images(points: Tensor, image_sizes: Optional[Tensor], batch: int) -> Optional[Tensor]:
    """bool (B, P): points inside each image's unpadded (h, w) (px < w and py < h); None without sizes."""
    if image_sizes is None:
        return None
    if image_sizes.shape != (batch, 2):
        raise ValueError(f"image_sizes must be (B, 2) = ({batch}, 2), got {tuple(image_sizes.shape)}")
    hw = image_sizes.to(points.device, torch.float32)
    return (points[None, :, 0] < hw[:, 1:2]) & (points[None, :, 1] < hw[:, 0:1])


def atss_assign(points: Tensor, strides: Tensor, level_sizes: Sequence[tuple[int, int]], gt_boxes: Tensor,
                gt_labels: Tensor, topk: int = 9, anchor_scale: float = 8.0, image_sizes: Optional[Tensor] = None,
                backend: str = "auto") -> Tensor:
    """Adaptive training sample selection (ATSS, Zhang et al., CVPR 2020) for points.

    Each point carries an anchor box, a square of side ``anchor_scale * stride`` centred on it. For a box g
    (not padding, positive width and height): on every level, the ``topk`` points nearest g's centre (L2;
    ties: lower point index) are candidates; the threshold is the mean plus the standard deviation
    (unbiased, as the authors' code; 0 for one candidate) of the candidates' anchor IoUs with g over all
    levels; positives are the candidates inside g (min(l, t, r, b) > 0) whose IoU >= threshold. fcoslab
    caps the threshold at the best IoU of a candidate inside g, so that every box with a candidate inside it
    keeps at least one positive (the paper's threshold can exceed every IoU, with ties or few candidates).
    A point claimed by several boxes goes to the one of highest anchor IoU (ties: the lowest index).
    Regress ranges and center sampling do not apply.

    With ``image_sizes``, only points inside their image (px < w, py < h) are candidates, so an image gets
    the same assignment alone and padded in a batch with larger images (padding points are never inside a
    box anyway, but they could be among the nearest).

    The CuPy kernel computes the (B, M, P) distance, IoU and inside matrices (bit for bit the reference's:
    the kernel is compiled with ``--fmad=false``); the selection from them is torch code on either backend.

    Args:
        points (Tensor[P, 2]): float xy pixels; strides (Tensor[P]): float stride of each point's level.
        level_sizes: (h, w) of each level, in order (the points are level after level).
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels; gt_labels (Tensor[B, M]): int64, -1 marks padding.
        topk: candidates per box and level; anchor_scale: the anchor side in strides.
        image_sizes (Tensor[B, 2] or None): int (h, w) of each image before padding.
    Returns:
        int64 Tensor[B, P]: index of the assigned box in ``gt_boxes[b]``, or -1.
    """
    chosen = _choose(backend, (points, strides, gt_boxes, gt_labels), "atss_assign")
    if chosen == "cupy" and gt_boxes.shape[0] * gt_boxes.shape[1] * points.shape[0]:
        from .cuda import atss_pairs

        pairs = atss_pairs(points, strides, gt_boxes, anchor_scale)
    else:
        pairs = reference.atss_pairs(points, strides, gt_boxes, anchor_scale)
    return reference.atss_select(*pairs, reference.gt_valid(gt_boxes, gt_labels), [h * w for h, w in level_sizes],
                                 topk, _inside_images(points, image_sizes, gt_boxes.shape[0]))


def tal_assign(points: Tensor, pred_boxes: Tensor, scores: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
               topk: int = 13, alpha: float = 1.0, beta: float = 6.0, backend: str = "auto") -> Tensor:
    """Task-aligned assignment (TAL, the assigner of TOOD, Feng et al., ICCV 2021) from predictions.

    For a box g (not padding, positive width and height) and a point p inside it (min(l, t, r, b) > 0), the
    alignment is ``t = s^alpha * u^beta`` with s the predicted score of g's class at p and u the IoU of p's
    predicted box with g. The ``topk`` points of largest t inside g (ties: lower point index) claim g, so a
    box gets min(topk, points inside it) claims; a point claimed by several boxes goes to the one of
    highest u (ties: the lowest index). The alignment is computed in float64 and rounded to float32, so
    equal inputs give equal alignments wherever they lie in the tensors (see :func:`reference.tal_select`).

    The CuPy kernel computes the (B, M, P) score, IoU and inside matrices (bit for bit the reference's);
    the alignment and the selection are torch code on either backend.

    Args:
        points (Tensor[P, 2]): float xy pixels.
        pred_boxes (Tensor[B, P, 4]): float xyxy pixels, the decoded predictions (pass them detached).
        scores (Tensor[B, P, K]): float probabilities (sigmoid of the class logits; detached).
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels; gt_labels (Tensor[B, M]): int64 class in [0, K), -1 = padding.
        topk, alpha, beta: as above.
    Returns:
        int64 Tensor[B, P]: index of the assigned box in ``gt_boxes[b]``, or -1.
    """
    chosen = _choose(backend, (points, pred_boxes, scores, gt_boxes, gt_labels), "tal_assign")
    if chosen == "cupy" and gt_boxes.shape[0] * gt_boxes.shape[1] * points.shape[0]:
        from .cuda import tal_pairs

        pairs = tal_pairs(points, pred_boxes, scores, gt_boxes, gt_labels)
    else:
        pairs = reference.tal_pairs(points, pred_boxes, scores, gt_boxes, gt_labels)
    return reference.tal_select(*pairs, reference.gt_valid(gt_boxes, gt_labels), topk, alpha, beta)


__all__ = ["nms", "batched_nms", "sigmoid_focal_loss", "fcos_assign", "atss_assign", "tal_assign", "backends"]
