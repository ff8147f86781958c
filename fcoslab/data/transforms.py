"""Augmentation (torchvision.transforms.v2 on tv_tensors) and batching with padding."""

from __future__ import annotations

import math
from functools import partial

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..config import DataConfig

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the model's normalisation


def resized_shape(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Shape after scaling the shorter side to ``min_size`` with the longer side at most ``max_size``."""
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


class ResizeShortest:
    """Resize keeping aspect: shorter side drawn from ``min_sizes`` (scale jitter), longer <= ``max_size``.

    ``method="antialias"`` resizes the uint8 image with antialiasing to :func:`resized_shape`;
    ``"interpolate"`` is torchvision's detection transform, exactly: a float image, bilinear without
    antialiasing, sides ``floor(side * scale)`` (``F.interpolate`` with ``recompute_scale_factor``).
    """

    def __init__(self, min_sizes: tuple[int, ...] | int, max_size: int, method: str = "antialias"):
        self.min_sizes = (min_sizes,) if isinstance(min_sizes, int) else tuple(min_sizes)
        self.max_size, self.method = max_size, method

    def _scale(self, h: int, w: int, pick: int) -> float:
        return min(float(pick) / min(h, w), float(self.max_size) / max(h, w))

    def output_shape(self, h: int, w: int, pick: int) -> tuple[int, int]:
        """(h, w) of an (h, w) image after this resize with shorter side ``pick``, without resizing it
        (``F.interpolate`` with ``recompute_scale_factor`` makes its sides ``floor(side * scale)``)."""
        if self.method == "interpolate":
            scale = self._scale(h, w, pick)
            return math.floor(h * scale), math.floor(w * scale)
        return resized_shape(h, w, pick, self.max_size)

    def __call__(self, image, target):
        h, w = image.shape[-2:]
        pick = self.min_sizes[int(torch.randint(len(self.min_sizes), ()))] if len(self.min_sizes) > 1 else self.min_sizes[0]
        if self.method == "interpolate":
            pixels = torch.nn.functional.interpolate(image[None].as_subclass(torch.Tensor),
                                                     scale_factor=self._scale(h, w, pick), mode="bilinear",
                                                     recompute_scale_factor=True, align_corners=False)[0]
            image = tv_tensors.wrap(pixels, like=image)
            size = list(image.shape[-2:])
        else:
            size = list(self.output_shape(h, w, pick))
            if size != [h, w]:
                image = F.resize(image, size, antialias=True)
        if size != [h, w]:
            target = dict(target, boxes=F.resize(target["boxes"], size))
        return image, target


class DropEmptyBoxes:
    """Drop the boxes (and their labels) of zero width or height, or of area under ``min_area`` px^2, and keep
    every other box however small: the rule of torchvision's detection references (``data.keep_small_boxes``),
    where ``v2.SanitizeBoundingBoxes`` drops boxes under 1 px."""

    def __init__(self, min_area: float = 0.0):
        self.min_area = min_area

    def __call__(self, image, target):
        boxes = target["boxes"]  # (M, 4) xyxy BoundingBoxes
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = ((w > 0) & (h > 0) & (w * h >= self.min_area)).as_subclass(torch.Tensor)  # (M,)
        return image, dict(target, boxes=tv_tensors.wrap(boxes[keep], like=boxes), labels=target["labels"][keep])


def build_transforms(cfg: DataConfig, train: bool) -> v2.Compose:
    """The resize (shortest side, or ``square_size``), flips and colour jitter for training, and boxes of at
    least 1 px (any positive size with ``keep_small_boxes``; and ``min_box_area`` in training). Boxes are
    clamped to the resized image, whose right and bottom edges ``side * float32(new / old)`` can overshoot
    by a rounding error (a box touching the border was then dropped as outside the image). Images stay
    uint8, a quarter of the bytes that loader workers hand over and batches pad, and the model turns them
    into floats on its device (:func:`float_pixels`); ``resize=interpolate`` resizes, and so returns, float
    pixels in [0, 1]."""
    if cfg.square_size:
        S = cfg.square_size
        steps = [v2.RandomResizedCrop((S, S), scale=(0.3, 1.0), antialias=True) if train
                 else v2.Resize((S, S), antialias=True)]
    else:
        steps = [ResizeShortest(cfg.min_size if train else cfg.test_min_size, cfg.max_size, cfg.resize)]
    steps.append(v2.ClampBoundingBoxes())
    if cfg.resize == "interpolate":  # torchvision resizes the float image
        steps.insert(0, v2.ToDtype(torch.float32, scale=True))
    if train and cfg.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if train and cfg.color_jitter > 0:
        j = cfg.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4)))
    if cfg.keep_small_boxes:
        steps.append(DropEmptyBoxes(cfg.min_box_area if train else 0.0))
    else:
        small = {"min_area": cfg.min_box_area} if train and cfg.min_box_area > 1 else {}  # torchvision >= 0.20
        steps.append(v2.SanitizeBoundingBoxes(min_size=1.0, **small))
    return v2.Compose(steps)


def eval_image_shape(h: int, w: int, cfg: DataConfig) -> tuple[int, int]:
    """(h, w) that the evaluation transforms (``build_transforms(cfg, train=False)``) give an image of
    (h, w) pixels, computed without the image (to plan evaluation batches, :mod:`fcoslab.data.batching`)."""
    if cfg.square_size:
        return cfg.square_size, cfg.square_size
    return ResizeShortest(cfg.test_min_size, cfg.max_size, cfg.resize).output_shape(h, w, cfg.test_min_size)


def float_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 in [0, 1] exactly as ``ToDtype(float32, scale=True)`` makes them;
    float pixels pass through."""
    return F.to_dtype_image(images, torch.float32, scale=True) if images.dtype == torch.uint8 else images


def collate(batch: list, size_divisibility: int = 128, pad_with_mean: bool = False) -> dict:
    """Pad a list of ``(image (3, h, w) uint8 or float in [0, 1], target)`` into one batch.

    Returns a dict with ``images`` (B, 3, H, W) of the images' dtype (float when ``pad_with_mean``) padded
    at the bottom and right to a multiple of ``size_divisibility`` with zeros (or with :data:`IMAGENET_MEAN`,
    zeros after the model's normalisation); ``image_sizes`` int64 (B, 2) the (h, w) of each image before
    padding; ``orig_sizes`` int64 (B, 2) the (h, w) of the original files; ``gt_boxes`` float (B, M, 4)
    xyxy pixels in the resized image and ``gt_labels`` int64 (B, M), padded with -1 labels as
    :func:`pad_targets` does; ``image_ids`` list of int.
    """
    images = [img.as_subclass(torch.Tensor) for img, _ in batch]
    if pad_with_mean:
        images = [float_pixels(im) for im in images]
    hs, ws = [im.shape[-2] for im in images], [im.shape[-1] for im in images]
    d = size_divisibility
    H, W = math.ceil(max(hs) / d) * d, math.ceil(max(ws) / d) * d
    out = images[0].new_zeros((len(images), 3, H, W))
    if pad_with_mean:
        out += torch.tensor(IMAGENET_MEAN, dtype=out.dtype).view(1, 3, 1, 1)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    gt_boxes, gt_labels = pad_targets([t["boxes"].as_subclass(torch.Tensor).float() for _, t in batch],
                                      [t["labels"] for _, t in batch])
    return {
        "images": out.as_subclass(torch.Tensor),
        "image_sizes": torch.tensor(list(zip(hs, ws)), dtype=torch.int64),
        "orig_sizes": torch.stack([t["orig_size"] for _, t in batch]),
        "gt_boxes": gt_boxes,
        "gt_labels": gt_labels,
        "image_ids": [int(t["image_id"]) for _, t in batch],
    }


def collate_fn(data: DataConfig, size_divisibility: int):
    """:func:`collate` padding to multiples of ``size_divisibility`` (the model's: ``cfg.model.size_divisibility``),
    with the mean pixel where ``data.pad_with_mean``."""
    return partial(collate, size_divisibility=size_divisibility, pad_with_mean=data.pad_with_mean)


def pad_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image targets into padded tensors.

    Returns:
        gt_boxes float (B, M, 4) xyxy pixels and gt_labels int64 (B, M) with -1 in padded slots,
        M the largest number of boxes in the batch (0 if no image has one).
    """
    B, M = len(boxes), max((len(b) for b in boxes), default=0)
    device = boxes[0].device if boxes else "cpu"
    gt_boxes = torch.zeros((B, M, 4), dtype=torch.float32, device=device)
    gt_labels = torch.full((B, M), -1, dtype=torch.int64, device=device)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        gt_boxes[i, : len(b)] = b
        gt_labels[i, : len(l)] = l
    return gt_boxes, gt_labels
