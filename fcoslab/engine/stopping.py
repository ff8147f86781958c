"""Stopping a training run cleanly on Ctrl-C (SIGINT) or a cluster's preemption (SIGTERM).

While :class:`StopRequests` is active, the first SIGINT or SIGTERM only sets a flag: the trainer finishes
the step it is in, saves ``last.pt`` and raises :class:`TrainingStopped`, which the command line turns
into one line and exit status 130 (SIGINT) or 143 (SIGTERM). A second SIGINT stops at once (the last
saved checkpoint is then what is kept). Where a stop must not wait for a step (during an evaluation,
whose epoch is already saved), :meth:`StopRequests.immediately` makes a signal raise at once.

Signal handlers can only be set in the main thread; elsewhere (a training thread of the user's) the
signals keep their usual meaning.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Optional

import torch

from .. import distributed as dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal after saving what it had. ``signum`` is the signal, ``exit_code``
    the status a shell expects (128 + signum), the message says what was kept and how to go on."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequests:
    """Context manager: SIGINT/SIGTERM handlers that ask training to stop at the next step boundary.

    ``requested`` is the signal number of the first request (None: none); ``raise_now`` is called
    instead of deferring while :meth:`immediately` is active (it must raise)."""

    def __init__(self):
        self.requested: Optional[int] = None
        self._previous: dict[int, object] = {}
        self._now: Optional[callable] = None

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self._now is not None:
            self._now(signum)
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        if self.requested is None:
            import sys

            print(f"fcoslab: {signal_name(signum)} received: stopping after this step to save last.pt "
                  "(Ctrl-C again stops at once)", file=sys.stderr, flush=True)
        self.requested = self.requested or signum

    @contextlib.contextmanager
    def immediately(self, raise_now):
        """Within this block a signal calls ``raise_now(signum)`` (which raises) instead of waiting."""
        self._now = raise_now
        try:
            if self.requested is not None:
                raise_now(self.requested)
            yield
        finally:
            self._now = None


def agree(finite: torch.Tensor, asked: bool, last_save: float, checkpoint_minutes: float) -> tuple[float, bool, bool]:
    """The one all-reduce of a training step: the mean over ranks of ``finite`` (1.0 where this rank's loss
    is finite), and whether any rank was asked to stop (a signal) or is due a time-based checkpoint (its
    clock, ``time.monotonic()`` since ``last_save``) -> ``(mean_finite, stop, save)``, the same on every rank."""
    due = checkpoint_minutes > 0 and time.monotonic() - last_save >= 60 * checkpoint_minutes
    flags = torch.stack([finite, finite.new_tensor(float(asked)), finite.new_tensor(float(due))])
    mean_finite, stop, save = dist.all_reduce_mean(flags).tolist()
    return mean_finite, stop > 0, save > 0
