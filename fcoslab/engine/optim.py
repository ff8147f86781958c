"""The optimizer and its learning-rate schedule: SGD with momentum or AdamW, no weight decay on norms and
biases, linear warm-up, then step or cosine decay."""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def lr_factor(step: int, t: TrainConfig, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up over ``warmup_iters`` steps (at most a quarter
    of the run, so that a short run still reaches its peak), then either x ``lr_gamma`` at each of
    ``lr_steps`` (epochs, fractions allowed: 4.5 is half-way through the fifth) or a half cosine from 1
    down to 0 at the end of the last epoch."""
    warmup = min(t.warmup_iters, t.epochs * steps_per_epoch // 4)
    epochs_done = step / max(steps_per_epoch, 1)
    if t.lr_schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * min(epochs_done / t.epochs, 1.0)))
    else:
        decay = t.lr_gamma ** sum(epochs_done >= s for s in t.lr_steps)
    if step < warmup:
        alpha = step / warmup
        return decay * (t.warmup_factor * (1 - alpha) + alpha)
    return decay


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms, biases, scales
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, foreach=True)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, foreach=True)
