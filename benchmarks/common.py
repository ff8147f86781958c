"""What every script in benchmarks/ shares: the path setup, the timer and the machine header.

    import common  # first, before any fcoslab import: this checkout's fcoslab, and benchmarks/ importable

- Path setup (on import): this checkout's root and ``benchmarks/`` go first on ``sys.path``, so that
  ``python benchmarks/X.py`` runs this checkout's fcoslab (not an installed one) and the scripts import
  each other (``from gpu_efficiency import FcoslabStep``).
- Timer: :func:`timed` (one function, ``repeat`` timed calls after ``warmup`` untimed ones: a
  :class:`Timing` with the median, the spread and every time), :func:`interleaved` (several functions
  timed in turn, so that a load from elsewhere falls on all alike), :func:`once` (a single call) and
  :func:`stopwatch` (a context manager for a block). On a GPU each synchronises CUDA before and after
  (:func:`sync`), or times by CUDA events (``cuda_events=True``).
- Machine header: :func:`machine_info` (a dict: date, CPU model, cores, torch threads, native bfloat16,
  the AVX2-emulation variables, GPU, versions, command line) and :func:`print_header` (its lines).

No torch import at module level (``gpu_report.py`` must run where torch is broken): torch and fcoslab are
imported inside the functions that need them.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(BENCH), str(ROOT)):  # ROOT ends first
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

EMULATION_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")  # docs/performance.md: "AVX2 emulation"


# ----------------------------------------------------------------------------------------------- timer
def _device(device) -> Optional[Any]:
    """The torch device to synchronise: ``"auto"`` is CUDA when this process has used CUDA, else none."""
    if device is None:
        return None
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    device = torch.device(device)
    return device if device.type == "cuda" else None


def sync(device="auto") -> None:
    """Wait for the queued CUDA work of ``device`` (a CUDA device; ``"auto"``: CUDA if this process used it;
    nothing on a CPU)."""
    cuda = _device(device)
    if cuda is not None:
        import torch

        torch.cuda.synchronize(cuda)


@dataclass
class Timing:
    """Seconds of each timed call (``times``) and the last call's return value (``value``)."""

    times: list[float]
    value: Any = field(default=None, repr=False)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def spread(self) -> float:
        """The range: slowest less fastest call, in seconds."""
        return max(self.times) - min(self.times)

    def __str__(self) -> str:
        return f"{1000 * self.median:.2f} ms (median of {len(self.times)}, spread {1000 * self.spread:.2f} ms)"


def interleaved(fns: Sequence[Callable[[], Any]], repeat: int, warmup: int = 1, device="auto",
                cuda_events: bool = False) -> list[Timing]:
    """Time each of ``fns`` ``repeat`` times, taking turns within each round (after ``warmup`` untimed
    rounds), so that a load from another process falls on all alike. Each call is timed with
    ``time.perf_counter`` between two :func:`sync` calls, or, with ``cuda_events`` (a CUDA ``device``), by
    CUDA events around it (the GPU's time, launch overhead left out)."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    cuda = _device(device)
    if cuda_events and cuda is None:
        raise ValueError("cuda_events needs a CUDA device")
    for _ in range(warmup):
        for fn in fns:
            fn()
    timings = [Timing([]) for _ in fns]
    for _ in range(repeat):
        for fn, timing in zip(fns, timings):
            if cuda_events:
                import torch

                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                timing.value = fn()
                end.record()
                torch.cuda.synchronize(cuda)
                timing.times.append(start.elapsed_time(end) / 1000)
            else:
                with stopwatch(cuda) as watch:
                    timing.value = fn()
                timing.times.append(watch.seconds)
    return timings


def timed(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1, device="auto",
          cuda_events: bool = False) -> Timing:
    """``repeat`` timed calls of ``fn`` after ``warmup`` untimed ones (see :func:`interleaved`)."""
    return interleaved([fn], repeat, warmup, device, cuda_events)[0]


def once(fn: Callable[[], Any], device="auto") -> tuple[Any, float]:
    """(``fn()``, the seconds it took), CUDA synchronised before and after (see :func:`sync`)."""
    with stopwatch(device) as watch:
        value = fn()
    return value, watch.seconds


class stopwatch:  # noqa: N801 (used as a context manager, like a function)
    """``with stopwatch(device) as watch: ...``; then ``watch.seconds``: the block's wall time, CUDA
    synchronised before and after (``device`` as for :func:`sync`; ``None``: never)."""

    def __init__(self, device="auto"):
        self.device, self.seconds = _device(device), 0.0

    def __enter__(self) -> "stopwatch":
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


# ----------------------------------------------------------------------------------------------- header
def utc_now(fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(fmt)


def command_line(script: Optional[str] = None, args: Optional[Sequence[str]] = None) -> str:
    """``python benchmarks/X.py ARGS`` (the script relative to this checkout where it lies in it)."""
    script = str(script if script is not None else sys.argv[0])
    args = list(sys.argv[1:] if args is None else args)
    path = Path(script).resolve()
    if path.is_relative_to(ROOT):
        script = str(path.relative_to(ROOT))
    return shlex.join(["python", script, *map(str, args)])


def gpu_name(device=None) -> Optional[str]:
    """The CUDA device's name (``device``, else the current one), or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(device)


