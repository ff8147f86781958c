"""COCO evaluation at COCO scale: pycocotools vs faster-coco-eval (``eval.backend``), and fcoslab's VOC metrics.

    python benchmarks/evaluation.py [--images 5000] [--backends pycocotools,faster] [--repeat 3] [--voc]
                                    [--world 8]

Generates a COCO-like ground truth (``--images`` images of 480-640 px sides, COCO's 80 category ids with a
skewed frequency, ~7 objects per image with COCO's share of small / medium / large objects, 1% crowd boxes)
and 100 detections per image (noisy copies of the objects, some of the wrong class, then random boxes; scores
and boxes rounded as ``fcoslab.evaluation.coco.to_coco_results`` rounds them), all seeded. For each backend, through
``fcoslab.evaluation.coco.coco_backend`` (the code ``coco_evaluate`` runs), prints the median seconds of ``load``
(ground-truth COCO object and ``loadRes``) and of ``eval`` (COCOeval evaluate + accumulate + summarize), the
speed-up over pycocotools and the largest difference of the 12 numbers from pycocotools'. ``--voc`` also times
``fcoslab.evaluation.voc.voc_evaluate``. ``--world W`` times the gather of sharded evaluation as
``torch.distributed.all_gather_object`` does it: each of W processes pickles its shard of the results list,
and every process unpickles all W shards (the transfer itself is not simulated).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pickle
import statistics
import sys

import numpy as np

import common
from fcoslab.evaluation.coco import STAT_NAMES, coco_backend

# COCO's 80 category ids (1..90 less ten unused ones)
COCO_CAT_IDS = [c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
AREA_SHARE = (0.41, 0.34, 0.25)  # COCO val2017's small (< 32^2), medium (< 96^2) and large objects
AREA_BOUNDS = ((2.0 ** 2, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 500.0 ** 2))


def coco_like_ground_truth(images: int, objects: float = 7.0, crowd: float = 0.01, seed: int = 0) -> dict:
    """A COCO ground-truth dict (xywh boxes, ids, area, iscrowd) of ``images`` images, Poisson(``objects``)
    boxes each, category frequency ~ 1 / rank (so a few classes are common, many rare)."""
    g = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(COCO_CAT_IDS) + 1)
    sizes = g.choice([(640, 480), (480, 640), (640, 427), (500, 375), (640, 640)], size=images)  # (W, H)
    counts = g.poisson(objects, images)
    image_of = np.repeat(np.arange(images), counts)  # (M,)
    m = len(image_of)
    bucket = g.choice(3, size=m, p=AREA_SHARE)
    low, high = np.array(AREA_BOUNDS)[bucket].T
    area = np.exp(g.uniform(np.log(low), np.log(high)))
    aspect = np.exp(g.uniform(-1.0, 1.0, m))  # w / h
    img_w, img_h = sizes[image_of, 0].astype(float), sizes[image_of, 1].astype(float)
    w = np.minimum(np.sqrt(area * aspect), img_w - 1)
    h = np.minimum(np.sqrt(area / aspect), img_h - 1)
    x, y = g.uniform(0, img_w - w), g.uniform(0, img_h - h)
    cats = g.choice(COCO_CAT_IDS, size=m, p=weights / weights.sum())
    is_crowd = g.random(m) < crowd
    anns = [{"id": i + 1, "image_id": int(image_of[i]) + 1, "category_id": int(cats[i]),
             "bbox": [round(float(v), 2) for v in (x[i], y[i], w[i], h[i])], "area": round(float(w[i] * h[i]), 2),
             "iscrowd": int(is_crowd[i])} for i in range(m)]
    imgs = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": int(s[0]), "height": int(s[1])}
            for i, s in enumerate(sizes)]
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in COCO_CAT_IDS]
    return {"images": imgs, "annotations": anns, "categories": categories}


def coco_like_detections(gt: dict, per_image: int = 100, seed: int = 1) -> list[dict]:
    """``per_image`` COCO results per image: 1-2 noisy copies of each object (10% with a random class,
    scores mostly high), the rest random boxes of random classes (scores mostly low)."""
    g = np.random.default_rng(seed)
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    by_image: dict[int, list] = {i: [] for i in sizes}
    for a in gt["annotations"]:
        by_image[a["image_id"]].append(a)
    results = []
    for image_id, anns in by_image.items():
        boxes, cats, scores = [], [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            for _ in range(g.integers(1, 3)):
                dx, dy, dw, dh = g.normal(0.0, 0.08, 4) * (w, h, w, h)
                boxes.append((x + dx, y + dy, max(w + dw, 1.0), max(h + dh, 1.0)))
                cats.append(a["category_id"] if g.random() > 0.1 else int(g.choice(COCO_CAT_IDS)))
                scores.append(g.beta(5, 2))
        boxes, cats, scores = boxes[:per_image], cats[:per_image], scores[:per_image]
        W, H = sizes[image_id]
        for _ in range(per_image - len(boxes)):
            w, h = g.uniform(4, W / 2), g.uniform(4, H / 2)
            boxes.append((g.uniform(0, W - w), g.uniform(0, H - h), w, h))
            cats.append(int(g.choice(COCO_CAT_IDS)))
            scores.append(g.beta(1, 4))
        results += [{"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 2) for v in b],
                     "score": round(float(s), 5)} for b, c, s in zip(boxes, cats, scores)]
    return results


def time_backend(backend: str, gt: dict, results: list[dict], repeat: int) -> tuple[float, float, list[float]]:
    """(median seconds of load, median seconds of evaluate + accumulate + summarize, the 12 stats)."""
    make_coco, COCOeval = coco_backend(backend)
    loads, evals = [], []
    for _ in range(repeat):
        gt_copy = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}  # loading annotates the dicts
        results_copy = [dict(r) for r in results]
        with contextlib.redirect_stdout(io.StringIO()):
            with common.stopwatch(None) as load:
                coco_gt = make_coco(gt_copy)
                evaluator = COCOeval(coco_gt, coco_gt.loadRes(results_copy), "bbox")
            with common.stopwatch(None) as evaluation:
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
        loads.append(load.seconds)
        evals.append(evaluation.seconds)
    return statistics.median(loads), statistics.median(evals), [float(v) for v in evaluator.stats[:12]]


def time_gather(results: list[dict], world: int) -> None:
    """Pickle each shard (images round-robin over ``world`` processes) and unpickle all of them, as
    ``all_gather_object`` does on every process."""
    shards = [[r for r in results if r["image_id"] % world == rank] for rank in range(world)]
    blobs, dumping = common.once(lambda: [pickle.dumps(shard) for shard in shards], None)
    gathered, loading = common.once(lambda: [r for blob in blobs for r in pickle.loads(blob)], None)
    assert len(gathered) == len(results)
    print(f"gather, {world} shards: pickling one shard {dumping / world * 1000:.1f} ms "
          f"({len(blobs[0]) / 2 ** 20:.1f} MiB), unpickling all {world} on each process "
          f"{loading * 1000:.1f} ms")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--backends", default="pycocotools,faster", help="comma-separated eval.backend values")
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend; the median is printed")
    parser.add_argument("--voc", action="store_true", help="also time fcoslab.evaluation.voc.voc_evaluate")
    parser.add_argument("--world", type=int, default=8, help="processes of the simulated gather; 0: skip")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    common.print_header(__file__, argv)
    print(f"# numpy {np.__version__}, pycocotools {version('pycocotools')}, "
          f"faster-coco-eval {version('faster-coco-eval')}")
    with common.stopwatch(None) as generation:
        gt = coco_like_ground_truth(args.images)
        results = coco_like_detections(gt)
    crowd = sum(a["iscrowd"] for a in gt["annotations"])
    print(f"data: {args.images} images, {len(gt['annotations'])} objects ({crowd} crowd), 80 categories, "
          f"{len(results)} detections (generated in {generation.seconds:.1f} s); median of {args.repeat}")
    timings = {}
    for backend in args.backends.split(","):
        timings[backend] = time_backend(backend, gt, results, args.repeat)
    reference = timings.get("pycocotools")
    for backend, (load, evaluate, stats) in timings.items():
        line = f"{backend:12s} load {load:7.2f} s   evaluate+accumulate+summarize {evaluate:7.2f} s"
        if reference and backend != "pycocotools":
            diff = max(abs(a - b) for a, b in zip(stats, reference[2]))
            total = sum(reference[:2]) / (load + evaluate)
            line += f"   speed-up {reference[1] / evaluate:5.1f}x (load+eval {total:.1f}x)"
            line += f"   max |stat - pycocotools| {diff:.1e}"
        print(line + f"   AP {stats[STAT_NAMES.index('AP')]:.4f}")
    if args.voc:
        from fcoslab.evaluation.voc import voc_evaluate

        voc, seconds = common.once(lambda: voc_evaluate(gt, results), None)
        print(f"{'fcoslab voc':12s} voc_evaluate {seconds:7.2f} s   mAP50 {voc['mAP50']:.4f}")
    if args.world > 1:
        time_gather(results, args.world)


if __name__ == "__main__":
    main(sys.argv[1:])
