"""The Python stages of ``benchmarks/gpu_check.sh``; each writes ``WORK/<stage>.json`` (tables, raw figures).

    python benchmarks/gpu_stages.py STAGE --work DIR [--device auto] [--size 800 1066] [--batch 8] [--iters 10]
        [--presets imprv_coco_1x tv_fcos_r50] [--precisions bf16 fp32] [--time-limit SECONDS]

Stages: ``env`` (versions, GPU, driver, a bf16 matmul's rate), ``steps`` (fcoslab's and torchvision's
training step: images/s, MFU, peak memory, memory per image), ``maxbatch`` (the largest batch that fits,
by bisection), ``profile`` (torch.profiler's top ops of one step, and the step's phases), ``evalshare``
(the per-epoch COCO evaluation against an epoch of training) and ``decode`` (nvjpeg against CPU JPEG
decoding). ``levers`` lives in ``benchmarks/gpu_levers.py``, the torchrun check in ``gpu_ddp_check.py``.

Every stage also runs on a CPU at tiny sizes (``--device cpu --size 128 128 --batch 1 --iters 1
--presets shapes``: tests/benchmarks/test_gpu_script.py), where CUDA-only figures are recorded as n/a. With
``--time-limit`` a stage stops starting new rows when the time is up and says which it skipped.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
import traceback
from typing import Callable, Optional

import torch

import common
from gpu_efficiency import PEAK_BF16_TFLOPS, FcoslabStep, StepOptions, TorchvisionStep, count_flops, measure, mfu
from gpu_data_stages import COCO_VAL_IMAGES, decode_throughput, evaluation_share
from gpu_report import StageRecord

from fcoslab.inference.predictor import resolve_device


class Clock:
    """The stage's deadline: ``left()`` seconds remain of ``--time-limit`` (inf without one)."""

    def __init__(self, limit: Optional[float]):
        self.start, self.limit = time.monotonic(), limit

    def left(self) -> float:
        return float("inf") if self.limit is None else self.limit - (time.monotonic() - self.start)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_step(preset: str, batch: int, args, device, precision: str):
    if preset == "torchvision":
        return TorchvisionStep(batch, tuple(args.size), device, precision)
    return FcoslabStep(preset, batch, tuple(args.size), device, StepOptions(precision=precision))


def error_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:240] if text else ''}"


