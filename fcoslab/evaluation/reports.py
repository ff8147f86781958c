"""Numbers behind the notebooks' figures: dataset statistics, data problems, the targets of one image (under
each assignment method), positives per level, per-class AP. Nothing here draws (:mod:`fcoslab.viz.plots` does)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..config import Config
from ..data import (CocoDetection, build_transforms, check_coco_dict, collate_fn, dataset_image_files,
                    find_bad_images, float_pixels)
from ..errors import FcoslabError
from ..modeling.model import build_model
from ..modeling.points import level_sizes, make_points, point_input_size
from ..modeling.targets import assign_targets
from ..runfolder import load_checkpoint


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


def data_report(ann_file: str | Path, image_dir: str | Path, data: Optional[dict] = None,
                deep: bool = False) -> tuple[str, list[str], list[tuple[Path, str]]]:
    """What ``fcoslab check-data`` prints: a summary line, the problems found in an annotation file as
    sentences (empty: none found), and the images that cannot be used, as ``(file, reason)``: every image
    is opened (its header and the end of the file, or a full decode with ``deep``:
    :mod:`fcoslab.data.image_check`). A file that cannot be used raises FcoslabError.
    ``data``: a COCO dict already in memory (e.g. converted from VOC), then ``ann_file`` only names it."""
    ds = CocoDetection(ann_file, image_dir, data=data)
    bad_images = find_bad_images(dataset_image_files(ds), deep=deep)
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
               f"classes; clipped {r['clipped']}, dropped {r['dropped']} degenerate, skipped {r['crowd']} crowd; "
               f"{len(ds) - len(bad_images)} images {'decoded' if deep else 'opened'} without a problem")
    return summary, problems, bad_images


def assignment_for_image(dataset: CocoDetection, index: int, cfg: Config, model: Optional[torch.nn.Module] = None) -> dict:
    """Targets of one training image at its network resolution (no augmentation), by ``cfg.assign.method``.

    ``model``: the network whose predictions TAL ranks (run in eval mode, without gradients, on the image
    padded as in training); needed for ``assign.method=tal`` only, unused otherwise.

    Returns a dict: ``image`` float (3, h, w) in [0, 1], ``gt_boxes`` (M, 4), ``gt_labels`` (M,), ``points``
    (P, 2), ``strides`` (P,), ``level_sizes``, and the :func:`assign_targets` entries of this image
    (``matched``, ``labels``, ``ltrb``, ``centerness``, per point).
    """
    image, target = build_transforms(cfg.data, train=False)(*dataset.raw_item(index))
    h, w = image.shape[-2:]
    d = cfg.model.size_divisibility
    H, W = -(-h // d) * d, -(-w // d) * d
    sizes = level_sizes(H, W, cfg.model.strides)
    points, strides = make_points(sizes, cfg.model.strides, cfg.model.point_offset, "cpu",
                                  point_input_size(cfg.model, H, W))
    outputs = {"points": points, "strides": strides, "level_sizes": sizes}
    if cfg.assign.method == "tal":
        if model is None:
            raise FcoslabError("assign.method=tal ranks points by a model's predictions: give assignment_for_image "
                               "a model (an untrained build_model(cfg.model, num_classes) will do)")
        outputs = _model_outputs(model, collate_fn(cfg.data, cfg.model.size_divisibility)([(image, target)])["images"])
    boxes = target["boxes"].as_subclass(torch.Tensor).float()
    t = assign_targets(outputs, boxes[None], target["labels"][None], cfg.assign, torch.tensor([[h, w]]))
    return {"image": float_pixels(image.as_subclass(torch.Tensor)), "gt_boxes": boxes, "gt_labels": target["labels"],
            "points": outputs["points"], "strides": outputs["strides"], "level_sizes": outputs["level_sizes"],
            **{k: v[0] for k, v in t.items()}}


@torch.no_grad()
def _model_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict:
    """The model's raw outputs of a padded batch, in eval mode, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    outputs = model(images.to(device))
    return {k: v.float().cpu() if isinstance(v, torch.Tensor) else v for k, v in outputs.items()}


