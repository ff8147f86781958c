"""An exponential moving average of the weights (``train.ema``), the weights a run evaluates and saves.

After each optimizer step ``ema = d * ema + (1 - d) * weights``, with a decay that starts at 0 and rises to
``train.ema_decay``: ``d = ema_decay * (1 - exp(-updates / ema_warmup))`` (the warm-up of YOLOX's and
mmdetection's ExpMomentumEMA), so that the average does not remember the random initialisation. Every
floating-point tensor of the state (BatchNorm statistics too) is averaged; counters are copied.
"""

from __future__ import annotations

import copy
import math

import torch


class ModelEMA:
    """The averaged copy of ``model`` (``self.model``, never trained, no gradients)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: float):
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        """The decay of the next update."""
        ramp = 1.0 - math.exp(-(self.updates + 1) / self.warmup) if self.warmup > 0 else 1.0
        return self.decay * ramp

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Average in ``model``'s current weights (the bare model, same architecture)."""
        d = self.current_decay()
        averaged, copied = [], []
        for ema_value, value in zip(self.model.state_dict().values(), model.state_dict().values()):
            (averaged if ema_value.is_floating_point() else copied).append((ema_value, value))
        if averaged:
            torch._foreach_lerp_([e for e, _ in averaged], [v.detach().to(e.dtype) for e, v in averaged], 1.0 - d)
        for ema_value, value in copied:
            ema_value.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load(self, state: dict, updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = updates