# ----------------------------------------------------------------------------------------------- env
def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"n/a ({type(e).__name__})"


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def bf16_matmul_tflops(device: torch.device, n: int = 8192, repeat: int = 10) -> Optional[float]:
    """A measured n^3 bf16 matmul rate (mean of ``repeat`` after 3 warm-ups), the practical ceiling."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    timing = common.timed(lambda: a @ b, repeat, warmup=3, device=device, cuda_events=True)
    return round(2 * n ** 3 / timing.mean / 1e12, 1)


def stage_env(args, rec: StageRecord, device: torch.device, clock: Clock) -> None:
    from fcoslab import ops

    info = common.machine_info()

    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    gpu, driver, memory = ([s.strip() for s in smi.split(",")] + ["n/a"] * 3)[:3] if "," in smi else (smi or "n/a",) * 3
    try:
        import cupy

        cupy_version = cupy.__version__
    except Exception as e:  # noqa: BLE001 (any import failure is the answer)
        cupy_version = f"not usable ({type(e).__name__})"
    git = _run(["git", "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "status", "--short"])
    data = {
        "date": rec.doc["date"], "command": os.environ.get("GPU_CHECK_COMMAND", rec.doc["command"]),
        "gpu": gpu if device.type != "cuda" else f"{gpu} (torch: {common.device_name(device)}, capability "
                                                  f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))})",
        "driver": driver, "gpu_memory": memory, "python": info["python"], "torch": info["torch"],
        "torchvision": info["torchvision"], "fcoslab": info["fcoslab"], "cupy": cupy_version,
        "cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version()), "triton": _version("triton"),
        "numpy": _version("numpy"),
        "faster_coco_eval": _version("faster-coco-eval"), "pycocotools": _version("pycocotools"),
        "cpu": info["cpu"], "cpu_count": info["cores"], "threads": info["threads"],
        "cpu_bf16": f"{'native' if info['bf16_native'] else 'not native'} ({info['bf16_reason']})",
        "cpu_isa_env": ", ".join(f"{k}={v}" for k, v in info["env"].items()) or "unset",
        "git": (git or "unknown (no git checkout)")
               + (f" (+{len(dirty.splitlines())} changed files)" if dirty and not dirty.startswith("n/a") else ""),
        "fcoslab_ops": ops.backends(),
        "tf32": f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} (fp32 convolutions use TF32 when true)",
        "peak_bf16_tflops_used_for_mfu": PEAK_BF16_TFLOPS,
    }
    for key, value in data.items():
        rec.set(key, value)
    rate = bf16_matmul_tflops(device)
    rec.set("bf16_matmul_tflops", "n/a (no CUDA)" if rate is None else
            f"{rate} (8192^3, measured now; MFU uses {PEAK_BF16_TFLOPS:g}, NVIDIA's dense bf16 figure)")


# ----------------------------------------------------------------------------------------------- steps
STEP_COLUMNS = ("model", "precision", "batch", "input", "ms/step", "img/s", "GFLOP/img", "TFLOP/s",
                f"MFU % of {PEAK_BF16_TFLOPS:g}", "peak MiB", "MiB/image", "time vs torchvision")


def stage_steps(args, rec: StageRecord, device: torch.device, clock: Clock) -> None:
    table = rec.table("steps", f"Training step at {args.size[0]}x{args.size[1]}, batch {args.batch}, random weights "
                      "and images, 10 boxes each (no data loading)", STEP_COLUMNS,
                      ["MFU: counted FLOPs (convolutions and matmuls, forward + backward, multiply-add = 2) per "
                       f"second over {PEAK_BF16_TFLOPS:g} TFLOP/s (H200 dense bf16), in fp32 too.",
                       "MiB/image: (peak at this batch - peak at batch 1) / (batch - 1); peak = "
                       "torch.cuda.max_memory_allocated over the timed steps (weights, gradients and optimizer state "
                       "included).", "input: the padded batch the network sees (imprv_coco_1x pads to 128, "
                       "tv_fcos_r50 and torchvision to 32)."])
    rates = {}
    for precision in args.precisions:
        tv_seconds = None
        for preset in ["torchvision"] + list(args.presets):
            if clock.left() < 10:
                rec.note(f"skipped {preset} {precision}: stage time limit reached", table)
                continue
            step = None
            try:
                step = make_step(preset, 1, args, device, precision)
                one = None  # batch 1's peak memory, for the memory per image
                if args.batch > 1 and device.type == "cuda":
                    one = measure(step, device, iters=max(1, args.iters // 4), warmup=1)
                step.set_batch(args.batch)
                flops = count_flops(step)
                r = measure(step, device, args.iters, args.warmup)
            except Exception as e:  # noqa: BLE001 (recorded, the other rows go on)
                traceback.print_exc()
                rec.note(f"{preset} {precision} failed: {error_line(e)}", table)
                step = None
                free_memory()
                continue
            achieved, util = mfu(flops, r["seconds"])
            per_image = None  # needs two batch sizes' peaks
            if one is not None and r["peak_mib"] is not None:
                per_image = (r["peak_mib"] - one["peak_mib"]) / (args.batch - 1)
            if preset == "torchvision":
                tv_seconds = r["seconds"]
            rates[f"{preset}/{precision}"] = r["images_per_s"]
            rec.add_row(table, {
                "model": preset if preset == "torchvision" else f"fcoslab {preset}", "precision": step.precision.name,
                "batch": args.batch, "input": "x".join(map(str, step.input_shape)), "ms/step": 1000 * r["seconds"],
                "img/s": r["images_per_s"], "GFLOP/img": flops / args.batch / 1e9, "TFLOP/s": achieved,
                f"MFU % of {PEAK_BF16_TFLOPS:g}": util, "peak MiB": r["peak_mib"], "MiB/image": per_image,
                "time vs torchvision": None if tv_seconds is None or preset == "torchvision"
                else r["seconds"] / tv_seconds})
            rec.set("raw", rec.doc["data"].get("raw", []) + [{"preset": preset, "precision": precision, "flops": flops,
                                                            "batch1": one, **r}])
            rec.set("rates", rates)
            del step
            free_memory()


# ----------------------------------------------------------------------------------------------- maxbatch
def largest_batch(fits: Callable[[int], bool], guess: int, upper: int, time_left: Callable[[], float],
                  trial_seconds: float = 5.0) -> tuple[int, int, list[tuple[int, bool]]]:
    """The largest batch in [1, upper] for which ``fits(b)`` (monotone: True up to some b), starting at
    ``guess``: grows while it fits (doubling below 16, else by 25%), then bisects. Returns (the largest
    that fitted (0: none), the smallest that failed (upper + 1: none failed), the trials); stops early when
    ``time_left()`` falls under ``trial_seconds`` (then the answer lies between the two)."""
    lo, hi, trials = 0, upper + 1, []
    b = min(max(guess, 1), upper)
    while hi - lo > 1 and time_left() > trial_seconds:
        ok = fits(b)
        trials.append((b, ok))
        lo, hi = (b, hi) if ok else (lo, b)
        b = min(upper, max(lo + 1, int(lo * 1.25), 2 * lo if lo < 16 else 0)) if hi > upper else (lo + hi) // 2
    return lo, hi, trials


def out_of_memory(e: BaseException) -> bool:
    """An allocation failure, whether torch's caching allocator, cuDNN or cuBLAS reports it."""
    text = str(e)
    return isinstance(e, torch.cuda.OutOfMemoryError) or any(
        k in text for k in ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                            "CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous"))


