"""Figures for the notebooks: dataset statistics, target assignment, mAP curves, PR curves, predictions
(the numbers come from :mod:`fcoslab.evaluation.reports`, the boxes from :mod:`fcoslab.draw`).

Every function returns a matplotlib Figure (nothing is shown or saved implicitly), so notebooks,
tests and scripts use them alike.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch

from ..evaluation.reports import assignment_for_image, class_counts, dataset_stats
from ..config import Config
from ..data import CocoDetection
from ..modeling.decode import one_class_per_object
from ..draw import class_colour, draw_boxes
from ..modeling.points import level_names
from ..evaluation.coco import precision_recall_curves



def _colour(label: int) -> tuple[float, float, float]:
    return tuple(c / 255 for c in class_colour(label))


def _image_grid(n: int, cols: int):
    rows = max(1, (n + cols - 1) // cols)
    return plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)


def _finish_grid(fig, axes):
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def show_samples(dataset: CocoDetection, n: int = 8, cols: int = 4, start: int = 0):
    """A grid of images with their ground-truth boxes and class names."""
    fig, axes = _image_grid(n, cols)
    for ax, i in zip(axes.flat, range(start, start + n)):
        info = dataset.images[i % len(dataset)]
        ax.imshow(dataset.load_image(i % len(dataset)))
        boxes, labels = dataset.targets[info["id"]]
        draw_boxes(ax, boxes, labels, dataset.index.names)
        ax.set_title(f"{info['file_name']} ({len(boxes)} objects)", fontsize=8)
    return _finish_grid(fig, axes)


def plot_dataset_stats(dataset: CocoDetection, cfg: Config):
    """Class counts; box size histogram with the FPN regress ranges; aspect ratios; objects per image.

    The size axis is max(w, h) / 2, the largest distance a point at the box centre regresses, which is
    what decides the FPN level a box is learnt on (the coloured bands).
    """
    stats = dataset_stats(dataset)
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.6))
    counts = class_counts(dataset)
    axes[0].bar(list(counts), list(counts.values()), color=[_colour(i) for i in range(len(counts))])
    axes[0].set_title("objects per class")
    axes[0].tick_params(axis="x", rotation=45)
    reach = np.maximum(stats["w"], stats["h"]) / 2
    top = max(float(reach.max()) if reach.size else 1.0, 1.0) * 1.1
    for level, ((lo, hi), name) in enumerate(zip(cfg.assign.regress_ranges, level_names(cfg.model.strides))):
        axes[1].axvspan(max(lo, 0), min(hi, top), color=f"C{level}", alpha=0.15, label=name)
    axes[1].hist(reach, bins=40, range=(0, top), color="0.3")
    axes[1].set_xlim(0, top)
    axes[1].set_title("max(w, h) / 2 and the FPN regress ranges")
    axes[1].legend(fontsize=7)
    aspect = np.log2(np.maximum(stats["w"], 1e-3) / np.maximum(stats["h"], 1e-3))
    axes[2].hist(aspect, bins=30, color="0.3")
    axes[2].set_title("aspect ratio, log2(w / h)")
    axes[3].hist(stats["per_image"], bins=np.arange(stats["per_image"].max(initial=0) + 2) - 0.5, color="0.3")
    axes[3].set_title("objects per image")
    fig.tight_layout()
    return fig


def plot_assignment(assigned: dict, names: Sequence[str]):
    """The positive points of each FPN level on the image, coloured by the class they learn."""
    L = len(assigned["level_sizes"])
    fig, axes = plt.subplots(1, L, figsize=(3.2 * L, 3.4))
    for level, ax in enumerate(np.atleast_1d(axes)):
        _draw_positives(ax, assigned, level, names)
    fig.tight_layout()
    return fig


def plot_assignment_methods(by_method: dict[str, list[dict]], names: Sequence[str],
                            levels: Optional[Sequence[int]] = None, title: str = ""):
    """Positives of several assignment methods side by side: one row per image and method, one column per
    level (``levels``: indices into the pyramid, all by default).

    Args:
        by_method: ``{method: [assignment per image]}``, as
            :func:`fcoslab.evaluation.reports.assignments_by_method` returns (the same images for each method).
        names: class names.
        title: above the grid (say where TAL's predictions came from).
    """
    methods = list(by_method)
    n_images = len(by_method[methods[0]])
    levels = list(range(len(by_method[methods[0]][0]["level_sizes"]))) if levels is None else list(levels)
    rows = [(i, m) for i in range(n_images) for m in methods]
    fig, axes = plt.subplots(len(rows), len(levels), figsize=(3.2 * len(levels), 3.4 * len(rows)), squeeze=False)
    for (i, method), row in zip(rows, axes):
        for level, ax in zip(levels, row):
            image = by_method[method][i].get("index", i)
            _draw_positives(ax, by_method[method][i], level, names, prefix=f"{method} · image {image} · ")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight() if title else 1))
    return fig


def _draw_positives(ax, assigned: dict, level: int, names: Sequence[str], prefix: str = "") -> None:
    """One level's points on the image: positives coloured by class, the others faint; dashed ground truth."""
    counts = np.cumsum([0] + [h * w for h, w in assigned["level_sizes"]])
    image = assigned["image"].permute(1, 2, 0).numpy()
    ax.imshow(image)
    draw_boxes(ax, assigned["gt_boxes"], assigned["gt_labels"], names, dashed=True)
    sl = slice(counts[level], counts[level + 1])
    pts, labels = assigned["points"][sl], assigned["labels"][sl]
    pos = labels >= 0
    ax.scatter(pts[~pos, 0], pts[~pos, 1], s=2, c="white", alpha=0.4)
    ax.scatter(pts[pos, 0], pts[pos, 1], s=14, c=[_colour(int(l)) for l in labels[pos]], edgecolors="black", lw=0.5)
    ax.set_title(f"{prefix}{_assigned_level_names(assigned)[level]} (stride {int(assigned['strides'][counts[level]])}): "
                 f"{int(pos.sum())} positives", fontsize=8)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.axis("off")


def plot_target_maps(assigned: dict, level: int = 0):
    """The l, t, r, b and center-ness targets of one level as images (0 where no box is assigned)."""
    counts = np.cumsum([0] + [h * w for h, w in assigned["level_sizes"]])
    h, w = assigned["level_sizes"][level]
    sl = slice(counts[level], counts[level + 1])
    maps = [assigned["ltrb"][sl, i].reshape(h, w) for i in range(4)] + [assigned["centerness"][sl].reshape(h, w)]
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.2))
    for ax, m, title in zip(axes, maps, ["left", "top", "right", "bottom", "center-ness"]):
        im = ax.imshow(m.numpy(), cmap="viridis")
        ax.set_title(f"{_assigned_level_names(assigned)[level]} {title}", fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def _assigned_level_names(assigned: dict) -> list[str]:
    """Level names of :func:`fcoslab.evaluation.reports.assignment_for_image`'s output, from each level's stride."""
    starts = np.cumsum([0] + [h * w for h, w in assigned["level_sizes"]])[:-1]
    return level_names([int(assigned["strides"][i]) for i in starts])


def plot_positives_per_level(counts_by_setting: dict[str, np.ndarray], strides: Sequence[int] = (8, 16, 32, 64, 128)):
    """Positive points per pyramid level (``strides``: the model's, ``model.strides``) for each setting."""
    names = level_names(strides)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / max(len(counts_by_setting), 1)
    for i, (name, counts) in enumerate(counts_by_setting.items()):
        ax.bar(np.arange(len(counts)) + i * width, counts, width, label=name)
    ax.set_xticks(np.arange(len(names)) + width * (len(counts_by_setting) - 1) / 2, names)
    ax.set_ylabel("positive points")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_map_curves(histories: dict[str, list[dict]], keys: Sequence[str] = ("AP", "AP50", "AP75")):
    """Per-epoch metrics of one or several runs (one panel per metric, one line per run): COCO's by
    default, any history key (``voc_mAP50``, ...) on request; a run without a key has no line there."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in histories.items():
            points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_ablation(summary: dict, keys: Sequence[str] = ("AP", "AP50", "AP75")):
    """An ablation's final metrics (``fcoslab ablate``'s summary): one panel per metric, each seed's run a
    dot, each variant's mean a bar with its standard deviation over seeds."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    names = [v["variant"] for v in summary["variants"]]
    for ax, key in zip(axes[0], keys):
        for i, v in enumerate(summary["variants"]):
            s = v["metrics"][key]
            if s["mean"] is None:
                continue
            ax.bar(i, s["mean"], yerr=s["std"], color=_colour(i), alpha=0.35, capsize=4)
            ax.plot([i] * len(s["values"]), s["values"], "o", color=_colour(i))
        ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
        ax.set_title(f"{key} ({len(summary['seeds'])} seeds)")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_loss_curves(histories: dict[str, list[dict]]):
    parts = ("loss", "loss_cls", "loss_box", "loss_centerness")
    return plot_map_curves(histories, keys=parts)