def assignments_by_method(dataset: CocoDetection, indices: Sequence[int], cfg: Config,
                          methods: Sequence[str] = ("fcos", "atss", "tal"), run: Optional[str] = None,
                          seed: int = 0) -> dict[str, list[dict]]:
    """:func:`assignment_for_image` of the images ``indices`` under each ``assign.method`` in ``methods``.

    TAL ranks points by predictions: those of the model of ``run`` (a run folder or checkpoint trained with
    ``cfg.model``), or, without ``run``, of an untrained model of ``cfg.model`` seeded by ``seed`` (its
    predicted boxes are tiny and random, so TAL's choice among the points inside a box is nearly arbitrary).

    Returns ``{method: [assignment per image, in the order of indices, with its ``index``]}``.
    """
    model = None
    if "tal" in methods:
        torch.manual_seed(seed)
        model = build_model(cfg.model, dataset.index.num_classes)
        if run is not None:
            model.load_state_dict(load_checkpoint(run)["model"])
    return {m: [{**assignment_for_image(dataset, i, cfg.replace(**{"assign.method": m}), model), "index": i}
                for i in indices] for m in methods}


def positives_per_level(dataset: CocoDetection, cfg: Config, max_images: Optional[int] = None) -> np.ndarray:
    """Number of positive points on each FPN level, summed over (up to ``max_images``) images: (L,)."""
    totals = np.zeros(len(cfg.model.strides), dtype=np.int64)
    for i in range(min(len(dataset), max_images or len(dataset))):
        a = assignment_for_image(dataset, i, cfg)
        counts = np.cumsum([0] + [h * w for h, w in a["level_sizes"]])
        pos = (a["labels"] >= 0).numpy()
        totals += [pos[counts[l]:counts[l + 1]].sum() for l in range(len(totals))]
    return totals


def per_class_table(evaluation) -> dict[str, dict[str, Optional[float]]]:
    """Per-class AP of an :class:`fcoslab.evaluation.coco.Evaluation`, by class name: COCO's ``AP`` (IoU .50:.95)
    and ``AP50``, and VOC's ``voc_AP50`` (all-point) and ``voc_AP50_11pt`` where computed. None: no
    ground truth of that class (or no detections at all)."""
    from .coco import per_class_ap

    def rounded(v):
        return None if v is None or np.isnan(v) else round(float(v), 4)

    table = {name: {} for name in evaluation.class_names}
    if evaluation.stats:
        if evaluation.evaluator is not None:
            coco = [per_class_ap(evaluation.evaluator, iou) for iou in (None, 0.5)]
        else:  # no detections at all: 0 where a class has ground truth
            cats = sorted(evaluation.gt["categories"], key=lambda c: c["id"])
            present = {a["category_id"] for a in evaluation.gt["annotations"] if not a.get("iscrowd")}
            coco = [np.array([0.0 if c["id"] in present else np.nan for c in cats])] * 2
        for k, name in enumerate(evaluation.class_names):
            table[name].update(AP=rounded(coco[0][k]), AP50=rounded(coco[1][k]))
    if evaluation.voc is not None:
        for name, row in evaluation.voc["per_class"].items():
            table[name].update(voc_AP50=rounded(row["AP50"]), voc_AP50_11pt=rounded(row["AP50_11pt"]))
    return table


def per_class_text(table: dict[str, dict]) -> str:
    """:func:`per_class_table` as aligned text, one class a line."""
    keys = list(next(iter(table.values()), {}))
    width = max([len("class")] + [len(n) for n in table])
    lines = [f"{'class':<{width}}  " + "  ".join(f"{k:>13}" for k in keys)]
    for name, row in table.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{'-' if row[k] is None else f'{row[k]:.3f}':>13}" for k in keys))
    return "\n".join(lines)


def error_report(evaluation, iou: float = 0.5, score: float = 0.3) -> dict:
    """Why AP is low, for an :class:`fcoslab.evaluation.coco.Evaluation`: the confusion matrix at ``iou`` and
    ``score`` (rows: ground truth, columns: prediction, ``background`` last) and the TIDE error breakdown
    (:func:`fcoslab.evaluation.errors.error_breakdown`). JSON-able."""
    from .errors import confusion_matrix, error_breakdown

    matrix, names = confusion_matrix(evaluation.gt, evaluation.results, iou=iou, score=score)
    return {"confusion": {"iou": iou, "score": score, "names": names, "matrix": matrix.tolist()},
            "errors": error_breakdown(evaluation.gt, evaluation.results, iou_fg=iou)}
