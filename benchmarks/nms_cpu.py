"""Time and peak memory of the pure-torch NMS reference on the CPU.

    python benchmarks/nms_cpu.py --boxes 20000 [--classes 80]

Prints milliseconds per call and the growth of the process's peak resident memory during the calls,
and checks the kept boxes against torchvision (the same set, in the same score order; boxes of equal
score may come in another order, since torchvision's per-class path sorts without a tie rule).
"""

from __future__ import annotations

import argparse
import resource
import time
from functools import partial

import torch
import torchvision

from fcoslab import ops


def random_boxes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 100 + 4
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=0, help="0: plain nms; K: batched_nms over K classes")
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    boxes, scores = random_boxes(args.boxes)
    idxs = torch.randint(0, max(args.classes, 1), (args.boxes,), generator=torch.Generator().manual_seed(1))
    if args.classes:
        run = partial(ops.batched_nms, boxes, scores, idxs, 0.5, backend="torch")
        expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    else:
        run = partial(ops.nms, boxes, scores, 0.5, backend="torch")
        expected = torchvision.ops.nms(boxes, scores, 0.5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    for _ in range(args.iters):
        keep = run()
    ms = (time.perf_counter() - start) / args.iters * 1000
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    same = set(keep.tolist()) == set(expected.tolist()) and torch.equal(scores[keep], scores[expected])
    print(f"{'batched_nms' if args.classes else 'nms'} torch reference, {args.boxes} boxes"
          f"{f', {args.classes} classes' if args.classes else ''}: {ms:.1f} ms per call, peak memory +{grown:.0f} MiB, "
          f"{len(keep)} kept, same as torchvision: {same}")


if __name__ == "__main__":
    main()