class BatchProbe:
    """``probe(b)``: whether two training steps of ``step`` at batch ``b`` run (an allocation failure is
    False, anything else raises); the peak memory of each batch that ran and the error of each that failed."""

    def __init__(self, step, device: torch.device):
        self.step, self.device = step, device
        self.peaks: dict[int, Optional[float]] = {}
        self.errors: dict[int, str] = {}

    def __call__(self, b: int) -> bool:
        cuda = self.device.type == "cuda"
        try:
            self.step.set_batch(b)
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            self.step()
            common.sync(self.device)
            self.peaks[b] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20 if cuda else None
            return True
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if not out_of_memory(e):
                raise
            self.errors[b] = error_line(e)[:120]
            self.step.outputs = self.step.losses = None
            self.step.optimizer.zero_grad(set_to_none=True)
            free_memory()
            return False


def stage_maxbatch(args, rec: StageRecord, device: torch.device, clock: Clock) -> None:
    table = rec.table("maxbatch", f"Largest training batch at {args.size[0]}x{args.size[1]} (two steps each)",
                      ("model", "precision", "largest batch that fits", "smallest that failed", "peak MiB at largest",
                       "GPU MiB", "trials", "failure", "seconds"),
                      ["Search: a first guess from the memory per image of batches 1 and 2, growth while it fits, "
                       "then bisection; a failure is an allocation failure (torch, cuDNN or cuBLAS), its error in "
                       "'failure'. Default caching allocator.",
                       f"'smallest that failed' = {args.max_batch + 1} means none failed up to the cap --max-batch."])
    total = torch.cuda.mem_get_info(device)[1] / 2 ** 20 if device.type == "cuda" else None
    for precision in args.precisions:
        for preset in args.presets:
            if clock.left() < 15:
                rec.note(f"skipped {preset} {precision}: stage time limit reached", table)
                continue
            started = time.monotonic()
            step = make_step(preset, 1, args, device, precision)
            probe = BatchProbe(step, device)
            guess = args.max_batch
            if device.type == "cuda" and probe(1) and probe(2):
                per_image = max(probe.peaks[2] - probe.peaks[1], 1.0)
                guess = int((0.92 * total - (probe.peaks[1] - per_image)) / per_image)
            lo, hi, trials = largest_batch(probe, guess, args.max_batch, lambda: clock.left() - 5)
            rec.add_row(table, {"model": f"fcoslab {preset}", "precision": step.precision.name,
                                "largest batch that fits": lo, "smallest that failed": hi,
                                "peak MiB at largest": probe.peaks.get(lo), "GPU MiB": total,
                                "trials": " ".join(f"{b}{'ok' if ok else 'X'}" for b, ok in trials),
                                "failure": probe.errors.get(hi, ""), "seconds": time.monotonic() - started})
            del step, probe
            free_memory()


# ----------------------------------------------------------------------------------------------- profile
def _device_self_us(evt) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(evt, attr):
            return float(getattr(evt, attr))
    return 0.0


