"""Inference batches of images that share one padded size, so that an image's detections do not depend on
the images it is batched with.

:func:`collate` pads every image of a batch to the largest of the batch. The network then sees more
padding below and to the right of a smaller image than it would alone, and its receptive field carries
that padding inwards: an image's detections changed with ``eval.batch_size``, with the number of
processes and with the dataset's order (torchvision's R-50 FCOS on 640x480, 480x640, 500x375 and 1000x300
images: the first image's top score 0.902 in a batch of 8 against 0.838 alone, no box in common).

The choices: one image a batch, as the reference evaluations of torchvision, detectron2 and
mmdetection run (and so the published APs), gives up batching; a mask of the padding would change the
network. Here images are grouped by padded size instead: each image is padded only to its own multiple
of the size divisibility, exactly as in a batch of one, and only images of the same padded size share a
batch. The network's input for an image is then the same whatever the batch, and a set where every
image pads to one size (the shapes set, ``data.square_size``) is batched in dataset order as before.

Equal inputs are not yet equal results: on a CPU, PyTorch picks convolution and GroupNorm kernels, and
cuts their work among threads, by the batch's size, and vectorises elementwise ops over the whole
batch. :func:`fcoslab.inference.predictor.batch_invariant_layers` and :func:`fcoslab.modeling.decode.image_scores` make
each image's detections those it has alone, bit for bit (float32 and bfloat16, at one thread count).

The grouping is planned before any pixel is read, from each image's stored size (the COCO json's
``width`` and ``height``, else the file's header) and :func:`~fcoslab.data.transforms.eval_image_shape`.
The plan depends only on the dataset and the config, so every process of a sharded evaluation shares
it; where a file's real size differs from its json, :func:`collate_by_padded_size` still splits the batch
by the real padded sizes, and no image is ever padded beyond its own multiple.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence

from PIL import Image

from ..config import Config, DataConfig
from .transforms import collate, eval_image_shape


def padded_shape(h: int, w: int, size_divisibility: int) -> tuple[int, int]:
    """(H, W) that a batch of one (h, w) image is padded to: each side rounded up to the size divisibility."""
    d = size_divisibility
    return math.ceil(h / d) * d, math.ceil(w / d) * d


def stored_shape(dataset, i: int) -> Optional[tuple[int, int]]:
    """(h, w) of the stored pixels of item ``i`` of a :class:`~fcoslab.data.CocoDetection`: the json's
    ``height`` and ``width``, else the file's header (None where it cannot be read: reading the image
    will report it)."""
    info = dataset.images[i]
    if "width" in info and "height" in info:
        return int(info["height"]), int(info["width"])
    try:
        with Image.open(dataset.image_path(i)) as im:  # reads the header only
            return im.height, im.width
    except (OSError, ValueError, SyntaxError):
        return None


def planned_padded_shapes(dataset, cfg: Config) -> list[Optional[tuple[int, int]]]:
    """The padded (H, W) network input that the evaluation transforms and padding will give each item of
    ``dataset``, planned without decoding an image (None where the size cannot be known)."""
    shapes = []
    for i in range(len(dataset)):
        hw = stored_shape(dataset, i)
        shapes.append(None if hw is None else
                      padded_shape(*eval_image_shape(*hw, cfg.data), cfg.model.size_divisibility))
    return shapes


def size_grouped_batches(shapes: Sequence, batch_size: int) -> list[list[int]]:
    """Batches of at most ``batch_size`` positions of ``shapes`` that share one shape: each shape's
    positions in order, cut into consecutive batches, the batches ordered by their first position.
    Where every shape is the same, these are the consecutive batches ``[0, B), [B, 2B), ...``."""
    groups: dict = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    batches = [members[s:s + batch_size] for members in groups.values()
               for s in range(0, len(members), batch_size)]
    return sorted(batches, key=lambda b: b[0])


def collate_by_padded_size(batch: list, size_divisibility: int = 128, pad_with_mean: bool = False) -> list[dict]:
    """:func:`collate` of each set of ``batch``'s samples that share a padded size, in order of first
    appearance: one dict when the plan was right, more when a file's size differed from its json."""
    shapes = [padded_shape(*image.shape[-2:], size_divisibility) for image, _ in batch]
    return [collate([batch[i] for i in members], size_divisibility, pad_with_mean)
            for members in size_grouped_batches(shapes, len(batch))]


def collate_by_padded_size_fn(data: DataConfig, size_divisibility: int):
    """:func:`collate_by_padded_size` with the padding of :func:`fcoslab.data.transforms.collate_fn`."""
    return partial(collate_by_padded_size, size_divisibility=size_divisibility, pad_with_mean=data.pad_with_mean)
