"""What each lever a GPU engineer would pull does to fcoslab's training step, each measured on its own.

    python benchmarks/gpu_levers.py --work DIR [--device auto] [--preset imprv_coco_1x] [--precision bf16]
        [--size 800 1066] [--batch 8] [--iters 10] [--levers baseline channels_last ...] [--time-limit S]

Every lever builds a fresh :class:`gpu_efficiency.FcoslabStep` (same seed, batch and boxes) and is timed
like the baseline (mean of ``--iters`` steps after 2 warm-ups); its first step is timed apart (it holds a
compilation or a graph capture). A lever that raises is recorded as failed with its error line and the
next one runs; one that cannot run here (CUDA graphs on a CPU, CuPy off where CuPy is not in use) is
recorded as skipped. ``host syncs/step`` counts the synchronizing CUDA calls of one step
(``torch.cuda.set_sync_debug_mode``). Levers (``--levers``, default all, in this order; the compiled ones
last because they cost the most time):

- ``baseline``: the trainer's step (make_optimizer's foreach SGD, NCHW, CuPy kernels where available).
- ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark = True``.
- ``channels_last``: ``model.channels_last=true`` (weights and input channels-last).
- ``optimizer_loop`` / ``optimizer_fused``: the same optimizer with ``foreach=False`` / ``fused=True``.
- ``trainer_syncs``: the two host syncs of ``Trainer.train_step`` added (what dropping them would save).
- ``cupy_off``: ``FCOSLAB_BACKEND=torch`` (assignment and focal loss by the torch reference).
- ``cuda_graph``: the network's forward and backward captured by ``torch.cuda.make_graphed_callables``
  (loss and optimizer eager: the loss's boolean indexing has data-dependent shapes).
- ``compile_model``: ``torch.compile(model)``.
- ``compile_loss_torch``: ``torch.compile`` of the criterion with the torch-reference ops (Dynamo cannot
  trace into the CuPy kernels); ``compile_loss``: the same with the kernels on.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
import warnings
from dataclasses import replace
from typing import Optional

import torch

import common
from gpu_efficiency import FcoslabStep, StepOptions, measure
from gpu_report import StageRecord

from fcoslab import ops
from fcoslab.inference.predictor import resolve_device

# name -> (StepOptions changes, environment changes, cudnn.benchmark, seconds it may need beyond a plain lever)
LEVERS: dict[str, tuple[dict, dict, bool, float]] = {
    "baseline": ({}, {}, False, 0),
    "cudnn_benchmark": ({}, {}, True, 0),
    "channels_last": ({"channels_last": True}, {}, False, 0),
    "optimizer_loop": ({"optimizer": "loop"}, {}, False, 0),
    "optimizer_fused": ({"optimizer": "fused"}, {}, False, 0),
    "trainer_syncs": ({"trainer_syncs": True}, {}, False, 0),
    "cupy_off": ({}, {"FCOSLAB_BACKEND": "torch"}, False, 0),
    "cuda_graph": ({"cuda_graph": True}, {}, False, 5),
    "compile_model": ({"compile_model": True}, {}, False, 100),
    "compile_loss_torch": ({"compile_loss": True}, {"FCOSLAB_BACKEND": "torch"}, False, 40),
    "compile_loss": ({"compile_loss": True}, {}, False, 40),
}
COLUMNS = ("lever", "status", "ms/step", "img/s", "speed-up vs baseline", "peak MiB", "first step s",
           "host syncs/step")


@contextlib.contextmanager
def environment(changes: dict, cudnn_benchmark: bool):
    old = {k: os.environ.get(k) for k in changes}
    old_benchmark = torch.backends.cudnn.benchmark
    os.environ.update(changes)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.backends.cudnn.benchmark = old_benchmark


def host_syncs(step, device: torch.device) -> Optional[int]:
    """Synchronizing CUDA calls in one step (None on a CPU), by ``torch.cuda.set_sync_debug_mode('warn')``."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
            common.sync(device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def skip_reason(name: str, device: torch.device) -> Optional[str]:
    if name == "cuda_graph" and device.type != "cuda":
        return "needs CUDA"
    if name in ("cudnn_benchmark",) and device.type != "cuda":
        return "cuDNN is CUDA only"
    if name in ("cupy_off", "compile_loss") and ops.backends()["cupy"] != "available":
        return f"CuPy kernels not in use here ({ops.backends()['cupy'][:80]})"
    if name == "optimizer_fused" and device.type not in ("cuda", "cpu"):
        return f"fused optimizers need CUDA or a CPU, not {device.type}"
    return None


def run_lever(name: str, args, device: torch.device) -> dict:
    """One lever's row: status, timings, peak memory, host syncs."""
    changes, env, benchmark, _ = LEVERS[name]
    options = replace(StepOptions(precision=args.precision), **changes)
    with environment(env, benchmark):
        step = FcoslabStep(args.preset, args.batch, tuple(args.size), device, options)
        with common.stopwatch(device) as first:
            step()
        r = measure(step, device, args.iters, args.warmup)
        syncs = host_syncs(step, device) if not (options.compile_model or options.compile_loss) else None
    return {"lever": name, "status": "ok", "ms/step": 1000 * r["seconds"], "img/s": r["images_per_s"],
            "peak MiB": r["peak_mib"], "first step s": first.seconds, "host syncs/step": syncs, "_seconds": r["seconds"]}


def run_levers(args, rec: StageRecord, device: torch.device, time_left) -> None:
    table = rec.table("levers", f"Levers on fcoslab {args.preset}, {args.precision}, batch {args.batch}, "
                      f"{args.size[0]}x{args.size[1]} (random weights and images, no data loading)", COLUMNS,
                      ["speed-up vs baseline: baseline ms / lever ms (>1 is faster). first step s: the first step "
                       "after building, with any compilation or capture.",
                       "host syncs/step: synchronizing CUDA calls of one step by torch.cuda.set_sync_debug_mode "
                       "(n/a on a CPU and for compiled steps)."])
    base: Optional[float] = None
    for name in args.levers:
        if name not in LEVERS:
            rec.add_row(table, {"lever": name, "status": f"failed: unknown lever (known: {', '.join(LEVERS)})"})
            continue
        reason = skip_reason(name, device)
        need = 15 + LEVERS[name][3]
        if reason is None and time_left() < need:
            reason = f"{time_left():.0f} s left of the stage, it needs about {need:.0f}"
        if reason is not None:
            rec.add_row(table, {"lever": name, "status": f"skipped: {reason}"})
            continue
        try:
            row = run_lever(name, args, device)
        except Exception as e:  # noqa: BLE001 (a failing lever is a result, not the end of the stage)
            lines = str(e).strip().splitlines()
            row = {"lever": name, "status": f"failed: {type(e).__name__}: {lines[0][:200] if lines else ''}"}
        seconds = row.pop("_seconds", None)
        if name == "baseline" and seconds:
            base = seconds
        if seconds and base:
            row["speed-up vs baseline"] = base / seconds
        rec.add_row(table, row)
        if "compile" in name:
            torch._dynamo.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if base is None:
        rec.note("the baseline did not run, so there are no speed-ups", table)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="imprv_coco_1x")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "preset"])
    p.add_argument("--size", type=int, nargs=2, default=[800, 1066], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first, before the timed ones")
    p.add_argument("--levers", nargs="+", default=list(LEVERS))
    p.add_argument("--time-limit", type=float, help="seconds: start no lever that would not finish by then")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    device = resolve_device(args.device)
    start = time.monotonic()
    limit = args.time_limit

    def time_left() -> float:
        return float("inf") if limit is None else limit - (time.monotonic() - start)

    rec = StageRecord(args.work, "levers", "Levers", f"python benchmarks/gpu_levers.py {' '.join(argv)}",
                      common.device_name(device))
    run_levers(args, rec, device, time_left)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
