"""Time and peak memory of NMS on the CPU: the pure-torch reference, fcoslab's auto path, torchvision.

    python benchmarks/nms_cpu.py --boxes 20000 [--classes 80]

For each of ``fcoslab.ops.{nms,batched_nms}(backend="torch")`` (the pure-torch reference),
``fcoslab.ops.{nms,batched_nms}(backend="auto")`` (on CPU tensors: torchvision's compiled NMS, one call
per group, see ``fcoslab.ops._torchvision_nms``) and ``torchvision.ops.{nms,batched_nms}``, prints
milliseconds per call and the growth of the process's peak resident memory during the calls (runs go in
that order, so a run's growth is what it needed beyond the runs before it). Then checks that the auto path
returns the reference's indices exactly, and that torchvision keeps the same boxes (the same set, in the
same score order; boxes of equal score may come in another order, since torchvision's per-class path sorts
without a tie rule).
"""

from __future__ import annotations

import argparse
import resource
from functools import partial

import torch
import torchvision

import common
from fcoslab import ops


def random_boxes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 100 + 4
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def measure(run, iters: int) -> tuple[torch.Tensor, float, float]:
    """(last result, ms per call, MiB of peak resident memory growth)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    timing = common.timed(run, iters, warmup=0, device="cpu")
    return timing.value, timing.mean * 1000, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=0, help="0: plain nms; K: batched_nms over K classes")
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    boxes, scores = random_boxes(args.boxes)
    idxs = torch.randint(0, max(args.classes, 1), (args.boxes,), generator=torch.Generator().manual_seed(1))
    if args.classes:
        op, fcoslab_op = "batched_nms", partial(ops.batched_nms, boxes, scores, idxs, 0.5)
        tv_op = partial(torchvision.ops.batched_nms, boxes, scores, idxs, 0.5)
    else:
        op, fcoslab_op = "nms", partial(ops.nms, boxes, scores, 0.5)
        tv_op = partial(torchvision.ops.nms, boxes, scores, 0.5)
    common.print_header()
    auto = ops._choose("auto", (boxes, scores), op, ops.BACKENDS)
    runs = {"torch reference (backend='torch')": partial(fcoslab_op, backend="torch"),
            f"fcoslab auto (runs {auto!r})": partial(fcoslab_op, backend="auto"),
            f"torchvision.ops.{op}": tv_op}
    print(f"{op}, {args.boxes} boxes{f', {args.classes} classes' if args.classes else ''}, "
          f"torch threads: {torch.get_num_threads()}")
    kept = {}
    for name, run in runs.items():
        kept[name], ms, grown = measure(run, args.iters)
        print(f"  {name:42s} {ms:9.1f} ms per call, peak memory +{grown:.0f} MiB, {len(kept[name])} kept")
    reference, auto_keep, tv_keep = kept.values()
    same_tv = set(reference.tolist()) == set(tv_keep.tolist()) and torch.equal(scores[reference], scores[tv_keep])
    print(f"  auto == reference index for index: {torch.equal(auto_keep, reference)}; "
          f"torchvision keeps the same boxes: {same_tv}")


if __name__ == "__main__":
    main()
