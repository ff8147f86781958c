"""What a resumed run may change (``fcoslab train --resume RUN --set KEY=VALUE``): training keys, not the model
or the optimizer; and its learning-rate plan in steps, with the rules for extending a run
(``--set train.epochs=N``).

A resumed run keeps what a step and an epoch are (``train.batch_size``, ``train.images_per_epoch``,
``train.accumulate``). Its length and decays may change, and the new plan is printed beside the old. A
change that rewrites the past is refused unless the user accepts it (``--reschedule``): a decay added or
removed before the current step, or a different learning-rate factor at the current step (a cosine
stretched over more epochs, a warm-up that would start again).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..config import Config, TrainConfig, anchor_paths, config_from_dict, validate
from ..errors import FcoslabError
from .optim import lr_factor

FIXED_ON_RESUME = ("batch_size", "images_per_epoch", "accumulate")


def resumed_config(checkpoint: dict, overrides: Optional[dict] = None) -> Config:
    """A checkpoint's config with training overrides (``train.epochs=24``, ...); the model stays as it was."""
    cfg = config_from_dict(checkpoint["config"])
    if overrides:
        if any(k.startswith("model.") for k in overrides) or "train.optimizer" in overrides:
            raise FcoslabError("a resumed run keeps its model and optimizer: model.* keys and train.optimizer "
                               "cannot be overridden with --resume")
        cfg = cfg.replace(**anchor_paths(overrides, Path.cwd()))
        validate(cfg)
    return cfg


def plan(t: TrainConfig, steps_per_epoch: int) -> dict:
    """``total`` steps, ``warmup`` steps, and ``decays``: the steps at which a step schedule multiplies the
    rate by ``lr_gamma`` (empty for cosine, which decays every step to 0 at ``total``)."""
    total = t.epochs * steps_per_epoch
    warmup = min(t.warmup_iters, total // 4)
    decays = [] if t.lr_schedule == "cosine" else sorted(math.ceil(e * steps_per_epoch - 1e-9) for e in t.lr_steps)
    return {"total": total, "warmup": warmup, "decays": decays, "schedule": t.lr_schedule}


def describe(t: TrainConfig, steps_per_epoch: int) -> str:
    """One line: ``12 epochs, 3456 steps: warm-up 200 steps, lr 0.005 x0.1 at steps 2880 (epoch 10)``."""
    p = plan(t, steps_per_epoch)
    head = f"{t.epochs} epochs, {p['total']} steps: warm-up {p['warmup']} steps, lr {t.lr:g}"
    if p["schedule"] == "cosine":
        return head + f", cosine to 0 at step {p['total']}"
    marks = ", ".join(f"{d} (epoch {d / steps_per_epoch:g})" for d in p["decays"]) or "none"
    return head + f" x{t.lr_gamma:g} at steps {marks}"


def check_change(old: TrainConfig, new: TrainConfig, steps_per_epoch: int, step: int, reschedule: bool) -> str:
    """The old and new plans as text, or FcoslabError if ``new`` changes the past and ``reschedule`` is False
    (or changes what a step is, which nothing accepts)."""
    for key in FIXED_ON_RESUME:
        if getattr(old, key) != getattr(new, key):
            raise FcoslabError(f"config key 'train.{key}' cannot change when a run is resumed ({getattr(old, key)} -> "
                               f"{getattr(new, key)}): it defines what a step and an epoch are; extend a run with "
                               "train.epochs")
    text = f"schedule was: {describe(old, steps_per_epoch)}\nschedule now: {describe(new, steps_per_epoch)}"
    before, after = plan(old, steps_per_epoch), plan(new, steps_per_epoch)
    problems = []
    past_old = [d for d in before["decays"] if d <= step]
    past_new = [d for d in after["decays"] if d <= step]
    if past_old != past_new:
        problems.append(f"the decays before step {step} would be at steps {past_new or 'none'} instead of "
                        f"{past_old or 'none'}")
    f_old, f_new = lr_factor(step, old, steps_per_epoch), lr_factor(step, new, steps_per_epoch)
    if abs(f_old - f_new) > 1e-9 * max(f_old, f_new, 1e-12):
        problems.append(f"the learning rate at step {step} would be {new.lr * f_new:.4g} instead of {old.lr * f_old:.4g}")
    if new.epochs * steps_per_epoch < step:
        raise FcoslabError(f"config key 'train.epochs': {new.epochs} epochs end before the run's step {step}")
    if problems and not reschedule:
        raise FcoslabError("this change rewrites the part of the schedule already trained: " + "; ".join(problems)
                           + f"\n{text}\nresume with --reschedule to accept it (Python: train(..., reschedule=True))")
    return text + ("\n(rescheduled: " + "; ".join(problems) + ")" if problems else "")
