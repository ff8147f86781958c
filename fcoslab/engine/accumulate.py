"""Gradient accumulation (``train.accumulate``): one optimizer step from several micro-batches, equal to the
step of the whole batch.

FCOS divides each loss term by a count over the whole batch (the positive points, and the center-ness
weight of the box loss), so the micro-batches must share the normalisers of their union:
:func:`accumulate_gradients` computes every micro-batch's targets first (from the points, which all
micro-batches of one padded batch share), sums the counts, averages them over processes, and only then
runs each micro-batch's loss and backward. Every micro-batch is a slice of the one padded batch, so the
padding, and with it every point, is that of the whole batch.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor

PER_IMAGE = ("images", "image_sizes", "orig_sizes", "gt_boxes", "gt_labels", "image_ids")


def micro_batches(batch: dict, n: int) -> list[dict]:
    """``batch`` (a collated dict) cut into ``n`` consecutive micro-batches of equal size."""
    size = len(batch["images"])
    if size % n:
        raise ValueError(f"a batch of {size} images does not split into {n} equal micro-batches")
    step = size // n
    return [{k: batch[k][i * step:(i + 1) * step] if k in PER_IMAGE else batch[k] for k in batch}
            for i in range(n)]


@contextlib.contextmanager
def frozen_buffers(model: torch.nn.Module):
    """Run extra forwards without them counting in BatchNorm's running statistics (restored on exit)."""
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved):
                b.copy_(s)


def accumulate_gradients(chunks: list[dict], forward: Callable[[dict], dict], criterion, backward: Callable[[Tensor], None],
                         no_sync: Callable[[], contextlib.AbstractContextManager], model: torch.nn.Module
                         ) -> tuple[dict[str, Tensor], Tensor]:
    """Forward and backward every micro-batch of ``chunks`` with the normalisers of their union.

    Args:
        forward: a micro-batch -> the model's outputs (on the device, under autocast).
        criterion: :class:`fcoslab.modeling.loss.FCOSCriterion`.
        backward: backpropagates a loss (through the gradient scaler).
        no_sync: a context in which backward does not all-reduce gradients (DDP's ``no_sync``; every
            micro-batch but the last runs in it).
        model: the bare model, whose buffers extra forwards must not change (assigners that look at
            predictions need every micro-batch's outputs before the first loss).
    Returns:
        (parts, finite): the loss parts of the whole batch (detached sums of the micro-batches' parts,
        each already normalised by the whole batch) and a float 0-d tensor, 1 if every loss was finite.
    """
    with no_sync():  # a DDP forward decides whether its backward all-reduces: the first does not
        first = forward(chunks[0])
    if criterion.uses_predictions:
        with torch.no_grad(), frozen_buffers(model):
            seen = [first] + [forward(c) for c in chunks[1:]]
    else:
        seen = [first] * len(chunks)  # the points and levels, which every micro-batch shares
    device = chunks[0]["gt_boxes"].device
    targets = [criterion.targets(out, c["gt_boxes"].to(device), c["gt_labels"].to(device), c["image_sizes"].to(device))
               for out, c in zip(seen, chunks)]
    centerness = first["centerness"] is not None
    counts = criterion.reduce_counts(torch.stack([criterion.counts(t, centerness) for t in targets]).sum(0))
    parts: dict[str, Tensor] = {}
    finite = torch.ones((), device=device)
    for i, (chunk, target) in enumerate(zip(chunks, targets)):
        last = i == len(chunks) - 1
        with (contextlib.nullcontext() if last else no_sync()):
            outputs = first if i == 0 else forward(chunk)
            losses, _ = criterion(outputs, chunk["gt_boxes"].to(device), chunk["gt_labels"].to(device),
                                  targets=target, counts=counts)
            backward(losses["loss"])
        finite = finite * torch.isfinite(losses["loss"]).float()
        for k, v in losses.items():
            parts[k] = parts.get(k, 0) + v.detach()
    return parts, finite
