"""Evaluation speed (images/s) of batches padded to their largest image (before) against batches of one
padded size (``fcoslab.data.batching``, now), on a COCO-like set of mixed sizes and on one of a single
size. A benchmark, not a test.

    python benchmarks/eval_batching.py [--images 64] [--batch 8] [--repeat 2] [--preset shapes]
                                       [--set KEY=VALUE ...] [--data DIR]

Data: ``make_cocolike`` validation sets of --images JPEGs, one with ``sizes=MIXED_SIZES`` (ten sizes
common in COCO, landscape and portrait) and one of 640x480 only, written under --data (a temporary
folder by default). Model: the --preset network (default: the shapes preset's half-width ResNet-10 with
an FPN of 64 channels) with random weights and 80 classes, at the preset's sizes as changed by --set
(default ``data.test_min_size=320 data.max_size=533``: COCO's 800/1333 scaled for a CPU), float32.

Each way runs the loading, transforms, padding, network and decoding of every image (what
``fcoslab.evaluation.coco.predict_dataset`` runs; COCO scoring, the same for both, is left out): before, the
consecutive batches of ``eval.batch_size`` images padded to their largest, through ``make_loader``'s
collate, with plain convolutions; now, ``evaluation_loader``'s batches with ``BatchInvariantConv2d``.
One pass is not timed (oneDNN creates its kernels for each new input shape), then the best of --repeat
passes is. "padding" is the share of the network's input pixels that are padding; "equal to batches of
one" says whether every image's detections equal, bit for bit, those of the same way with
``eval.batch_size=1``. Last, the cost of exactness for one image a call (``fcoslab predict``, the
viewer): milliseconds an image of the mixed set, plain convolutions against ``BatchInvariantConv2d``
(which runs a lone image's small layers on two copies).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import common
from fcoslab.config import load_config, parse_overrides
from fcoslab.data import CocoDetection, build_transforms, collate_fn, make_cocolike, make_loader
from fcoslab.data.synthetic.cocolike import MIXED_SIZES
from fcoslab.evaluation.coco import evaluation_loader
from fcoslab.inference.predictor import Precision, batch_invariant_layers, inference_layout, predict_batches
from fcoslab.modeling.model import build_model

CPU, FLOAT32 = torch.device("cpu"), Precision(None, "float32")


def padded_to_largest(dataset, cfg):
    """The loader of before: consecutive batches, each padded to its largest image (one batch a list)."""
    size = cfg.eval.batch_size
    batches = [[(i, 0) for i in range(s, min(s + size, len(dataset)))] for s in range(0, len(dataset), size)]
    collate = collate_fn(cfg.data, cfg.model.size_divisibility)
    return ([batch] for batch in make_loader(dataset, batches, cfg.data, collate))


def one_pass(model, dataset, cfg, way: str) -> tuple[float, dict, dict]:
    """Seconds of one pass, the detections by image id, and batch statistics."""
    loader = padded_to_largest(dataset, cfg) if way == "before" else evaluation_loader(dataset, cfg)
    stats = {"batches": 0, "pixels": 0, "image_pixels": 0}

    def batches():
        for group in loader:
            for batch in group:
                stats["batches"] += 1
                stats["pixels"] += batch["images"][:, 0].numel()
                stats["image_pixels"] += int(batch["image_sizes"].prod(1).sum())
                yield batch

    detections, seconds = common.once(lambda: dict(predict_batches(model, batches(), cfg, CPU, FLOAT32)), CPU)
    return seconds, detections, stats


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(all(torch.equal(a[i][k], b[i][k]) for k in a[i]) for i in a)


def measure(model, dataset, cfg, way: str, repeat: int) -> dict:
    batch_invariant_layers(model, on=way == "now")
    one_pass(model, dataset, cfg, way)  # oneDNN's kernels for each input shape
    runs = [one_pass(model, dataset, cfg, way) for _ in range(repeat)]
    seconds, detections, stats = min(runs, key=lambda r: r[0])
    alone = one_pass(model, dataset, cfg.replace(**{"eval.batch_size": 1}), way)[1]
    return {"images/s": len(dataset) / seconds, "batches": stats["batches"],
            "padding": 1 - stats["image_pixels"] / stats["pixels"], "equal": equal(detections, alone)}


def one_image_ms(model, dataset, cfg, invariant: bool, repeat: int) -> float:
    """Milliseconds an image, one image a call (the best of ``repeat`` passes after one untimed)."""
    batch_invariant_layers(model, on=invariant)
    alone = cfg.replace(**{"eval.batch_size": 1})
    times = [one_pass(model, dataset, alone, "before")[0] for _ in range(repeat + 1)][1:]
    return 1000 * min(times) / len(dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="eval.batch_size (default 8)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--set", nargs="*", default=["data.test_min_size=320", "data.max_size=533"])
    parser.add_argument("--data", help="folder for the generated sets (default: a temporary one)")
    args = parser.parse_args()
    cfg = load_config(args.preset, parse_overrides(args.set)).replace(**{
        "eval.batch_size": args.batch, "data.num_workers": 0, "data.cache_images": False})
    torch.manual_seed(0)
    model = build_model(cfg.model, 80).eval()
    inference_layout(model, CPU)
    root = Path(args.data or tempfile.mkdtemp(prefix="eval_batching_"))
    sets = {"mixed": {"sizes": MIXED_SIZES}, "640x480": {}}
    common.print_header()
    print(f"# {args.preset} network, {args.images} images a set, eval_batch_size {args.batch}, "
          f"test_min_size {cfg.data.test_min_size}, max_size {cfg.data.max_size}, "
          f"padding to {cfg.model.size_divisibility}, float32")
    print(f"{'set':10s} {'way':8s} {'images/s':>9s} {'batches':>8s} {'padding':>8s}  equal to batches of one")
    for name, options in sets.items():
        paths = make_cocolike(root / name, train=0, val=args.images, **options)
        dataset = CocoDetection(paths["val"], root / name / "val", build_transforms(cfg.data, train=False))
        rows = {way: measure(model, dataset, cfg, way, args.repeat) for way in ("before", "now")}
        for way, row in rows.items():
            print(f"{name:10s} {way:8s} {row['images/s']:9.1f} {row['batches']:8d} {row['padding']:8.1%}  "
                  f"{'yes' if row['equal'] else 'no'}")
        print(f"{name:10s} now/before {rows['now']['images/s'] / rows['before']['images/s']:.2f}x")
        if name == "mixed":
            plain, invariant = (one_image_ms(model, dataset, cfg, on, args.repeat) for on in (False, True))
            single = f"# one image a call (mixed set): plain convolutions {plain:.1f} ms an image, " \
                     f"BatchInvariantConv2d {invariant:.1f} ms ({invariant / plain:.2f}x)"
    print(single)


if __name__ == "__main__":
    main()