def device_name(device) -> str:
    """The GPU's name for a CUDA device, the CPU's model name otherwise."""
    import torch

    from fcoslab.inference.predictor import cpu_name

    return gpu_name(device) if torch.device(device).type == "cuda" else cpu_name()


def machine_info(script: Optional[str] = None, args: Optional[Sequence[str]] = None) -> dict:
    """What a figure was measured on, for a benchmark's header or its JSON.

    ``env`` holds those of ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` that are set (the AVX2
    emulation of docs/performance.md); ``bf16_native`` and ``bf16_reason`` are
    :func:`fcoslab.inference.predictor.native_cpu_bf16`, which honours them."""
    import torch
    import torchvision

    import fcoslab
    from fcoslab.inference.predictor import cpu_name, native_cpu_bf16

    native, reason = native_cpu_bf16()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "date": utc_now(), "command": command_line(script, args), "cpu": cpu_name(), "arch": platform.machine(),
        "cores": os.cpu_count(), "cores_usable": usable, "threads": torch.get_num_threads(),
        "bf16_native": native, "bf16_reason": reason,
        "env": {k: os.environ[k] for k in EMULATION_VARIABLES if k in os.environ},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "gpu": gpu_name(),
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "fcoslab": fcoslab.__version__,
    }


def header_lines(info: dict, prefix: str = "# ") -> list[str]:
    """The header of :func:`print_header` as lines."""
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items()) or " and ".join(EMULATION_VARIABLES) + " unset"
    return [f"{prefix}command: {info['command']}",
            f"{prefix}date: {info['date']}; cpu: {info['cpu']} ({info['arch']}), {info['cores']} cores "
            f"({info['cores_usable']} usable), {info['threads']} torch threads, CPU capability {info['cpu_capability']}",
            f"{prefix}native bfloat16: {'yes' if info['bf16_native'] else 'no'} ({info['bf16_reason']}); {env}",
            f"{prefix}gpu: {info['gpu'] or 'none'}; python {info['python']}, torch {info['torch']}, "
            f"torchvision {info['torchvision']}, fcoslab {info['fcoslab']}"]


def print_header(script: Optional[str] = None, args: Optional[Sequence[str]] = None, prefix: str = "# ",
                 file=None) -> dict:
    """Print the machine header (four lines: the command; date, CPU, cores and threads; native bfloat16 and
    the emulation variables; GPU and versions) and return :func:`machine_info`'s dict."""
    info = machine_info(script, args)
    for line in header_lines(info, prefix):
        print(line, file=file, flush=True)
    return info