def plot_pr_curves(evaluator, names: Sequence[str], iou: float = 0.5):
    """Precision-recall curves per class at one IoU threshold, from an accumulated COCOeval."""
    recall, precision = precision_recall_curves(evaluator, iou)  # (R,), (R, K)
    fig, ax = plt.subplots(figsize=(5, 4))
    for k, name in enumerate(names):
        p = precision[:, k]
        if (p > -1).any():
            ax.plot(recall, np.where(p > -1, p, np.nan), label=name, color=_colour(k))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall at IoU {iou:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion: dict):
    """The confusion matrix of :func:`fcoslab.evaluation.reports.error_report` (``confusion``), counts in the cells;
    the last row holds detections of no object, the last column objects nobody detected."""
    matrix, names = np.asarray(confusion["matrix"]), confusion["names"]
    size = 1.6 + 0.55 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                    color="white" if shown.norm(np.log1p(n)) > 0.6 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"confusion at IoU {confusion['iou']:.2f}, score >= {confusion['score']:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_error_breakdown(errors: dict):
    """TIDE's view of :func:`fcoslab.evaluation.reports.error_report` (``errors``): how much AP50 each error type
    would recover if it were fixed alone (bars), with how many of each there are (labels)."""
    kinds = list(errors["dAP"])
    fig, ax = plt.subplots(figsize=(6, 3))
    bars = ax.bar(kinds, [100 * (errors["dAP"][k] or 0) for k in kinds], color=[_colour(i) for i in range(len(kinds))])
    for bar, kind in zip(bars, kinds):
        ax.annotate(f"{errors['counts'][kind]}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("AP50 recovered (points)")
    ax.set_title(f"errors (TIDE): AP50 {100 * (errors['AP50'] or 0):.1f}; counts above the bars", fontsize=9)
    fig.tight_layout()
    return fig


def show_predictions(predictor, dataset: CocoDetection, n: int = 8, cols: int = 4, score: float = 0.3,
                     one_class: bool = True):
    """Predictions (solid, with scores) over ground truth (dashed) for the first ``n`` images; with
    ``one_class``, only the best of overlapping boxes of different classes is drawn."""
    fig, axes = _image_grid(n, cols)
    images = [dataset.load_image(i) for i in range(min(n, len(dataset)))]
    for ax, image, i, det in zip(axes.flat, images, range(n), predictor(images)):
        if one_class:
            det = one_class_per_object(det, predictor.cfg.decode.nms_thresh)
        ax.imshow(image)
        boxes, labels = dataset.targets[dataset.images[i]["id"]]
        draw_boxes(ax, boxes, labels, dataset.index.names, dashed=True)
        keep = det["scores"] >= score
        draw_boxes(ax, det["boxes"][keep], det["labels"][keep], predictor.class_names, scores=det["scores"][keep])
        ax.set_title(f"{dataset.images[i]['file_name']}: {int(keep.sum())} detections", fontsize=8)
    return _finish_grid(fig, axes)


def plot_detections(images: Sequence, detections: Sequence[dict], names: Sequence[str], score: float = 0.3,
                    cols: int = 4):
    """Decoded detections (``boxes`` in each image's own pixels, ``scores``, ``labels``) on the images (PIL,
    or float (3, h, w) in [0, 1]), those from ``score`` up."""
    fig, axes = _image_grid(len(images), cols)
    for ax, image, det in zip(axes.flat, images, detections):
        ax.imshow(image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else image)
        keep = det["scores"] >= score
        draw_boxes(ax, det["boxes"][keep], det["labels"][keep], names, scores=det["scores"][keep])
        ax.set_title(f"{int(keep.sum())} detections from score {score}", fontsize=8)
    return _finish_grid(fig, axes)


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes, and closed."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    plt.close(fig)
    return buffer.getvalue()


def assignment_widget(dataset: CocoDetection, cfg: Config):
    """Sliders for the image and the center-sampling radius (0 = off) over :func:`plot_assignment`.

    The figure is shown as an image widget whose bytes are replaced on each change: no captured output
    (an ``Output`` widget's capture can leave a headless notebook runner waiting for ever)."""
    import ipywidgets as W

    picture = W.Image(format="png")
    index = W.IntSlider(value=0, min=0, max=len(dataset) - 1, description="image")
    radius = W.FloatSlider(value=cfg.assign.center_radius or 0.0, min=0.0, max=4.0, step=0.25,
                           description="radius (0 = off)")

    def redraw(_=None):
        c = cfg.replace(**{"assign.center_radius": radius.value or None})
        picture.value = figure_png(plot_assignment(assignment_for_image(dataset, index.value, c),
                                                   dataset.index.names))

    index.observe(redraw, names="value")
    radius.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([index, radius]), picture])
