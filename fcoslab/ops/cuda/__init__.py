"""CuPy RawKernel backends of :mod:`fcoslab.ops`: NMS, sigmoid focal loss, FCOS assignment, and the pair
matrices of ATSS and TAL assignment.

The ``.cu`` sources beside this file are compiled by NVRTC at first use (no build step), memoised per
device, and launched on torch's current stream. Tensors are passed zero-copy as device pointers
(see :func:`_cp` for why not ``cupy.from_dlpack``).
Call the public ops in :mod:`fcoslab.ops`, not these functions.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

SOURCES = {name: Path(__file__).with_name(f"{name}.cu") for name in ("nms", "focal_loss", "fcos_assign", "atss_assign",
                                                                       "tal_assign")}
COMPILE_OPTIONS = ("--std=c++14", "--fmad=false")
_TILE = 64


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> Optional[str]:
    """None when the kernels can run here, else why not (no cupy, no CUDA device, ...)."""
    try:
        import cupy  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        return f"cupy does not import ({type(e).__name__}: {e}); install the 'cuda' extra (cupy-cuda13x)"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "cupy sees no CUDA device"
    except Exception as e:
        return f"cupy cannot reach the CUDA driver ({e})"
    return None


def compile_source(name: str, arch: str = "compute_80") -> str:
    """Compile one kernel source with NVRTC to PTX (no GPU needed). Raises RuntimeError with NVRTC's log."""
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(SOURCES[name].read_text(), f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(prog, [f"-arch={arch}", *COMPILE_OPTIONS])
        ptx = nvrtc.getPTX(prog)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    except nvrtc.NVRTCError as e:
        raise RuntimeError(f"NVRTC failed on {SOURCES[name]}: {e}\n{nvrtc.getProgramLog(prog)}") from None
    finally:
        nvrtc.destroyProgram(prog)


@functools.lru_cache(maxsize=None)
def _module(name: str, device: int):
    import cupy

    with cupy.cuda.Device(device):
        return cupy.RawModule(code=SOURCES[name].read_text(), options=COMPILE_OPTIONS)


@functools.lru_cache(maxsize=None)
def _kernel(module: str, function: str, device: int):
    import cupy

    with cupy.cuda.Device(device):
        return _module(module, device).get_function(function)


_STREAMS: dict = {}


def _cupy_stream(device: int):
    """CuPy's view of torch's current stream on ``device`` (memoised: making one costs more than a launch)."""
    import cupy

    torch_stream = torch.cuda.current_stream(device)
    key = (device, torch_stream.cuda_stream)
    if key not in _STREAMS:
        with cupy.cuda.Device(device):
            if hasattr(cupy.cuda.Stream, "from_external"):  # CuPy 14: ExternalStream is deprecated
                _STREAMS[key] = cupy.cuda.Stream.from_external(torch_stream)
            else:
                _STREAMS[key] = cupy.cuda.ExternalStream(torch_stream.cuda_stream, device)
    return _STREAMS[key]


def _launch(tensor: Tensor, module: str, function: str, grid, block, args, shared_mem: int = 0) -> None:
    """Launch a kernel on torch's current stream of the tensor's device."""
    import cupy

    device = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
    kernel = _kernel(module, function, device)
    stream = _cupy_stream(device)
    with cupy.cuda.Device(device), stream:
        kernel(grid, block, args, shared_mem=shared_mem)


@functools.lru_cache(maxsize=None)
def _max_blocks(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count * 8


def _cp(t: Tensor):
    """A tensor as a kernel argument: its device pointer, zero-copy.

    The kernel runs on torch's current stream, so ordering with torch's own work is the stream's, and
    the tensor is referenced by the caller until the launch is queued (torch's caching allocator
    orders any reuse of its memory on that stream). ``cupy.from_dlpack`` would be equally zero-copy
    but costs 17-26 us per tensor on an H200 (benchmarks/RESULTS.md), more than a focal-loss kernel.
    """
    import numpy as np

    if not t.is_cuda or not t.is_contiguous():
        raise ValueError(f"kernel arguments must be contiguous CUDA tensors, got {t.device} contiguous={t.is_contiguous()}")
    return np.uint64(t.data_ptr())


# ---------------------------------------------------------------------------------------------- NMS
def nms(boxes: Tensor, scores: Tensor, idxs: Optional[Tensor], iou_threshold: float) -> Tensor:
    """Bitmask NMS (groups given by ``idxs``, or one group). Indices in decreasing score order."""
    import numpy as np

    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    by_score = torch.sort(scores, descending=True, stable=True).indices  # ranks: ties to lower index
    groups = idxs[by_score].long() if idxs is not None else torch.zeros(n, dtype=torch.int64, device=boxes.device)
    by_group = torch.sort(groups, stable=True).indices  # groups contiguous, score order kept inside
    order = by_score[by_group]
    sorted_boxes = boxes[order].float().contiguous()
    sorted_groups = groups[by_group].contiguous()
    # one past the last box of each box's group
    group_end = torch.searchsorted(sorted_groups, sorted_groups, right=True).int()
    tiles = (n + _TILE - 1) // _TILE
    mask = torch.empty((n, tiles), dtype=torch.int64, device=boxes.device)
    blocks = tiles * (tiles + 1) // 2
    _launch(boxes, "nms", "nms_mask", (blocks,), (_TILE,),
            (_cp(sorted_boxes), _cp(sorted_groups), _cp(group_end), np.int32(n), np.int32(tiles),
             np.float32(iou_threshold), _cp(mask)))
    keep = torch.empty(n, dtype=torch.uint8, device=boxes.device)
    use_shared = tiles * 8 <= 48 * 1024
    removed = torch.empty(1 if use_shared else tiles, dtype=torch.int64, device=boxes.device)
    _launch(boxes, "nms", "nms_scan", (1,), (256,),
            (_cp(mask), _cp(group_end), np.int32(n), np.int32(tiles), _cp(removed), np.int32(use_shared),
             _cp(keep)), shared_mem=tiles * 8 if use_shared else 0)
    # back to score order: rank of each sorted position is by_group; kept ranks in increasing order
    kept_rank = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    kept_rank[by_group] = keep.bool()
    return by_score[kept_rank]


# ------------------------------------------------------------------------------------ focal loss
_SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64"}


def _grid(total: int, device: torch.device) -> tuple[int]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return (max(1, min((total + 255) // 256, _max_blocks(index))),)


def _as_bits(t: Tensor) -> Tensor:
    """16-bit floats cross as int16 (DLPack exporters may not know bfloat16); 32/64-bit as they are."""
    return t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t


class _FocalLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, alpha: float, gamma: float, reduction: str) -> Tensor:
        import numpy as np

        logits, labels = logits.contiguous(), labels.contiguous().long()
        n, k = logits.shape
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        scalar = np.float64 if acc == torch.float64 else np.float32
        reduce = reduction != "none"
        out = torch.zeros((), dtype=acc, device=logits.device) if reduce else torch.empty((n, k), dtype=acc,
                                                                                           device=logits.device)
        if n * k:
            _launch(logits, "focal_loss", f"focal_forward_{_SUFFIX[logits.dtype]}", _grid(n * k, logits.device), (256,),
                    (_cp(_as_bits(logits)), _cp(labels), np.int32(n), np.int32(k), scalar(alpha), scalar(gamma),
                     np.int32(reduce), _cp(out.view(1) if reduce else out)))
        if reduction == "mean":
            out = out / max(n * k, 1) if n * k else torch.full((), float("nan"), dtype=acc, device=logits.device)
        ctx.save_for_backward(logits, labels)  # nothing of size (N, K) beyond the logits themselves
        ctx.alpha, ctx.gamma, ctx.reduction = alpha, gamma, reduction
        return out.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        import numpy as np

        logits, labels = ctx.saved_tensors
        n, k = logits.shape
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        scalar = np.float64 if acc == torch.float64 else np.float32
        grad_in = torch.empty_like(logits)
        if n * k:
            is_scalar = ctx.reduction != "none"
            scale = 1.0 / (n * k) if ctx.reduction == "mean" else 1.0
            g = grad_out.to(acc).contiguous()
            _launch(logits, "focal_loss", f"focal_backward_{_SUFFIX[logits.dtype]}", _grid(n * k, logits.device), (256,),
                    (_cp(_as_bits(logits)), _cp(labels), _cp(g.view(1) if is_scalar else g), np.int32(is_scalar),
                     scalar(scale), np.int32(n), np.int32(k), scalar(ctx.alpha), scalar(ctx.gamma),
                     _cp(_as_bits(grad_in))))
        return grad_in, None, None, None, None


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, alpha: float, gamma: float, reduction: str) -> Tensor:
    if logits.dtype not in _SUFFIX:
        raise TypeError(f"sigmoid_focal_loss: logits must be float16, bfloat16, float32 or float64, got {logits.dtype}")
    n, k = logits.shape
    rows = max(1, (2**31 - 1) // max(k, 1))  # the kernels index with 32-bit ints
    if n <= rows:
        return _FocalLoss.apply(logits, labels, alpha, gamma, reduction)
    parts = [_FocalLoss.apply(logits[i:i + rows], labels[i:i + rows], alpha, gamma, "sum" if reduction != "none" else "none")
             for i in range(0, n, rows)]
    if reduction == "none":
        return torch.cat(parts)
    total = torch.stack(parts).sum()
    return total / (n * k) if reduction == "mean" else total


# ---------------------------------------------------------------------------------- assignment
def fcos_assign(points: Tensor, strides: Tensor, regress_ranges: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                center_radius: Optional[float]) -> Tensor:
    import numpy as np

    B, M = gt_labels.shape
    P = points.shape[0]
    matched = torch.full((B, P), -1, dtype=torch.int64, device=points.device)
    if B == 0 or P == 0 or M == 0:
        return matched
    # named, so that converted copies stay alive until the launch is queued
    inputs = [points.float().contiguous(), strides.float().contiguous(), regress_ranges.float().contiguous(),
              gt_boxes.float().contiguous(), gt_labels.long().contiguous()]
    args = (*map(_cp, inputs), np.int32(P), np.int32(M), np.float32(-1.0 if center_radius is None else center_radius),
            _cp(matched))
    _launch(points, "fcos_assign", "fcos_assign", ((P + 255) // 256, B), (256,), args)
    return matched


def _pair_outputs(like: Tensor, B: int, M: int, P: int) -> tuple[Tensor, Tensor, Tensor]:
    """Two float32 and one bool (B, M, P) tensors, empty, on ``like``'s device."""
    floats = [torch.empty((B, M, P), dtype=torch.float32, device=like.device) for _ in range(2)]
    return floats[0], floats[1], torch.empty((B, M, P), dtype=torch.bool, device=like.device)


def atss_pairs(points: Tensor, strides: Tensor, gt_boxes: Tensor, anchor_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dist2, iou, inside), each (B, M, P), as :func:`fcoslab.ops.reference.atss_pairs` (B * M * P > 0)."""
    import numpy as np

    B, M = gt_boxes.shape[:2]
    P = points.shape[0]
    dist2, iou, inside = _pair_outputs(points, B, M, P)
    inputs = [points.float().contiguous(), strides.float().contiguous(), gt_boxes.float().contiguous()]
    total = B * M * P
    _launch(points, "atss_assign", "atss_pairs", _grid(total, points.device), (256,),
            (*map(_cp, inputs), np.int32(P), np.int64(total), np.float32(anchor_scale), _cp(dist2), _cp(iou),
             _cp(inside)))
    return dist2, iou, inside


def tal_pairs(points: Tensor, pred_boxes: Tensor, scores: Tensor, gt_boxes: Tensor,
              gt_labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(score, iou, inside), each (B, M, P), as :func:`fcoslab.ops.reference.tal_pairs` (B * M * P > 0)."""
    import numpy as np

    B, M = gt_labels.shape
    P, K = points.shape[0], scores.shape[-1]
    score, iou, inside = _pair_outputs(points, B, M, P)
    inputs = [points.float().contiguous(), pred_boxes.float().contiguous(), scores.float().contiguous(),
              gt_boxes.float().contiguous(), gt_labels.long().contiguous()]
    total = B * M * P
    _launch(points, "tal_assign", "tal_pairs", _grid(total, points.device), (256,),
            (*map(_cp, inputs), np.int32(P), np.int32(M), np.int32(K), np.int64(total), _cp(score), _cp(iou),
             _cp(inside)))
    return score, iou, inside
