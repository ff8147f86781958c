"""One batch through FCOS, step by step, for notebook 00: images -> model outputs per level -> points ->
targets (positives per level) -> loss terms -> decoded boxes. Each step is the library's own function
(:func:`fcoslab.modeling.model.build_model`, :func:`fcoslab.modeling.targets.assign_targets`, :func:`fcoslab.modeling.loss.fcos_loss`,
:func:`fcoslab.modeling.decode.decode`); this module only collects what they return."""

from __future__ import annotations

from typing import Optional

import torch

from ..config import Config
from ..data import CocoDetection, build_transforms, collate_fn, float_pixels
from ..modeling.decode import decode
from ..modeling.loss import fcos_loss
from ..modeling.model import build_model
from ..modeling.points import level_names
from ..runfolder import load_checkpoint
from ..modeling.targets import assign_targets


def walk_batch(cfg: Config, dataset: CocoDetection, n: int = 2, run: Optional[str] = None, seed: int = 0) -> dict:
    """The first ``n`` images of ``dataset`` (evaluation transforms) through a model of ``cfg``: random
    weights seeded by ``seed``, or the weights of ``run`` (a run folder or checkpoint) when given.

    Returns a dict: ``batch`` (:func:`fcoslab.data.collate`'s), ``levels`` (one row per level: name,
    stride, (h, w), points, positives), ``outputs`` (the model's dict), ``shapes`` (each output's shape),
    ``targets`` (:func:`assign_targets`, by ``assign.method``), ``losses`` (each term, float), ``num_pos`` and ``detections``
    (:func:`decode`, per image).
    """
    transform = build_transforms(cfg.data, train=False)
    batch = collate_fn(cfg.data, cfg.model.size_divisibility)([transform(*dataset.raw_item(i)) for i in range(min(n, len(dataset)))])
    torch.manual_seed(seed)
    model = build_model(cfg.model, dataset.index.num_classes)
    if run is not None:
        model.load_state_dict(load_checkpoint(run)["model"])
    model.eval()
    with torch.no_grad():
        outputs = model(batch["images"])
    targets = assign_targets(outputs, batch["gt_boxes"], batch["gt_labels"], cfg.assign, batch["image_sizes"])
    terms, stats = fcos_loss(outputs, targets, cfg.loss)
    detections = decode(outputs, batch["image_sizes"], batch["orig_sizes"], cfg.decode)
    positive = targets["labels"] >= 0  # (B, P)
    levels, start = [], 0
    for name, stride, (h, w) in zip(level_names(cfg.model.strides), cfg.model.strides, outputs["level_sizes"]):
        levels.append({"level": name, "stride": stride, "size": (h, w), "points": h * w,
                       "positives": positive[:, start:start + h * w].sum(1).tolist()})
        start += h * w
    shapes = {k: tuple(v.shape) for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    return {"batch": batch, "levels": levels, "outputs": outputs, "shapes": shapes, "targets": targets,
            "losses": {k: float(v) for k, v in terms.items()}, "num_pos": float(stats["num_pos"]),
            "detections": detections}


def levels_text(walk: dict) -> str:
    """:func:`walk_batch`'s per-level table as aligned text."""
    lines = [f"{'level':<6}{'stride':>7}{'size (h, w)':>14}{'points':>8}  positives per image"]
    for row in walk["levels"]:
        lines.append(f"{row['level']:<6}{row['stride']:>7}{str(row['size']):>14}{row['points']:>8}  {row['positives']}")
    return "\n".join(lines)


def image_of(walk: dict, i: int = 0) -> torch.Tensor:
    """Image ``i`` of the batch as float (3, h, w) in [0, 1], without its padding."""
    h, w = walk["batch"]["image_sizes"][i].tolist()
    return float_pixels(walk["batch"]["images"][i].as_subclass(torch.Tensor))[:, :h, :w]


def assignment_of(walk: dict, i: int = 0) -> dict:
    """Image ``i``'s targets in the form :func:`fcoslab.viz.plots.plot_assignment` draws."""
    labels = walk["batch"]["gt_labels"][i]
    valid = labels >= 0
    outputs = walk["outputs"]
    return {"image": image_of(walk, i), "gt_boxes": walk["batch"]["gt_boxes"][i][valid], "gt_labels": labels[valid],
            "points": outputs["points"], "strides": outputs["strides"], "level_sizes": outputs["level_sizes"],
            "labels": walk["targets"]["labels"][i]}
