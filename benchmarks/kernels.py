"""Side-by-side timings of fcoslab's CuPy kernels, torchvision's CUDA ops and the torch reference.

    python benchmarks/kernels.py [--repeat 50] [--out results.md]

Prints median milliseconds (CUDA events) and peak memory of each, with the ratios, for:
batched_nms at 16 images x 1000 boxes x 80 classes; a single 20k-box nms; focal loss forward+backward
at 100k points x 80 classes; assignment at batch 16, 100 boxes per image, 800x1333 inputs.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torchvision

import common
from fcoslab import ops


def measure(fn, repeat: int) -> tuple[float, float, float]:
    """(median ms by CUDA events, peak MiB above the memory in use before the call, host ms per call
    when calls are queued back to back: the Python and launch overhead)."""
    fn()
    common.sync("cuda")
    with common.stopwatch(None) as queued:  # no sync at the end: what the host alone spends
        for _ in range(repeat):
            fn()
    host_ms = queued.seconds * 1000 / repeat
    common.sync("cuda")
    events = common.timed(fn, repeat, warmup=0, device="cuda", cuda_events=True)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    common.sync("cuda")
    return events.median * 1000, (torch.cuda.max_memory_allocated() - base) / 2**20, host_ms


def boxes_and_scores(n: int, gen, size: float = 1000.0):
    xy = torch.rand(n, 2, generator=gen, device="cuda") * size
    wh = torch.rand(n, 2, generator=gen, device="cuda") * size / 6 + 2
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=gen, device="cuda")


def bench_batched_nms(repeat: int, gen) -> dict:
    boxes, scores = boxes_and_scores(16 * 1000, gen, 800.0)
    image = torch.arange(16, device="cuda").repeat_interleave(1000)
    idxs = image * 80 + torch.randint(0, 80, (16000,), generator=gen, device="cuda")
    return {"fcoslab (cupy)": measure(lambda: ops.batched_nms(boxes, scores, idxs, 0.6, backend="cupy"), repeat),
            "torchvision": measure(lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.6), repeat),
            "torch reference": measure(lambda: ops.batched_nms(boxes, scores, idxs, 0.6, backend="torch"), max(3, repeat // 10))}


def bench_nms(repeat: int, gen) -> dict:
    boxes, scores = boxes_and_scores(20000, gen, 2000.0)
    return {"fcoslab (cupy)": measure(lambda: ops.nms(boxes, scores, 0.5, backend="cupy"), repeat),
            "torchvision": measure(lambda: torchvision.ops.nms(boxes, scores, 0.5), repeat),
            "torch reference": measure(lambda: ops.nms(boxes, scores, 0.5, backend="torch"), 3)}


def bench_focal(repeat: int, gen) -> dict:
    logits = torch.randn(100_000, 80, generator=gen, device="cuda").requires_grad_()
    labels = torch.randint(-1, 80, (100_000,), generator=gen, device="cuda")
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), 80).float() * (labels >= 0)[:, None]

    def ours():
        ops.sigmoid_focal_loss(logits, labels, reduction="sum", backend="cupy").backward()

    def tv():
        # torchvision takes the (N, K) one-hot targets; building them is part of the work it asks for
        t = torch.nn.functional.one_hot(labels.clamp(min=0), 80).float() * (labels >= 0)[:, None]
        torchvision.ops.sigmoid_focal_loss(logits, t, reduction="sum").backward()

    def ref():
        ops.sigmoid_focal_loss(logits, labels, reduction="sum", backend="torch").backward()

    del onehot
    return {"fcoslab (cupy)": measure(ours, repeat), "torchvision": measure(tv, repeat), "torch reference": measure(ref, repeat)}


def bench_assign(repeat: int, gen) -> dict:
    from fcoslab.modeling.points import make_points
    from fcoslab.modeling.targets import point_regress_ranges

    sizes = [((800 + s - 1) // s, (1344 + s - 1) // s) for s in (8, 16, 32, 64, 128)]
    points, strides = make_points(sizes, (8, 16, 32, 64, 128), 0.5, "cuda")
    ranges = point_regress_ranges(sizes, ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)), "cuda")
    xy = torch.rand(16, 100, 2, generator=gen, device="cuda") * torch.tensor([1333.0, 800.0], device="cuda")
    boxes = torch.cat([xy, xy + torch.rand(16, 100, 2, generator=gen, device="cuda") * 400 + 4], -1)
    labels = torch.randint(0, 80, (16, 100), generator=gen, device="cuda")
    run = lambda backend: ops.fcos_assign(points, strides, ranges, boxes, labels, 1.5, backend=backend)  # noqa: E731
    return {"fcoslab (cupy)": measure(lambda: run("cupy"), repeat), "torch reference": measure(lambda: run("torch"), repeat)}


def report(name: str, rows: dict, goal: str) -> str:
    ours_ms, ours_mb, _ = rows["fcoslab (cupy)"]
    lines = [f"\n### {name}\n", f"Goal: {goal}\n",
             "| implementation | median ms | peak MiB | time vs fcoslab | memory vs fcoslab | host ms/call |",
             "|---|---:|---:|---:|---:|---:|"]
    for impl, (ms, mb, host) in rows.items():
        lines.append(f"| {impl} | {ms:.3f} | {mb:.1f} | {ms / ours_ms:.2f}x | {mb / max(ours_mb, 1e-6):.2f}x | {host:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", help="also write the markdown tables to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA device", file=sys.stderr)
        return 1
    gen = torch.Generator("cuda").manual_seed(0)
    with common.stopwatch(None) as clock:
        parts = common.header_lines(common.machine_info(), prefix="")
        parts.append(f"cupy {__import__('cupy').__version__}; median of {args.repeat} runs (CUDA events); "
                     "'x' columns: how many times fcoslab's figure the row's figure is.")
        parts.append(report("batched_nms: 16 images x 1000 boxes x 80 classes (one call)",
                            bench_batched_nms(args.repeat, gen), ">= 1.3x faster than torchvision.ops.batched_nms"))
        parts.append(report("nms: 20k boxes", bench_nms(args.repeat, gen), "no slower than torchvision.ops.nms"))
        parts.append(report("sigmoid focal loss, forward + backward, 100k x 80, reduction sum", bench_focal(args.repeat, gen),
                            ">= 3x faster and >= 4x less peak memory than torchvision.ops.sigmoid_focal_loss"))
        parts.append(report("fcos_assign: batch 16, 100 boxes per image, 800x1333", bench_assign(args.repeat, gen),
                            ">= 10x faster than the torch reference"))
    text = "\n".join(parts) + f"\n\n(total {clock.seconds:.0f} s)\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
