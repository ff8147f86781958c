"""Repeat-factor sampling for class-imbalanced training sets (``data.repeat_threshold``).

The rule of LVIS (Gupta et al., 2019), as detectron2's ``RepeatFactorTrainingSampler`` applies it: with
``f_c`` the fraction of training images that contain class ``c`` and ``t`` the threshold,

    r_c = max(1, sqrt(t / f_c))        r_i = max of r_c over the classes in image i (1 without boxes)

and each pass over the set shows image ``i`` ``floor(r_i)`` times, plus once more with probability
``r_i - floor(r_i)``. A class in at least a fraction ``t`` of the images is never repeated for itself.

The classes of an image are those of its training targets (crowd boxes and boxes of no size left out, as
the loss sees them), read from the annotation index: no image is decoded. The draws of pass ``n`` come
from a generator seeded by (seed, n) alone, so every process of a torchrun job draws the same passes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

_REPEAT_SALT = 0x5EED_0000_0000  # keeps the repeat draws' generator seeds apart from the order's
COPY_SEED_STEP = 2 ** 53  # copy k of an image adds k * this to its augmentation seed


def image_labels(dataset) -> list[np.ndarray]:
    """The training labels of each item of a :class:`~fcoslab.data.CocoDetection`, in item order:
    int64 (M_i,) in ``0..K-1`` (repeated where an image has several boxes of a class), from the
    annotation index (``dataset.targets``), without reading an image."""
    return [dataset.targets[info["id"]][1] for info in dataset.images]


def repeat_factors(labels: Sequence[np.ndarray], threshold: float) -> torch.Tensor:
    """Each image's repeat factor ``r_i`` (float64 (N,), all >= 1) for threshold ``t`` (> 0).

    Args:
        labels: per image, int (M_i,) class labels (any order, repeats allowed; empty: no boxes).
        threshold: ``t``, a fraction of images.
    """
    n = len(labels)
    present = [np.unique(np.asarray(l, dtype=np.int64)) for l in labels]  # each class once an image
    counts: dict[int, int] = {}
    for classes in present:
        for c in classes.tolist():
            counts[c] = counts.get(c, 0) + 1
    class_factor = {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in counts.items()}
    return torch.tensor([max((class_factor[c] for c in classes.tolist()), default=1.0) for classes in present],
                        dtype=torch.float64)


def expected_pass_length(factors: torch.Tensor) -> int:
    """The mean number of samples in a pass: ``sum(r_i)``, rounded."""
    return int(round(float(factors.sum())))


def pass_copies(factors: torch.Tensor, seed: int, n: int) -> torch.Tensor:
    """int64 (N,): how often each image appears in pass ``n`` of the stream of ``seed``:
    ``floor(r_i)``, plus one with probability ``frac(r_i)``."""
    g = torch.Generator().manual_seed(_REPEAT_SALT + seed * 100003 + n)
    whole = factors.floor()
    extra = torch.rand(len(factors), generator=g, dtype=torch.float64) < factors - whole
    return whole.long() + extra.long()


def pass_members(copies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of a pass before its shuffle: ``(index, copy)`` int64 (S,) each, S = ``copies.sum()``:
    copy 0 of every image in image order, then copy 1 of the images shown twice or more, and so on.
    Where every image appears once, this is ``(arange(N), zeros(N))``."""
    index = torch.repeat_interleave(torch.arange(len(copies)), copies)  # (S,) in image order
    first = torch.cumsum(copies, 0) - copies  # (N,) position of each image's first copy
    copy = torch.arange(len(index)) - first[index]  # (S,)
    order = torch.argsort(copy * len(copies) + index)  # by copy, then image
    return index[order], copy[order]


def describe(factors: torch.Tensor, threshold: float) -> str:
    """One line for the log: the threshold, the mean factor and how many images are repeated."""
    repeated = int((factors > 1).sum())
    return (f"repeat-factor sampling (data.repeat_threshold={threshold:g}): mean factor {float(factors.mean()):.3f}, "
            f"{repeated} of {len(factors)} images repeated (largest factor {float(factors.max()):.2f}), "
            f"{expected_pass_length(factors)} samples a pass on average")


def train_repeat_factors(dataset, threshold: float):
    """The repeat factors (float64 (N,)) of a training :class:`~fcoslab.data.CocoDetection` for
    ``data.repeat_threshold``; None when it is 0 (off)."""
    return repeat_factors(image_labels(dataset), threshold) if threshold > 0 else None