def stage_profile(args, rec: StageRecord, device: torch.device, clock: Clock) -> None:
    from torch.profiler import ProfilerActivity, profile

    preset, precision = args.presets[0], args.precisions[0]
    step = FcoslabStep(preset, args.batch, tuple(args.size), device, StepOptions(precision=precision))
    for _ in range(args.warmup + 1):
        step()
    common.sync(device)
    phases = {"forward": step.forward, "loss (targets + loss)": step.loss, "backward": step.backward,
              "optimizer": step.update}
    times: dict[str, list[float]] = {k: [] for k in phases}
    for _ in range(max(1, min(args.iters, 5))):
        for name, fn in phases.items():
            times[name].append(common.once(fn, device)[1])
    total = sum(statistics.median(v) for v in times.values())
    t_phase = rec.table("phases", f"Phases of one step of fcoslab {preset}, {step.precision.name}, batch {args.batch} "
                        "(a sync between phases; median of the repeats)", ("phase", "ms", "% of step"))
    for name, v in times.items():
        rec.add_row(t_phase, {"phase": name, "ms": 1000 * statistics.median(v),
                              "% of step": 100 * statistics.median(v) / total})
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        common.sync(device)
    events = prof.key_averages()
    on_cuda = device.type == "cuda"
    cost = _device_self_us if on_cuda else (lambda e: float(e.self_cpu_time_total))
    what = "self device time" if on_cuda else "self CPU time"
    ops_ = [e for e in events if not on_cuda or "cpu" in str(getattr(e, "device_type", "cpu")).lower()]
    kernels = [e for e in events if on_cuda and "cuda" in str(getattr(e, "device_type", "")).lower()]
    for key, title, chosen in (("ops", "operators", ops_), ("kernels", "kernels", kernels)):
        if not chosen:
            continue
        chosen = sorted(chosen, key=cost, reverse=True)
        whole = sum(cost(e) for e in chosen) or 1.0
        table = rec.table(key, f"Top {title} of one step by {what} (torch.profiler)",
                          ("rank", "name", "calls", "ms", "% of step"))
        for i, e in enumerate(chosen[:10]):
            rec.add_row(table, {"rank": i + 1, "name": e.key[:90], "calls": e.count, "ms": cost(e) / 1000,
                                "% of step": 100 * cost(e) / whole})
        top3 = ", ".join(f"{e.key[:60]} ({100 * cost(e) / whole:.1f}%)" for e in chosen[:3])
        rec.note(f"The three largest {title} by {what}: {top3}.", table)


STAGE_FUNCTIONS = {"env": stage_env, "steps": stage_steps, "maxbatch": stage_maxbatch, "profile": stage_profile,
                   "evalshare": evaluation_share, "decode": decode_throughput}  # the last two: gpu_data_stages.py
TITLES = {"env": "Environment", "steps": "Training step", "maxbatch": "Largest batch", "profile": "Profile",
          "evalshare": "Evaluation share", "decode": "JPEG decoding"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=sorted(STAGE_FUNCTIONS))
    p.add_argument("--work", required=True, help="folder of the stage records")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1066], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--presets", nargs="+", default=["imprv_coco_1x", "tv_fcos_r50"])
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32", "preset"])
    p.add_argument("--time-limit", type=float, help="seconds: start no new row after this")
    p.add_argument("--max-batch", type=int, default=256, help="maxbatch: the cap of the search")
    p.add_argument("--eval-images", type=int, default=500, help="evalshare: COCO-like images generated and "
                   "evaluated (the time is scaled to 5000)")
    p.add_argument("--eval-sizes", default="mixed", help="evalshare/decode: WxH,... or 'mixed' (COCO's sizes)")
    p.add_argument("--score-images", type=int, default=COCO_VAL_IMAGES,
                   help="evalshare: images of the synthetic COCO scoring (detections without a model)")
    p.add_argument("--backend", default="faster", help="evalshare: eval.backend")
    p.add_argument("--decode-images", type=int, default=256, help="decode: JPEG files decoded")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rec = StageRecord(args.work, args.stage, TITLES[args.stage],
                      f"python benchmarks/gpu_stages.py {' '.join(argv)}", common.device_name(device))
    STAGE_FUNCTIONS[args.stage](args, rec, device, Clock(args.time_limit))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
