"""Test-time augmentation (``eval.tta``) on a trained run: COCO AP and AP50 with and without it, and the
evaluation time against the plain evaluation's. A benchmark, not a test.

    python benchmarks/tta.py RUN [--ann ANN --images DIR] [--sizes 160 96,160] [--repeat 2]

Evaluates RUN (a run folder or checkpoint) on its validation set, or on --ann / --images, as
``fcoslab evaluate RUN --set eval.tta=...`` does (one process, the run's precision rule and batch size):
without TTA, with the flip alone, and with the flip plus each --sizes list (``eval.tta_sizes``). Each
setting is evaluated --repeat times after one untimed pass (oneDNN makes its kernels for each new input
shape); the best time is reported, loading, transforms, network, decoding, merging and COCO scoring included.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (this checkout's fcoslab first on the path)
from common import print_header, timed

from fcoslab.evaluation.coco import evaluate_checkpoint


def settings(size_lists: list[str]) -> list[tuple[str, dict]]:
    """(name, overrides) of each evaluation: off, flip, then flip + each size list."""
    out = [("off", {}), ("flip", {"eval.tta": True})]
    for sizes in size_lists:
        out.append((f"flip + {sizes}", {"eval.tta": True, "eval.tta_sizes": [int(s) for s in sizes.split(",")]}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--ann")
    parser.add_argument("--images")
    parser.add_argument("--sizes", nargs="*", default=["160", "96,160"], help="tta_sizes lists, e.g. 160 96,160")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default="/tmp/tta_results.json", help="results json (rewritten each evaluation)")
    args = parser.parse_args()
    print_header()
    print(f"# {args.run} on {args.ann or 'its validation set'}")
    print(f"{'TTA':<16} {'AP':>6} {'AP50':>6} {'seconds':>8} {'x off':>6}")
    base = None
    for name, overrides in settings(args.sizes):
        timing = timed(lambda: evaluate_checkpoint(args.run, args.ann, args.images, args.out, device="cpu",
                                                   overrides=overrides), repeat=args.repeat, warmup=1, device="cpu")
        evaluation, best = timing.value, timing.best
        base = base or best
        stats = evaluation.stats
        print(f"{name:<16} {stats['AP']:6.3f} {stats['AP50']:6.3f} {best:8.2f} {best / base:6.2f}")


if __name__ == "__main__":
    main()
