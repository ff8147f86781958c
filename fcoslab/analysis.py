"""Numbers behind the notebooks' figures: dataset statistics, data problems, the targets of one image,
positives per level, per-class AP. Nothing here draws (:mod:`fcoslab.plots` does)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .config import Config
from .datasets import CocoDetection, build_transforms, check_coco_dict
from .points import level_sizes, make_points, point_input_size
from .targets import fcos_targets


def dataset_stats(dataset: CocoDetection) -> dict[str, np.ndarray]:
    """Per-box widths, heights, labels and per-image object counts of the prepared targets."""
    boxes = [b for b, _ in dataset.targets.values()]
    labels = [l for _, l in dataset.targets.values()]
    all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    return {"w": all_boxes[:, 2] - all_boxes[:, 0], "h": all_boxes[:, 3] - all_boxes[:, 1],
            "labels": np.concatenate(labels) if labels else np.zeros(0, np.int64),
            "per_image": np.array([len(b) for b in boxes])}


def class_counts(dataset: CocoDetection) -> dict[str, int]:
    counts = Counter(dataset_stats(dataset)["labels"].tolist())
    return {name: counts.get(i, 0) for i, name in enumerate(dataset.index.names)}


def data_report(ann_file: str | Path, image_dir: str | Path, data: Optional[dict] = None) -> tuple[str, list[str]]:
    """What ``fcoslab check-data`` prints: a summary line and the problems found in an annotation file and
    its images, as sentences (empty: none found). A file that cannot be used raises FcoslabError.
    ``data``: a COCO dict already in memory (e.g. converted from VOC), then ``ann_file`` only names it."""
    ds = CocoDetection(ann_file, image_dir, data=data)
    problems = []
    r = ds.box_report
    if r["clipped"]:
        problems.append(f"{r['clipped']} boxes reach outside their image and were clipped")
    if r["dropped"]:
        problems.append(f"{r['dropped']} boxes have non-positive width or height and were dropped")
    if r["crowd"]:
        problems.append(f"{r['crowd']} crowd boxes are excluded from the targets")
    stats = dataset_stats(ds)
    empty = int((stats["per_image"] == 0).sum())
    if empty:
        problems.append(f"{empty} of {len(ds)} images have no objects (kept as negatives)")
    tiny = int((np.maximum(stats["w"], stats["h"]) < 4).sum())
    if tiny:
        problems.append(f"{tiny} boxes are smaller than 4 px on their longer side")
    unused = set(ds.index.names) - {ds.index.names[i] for i in set(stats["labels"].tolist())}
    if unused:
        problems.append(f"categories without any box: {', '.join(sorted(unused))}")
    raw = check_coco_dict(ds.data, str(ann_file))
    if len({im["file_name"] for im in raw["images"]}) != len(raw["images"]):
        problems.append("some file_name values are listed more than once")
    n_boxes = sum(len(b) for b, _ in ds.targets.values())
    summary = (f"{ann_file}: {len(ds)} images ({empty} without objects), {n_boxes} boxes, {ds.index.num_classes} "
               f"classes; clipped {r['clipped']}, dropped {r['dropped']} degenerate, skipped {r['crowd']} crowd")
    return summary, problems


def assignment_for_image(dataset: CocoDetection, index: int, cfg: Config) -> dict:
    """Targets of one training image at its network resolution (no augmentation).

    Returns a dict: ``image`` float (3, h, w) in [0, 1], ``gt_boxes`` (M, 4), ``gt_labels`` (M,), ``points``
    (P, 2), ``strides`` (P,), ``level_sizes``, and the :func:`fcos_targets` entries of this image
    (``matched``, ``labels``, ``ltrb``, ``centerness``, per point).
    """
    image, target = build_transforms(cfg.data, train=False)(*dataset.raw_item(index))
    h, w = image.shape[-2:]
    d = cfg.model.size_divisibility
    H, W = -(-h // d) * d, -(-w // d) * d
    sizes = level_sizes(H, W, cfg.model.strides)
    points, strides = make_points(sizes, cfg.model.strides, cfg.model.point_offset, "cpu",
                                  point_input_size(cfg.model, H, W))
    boxes = target["boxes"].as_subclass(torch.Tensor).float()
    t = fcos_targets(points, strides, sizes, boxes[None], target["labels"][None], cfg.assign)
    return {"image": image.as_subclass(torch.Tensor), "gt_boxes": boxes, "gt_labels": target["labels"], "points": points,
            "strides": strides, "level_sizes": sizes, **{k: v[0] for k, v in t.items()}}


def positives_per_level(dataset: CocoDetection, cfg: Config, max_images: Optional[int] = None) -> np.ndarray:
    """Number of positive points on each FPN level, summed over (up to ``max_images``) images: (L,)."""
    totals = np.zeros(len(cfg.model.strides), dtype=np.int64)
    for i in range(min(len(dataset), max_images or len(dataset))):
        a = assignment_for_image(dataset, i, cfg)
        counts = np.cumsum([0] + [h * w for h, w in a["level_sizes"]])
        pos = (a["labels"] >= 0).numpy()
        totals += [pos[counts[l]:counts[l + 1]].sum() for l in range(len(totals))]
    return totals


def per_class_table(evaluator, names: Sequence[str]) -> dict[str, float]:
    """AP@[.5:.95] of each class by name, from an accumulated COCOeval."""
    from .evaluate import per_class_ap

    return {name: round(float(ap), 4) for name, ap in zip(names, per_class_ap(evaluator))}
