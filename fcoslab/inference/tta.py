"""Test-time augmentation (``eval.tta``): the network sees each image in several views, and their
detections, mapped back to the original image's pixels, are merged by NMS.

The views: the evaluation size (``data.test_min_size``, or ``data.square_size`` where that is set) and each of
``eval.tta_sizes`` (the longer-side limit ``data.max_size`` scaled in proportion, :func:`view_data`), each also
flipped left-right with ``eval.tta_flip``. A view is an evaluation of its own:
its transforms are the evaluation transforms of its size (then the flip, on the resized image), and its
batches are planned by padded size as any evaluation's (:mod:`fcoslab.data.batching`), so an image's
detections still depend on nothing but the image. :func:`fcoslab.modeling.decode.decode` returns each
view's boxes in the original pixels of the image it saw; a flipped view's are mirrored back
(:func:`unflip`). :func:`merge_views` then runs one NMS over an image's detections of all views, class by
class (``decode.nms_thresh``; every class together with ``decode.class_agnostic_nms``), and keeps the
``decode.max_detections`` best, as detectron2's ``GeneralizedRCNNWithTTA`` merges its views.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .. import ops
from ..config import Config, DataConfig, DecodeConfig
from ..data.transforms import build_transforms


@dataclass(frozen=True)
class View:
    """One test-time view: the evaluation transforms of ``data`` (its test size), flipped left-right or not."""

    size: int  # the view's shorter side (or square side, for data.square_size configs), px
    flip: bool
    data: DataConfig


def tta_views(cfg: Config) -> list[View]:
    """The views of an evaluation, the plain one first (``cfg.data`` itself, unflipped); that one alone when
    ``eval.tta`` is off."""
    d = cfg.data
    base = d.square_size or d.test_min_size
    if not cfg.eval.tta:
        return [View(base, False, d)]
    sizes = list(dict.fromkeys((base, *cfg.eval.tta_sizes)))  # each size once, in order
    views = []
    for size in sizes:
        views += [View(size, flip, view_data(d, size)) for flip in ((False, True) if cfg.eval.tta_flip else (False,))]
    return views


def view_data(d: DataConfig, size: int) -> DataConfig:
    """The data section of a view of ``size``: ``d`` itself at its own test size; else the square side, or
    the shorter side with ``max_size`` scaled alike, so that the view is the evaluation's image scaled by
    ``size / data.test_min_size`` (a longer side capped at 128 px would otherwise cap a view of 160 too)."""
    if size == (d.square_size or d.test_min_size):
        return d
    if d.square_size:
        return dataclasses.replace(d, square_size=size)
    return dataclasses.replace(d, test_min_size=size, max_size=max(1, round(d.max_size * size / d.test_min_size)))


def view_config(cfg: Config, view: View) -> Config:
    """``cfg`` with the view's data section: what plans the view's batches."""
    return cfg if view.data is cfg.data else dataclasses.replace(cfg, data=view.data)


class HorizontalFlip:
    """Flip an ``(image, target)`` left-right, always (``v2.RandomHorizontalFlip(1.0)`` would still draw from
    the global generator): the image (3, h, w) and its ``boxes`` BoundingBoxes (M, 4) xyxy pixels."""

    def __call__(self, image, target):
        return F.horizontal_flip(image), dict(target, boxes=F.horizontal_flip(target["boxes"]))


def view_transforms(view: View) -> v2.Compose:
    """The evaluation transforms of a view: its size's, then the flip."""
    steps = [build_transforms(view.data, train=False)]
    return v2.Compose(steps + [HorizontalFlip()]) if view.flip else steps[0]


def view_dataset(dataset, view: View, plain: bool):
    """``dataset`` (a :class:`~fcoslab.data.CocoDetection`) as a view sees it: itself for the ``plain`` view,
    else a shallow copy with the view's transforms (the annotations and any image cache are shared)."""
    if plain:
        return dataset
    seen = copy.copy(dataset)
    seen.transforms = view_transforms(view)
    return seen


def unflip(det: dict[str, Tensor], width: float) -> dict[str, Tensor]:
    """Detections of a left-right flipped image in the unflipped image's pixels.

    Args:
        det: ``boxes`` float (N, 4) xyxy pixels of the flipped image, ``scores`` (N,), ``labels`` (N,).
        width: the image's width, px.
    Returns:
        the same keys, boxes mirrored: ``x1 = width - x2``, ``x2 = width - x1``.
    """
    boxes = det["boxes"]
    mirrored = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)  # (N, 4)
    return dict(det, boxes=mirrored)


def merge_views(dets: Sequence[dict[str, Tensor]], cfg: DecodeConfig) -> dict[str, Tensor]:
    """One image's detections from all its views, merged.

    Args:
        dets: per view ``boxes`` float (N_v, 4) xyxy original pixels, ``scores`` float (N_v,), ``labels``
            int64 (N_v,).
        cfg: ``nms_thresh``, ``class_agnostic_nms`` and ``max_detections`` of the merge.
    Returns:
        the kept detections (at most ``max_detections``), in decreasing score order.
    """
    boxes = torch.cat([d["boxes"].float() for d in dets])  # (N, 4)
    scores = torch.cat([d["scores"].float() for d in dets])  # (N,)
    labels = torch.cat([d["labels"] for d in dets])  # (N,)
    groups = torch.zeros_like(labels) if cfg.class_agnostic_nms else labels
    keep = ops.batched_nms(boxes, scores, groups, cfg.nms_thresh)[: cfg.max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
