"""The run folder and its files, written atomically (temporary file, then rename).

A run folder holds ``config.json`` (the resolved config), ``last.pt`` (the checkpoint), ``best.pt`` (the
checkpoint of the best evaluation by ``eval.best_metric``) and ``history.json`` (one record per
evaluation); :class:`RunFolder` is the only code that knows these names. A checkpoint holds only tensors and plain Python values, so it loads with ``weights_only=True``
and can never run code. It also carries the evaluation history, so that ``history.json`` can always be
rewritten from the last good checkpoint: a run killed at any moment never records an evaluation twice.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .errors import FcoslabError
from .files import atomic_write, load_weights_file, write_json


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Load a checkpoint file (or a run folder's checkpoint when given the folder) with weights_only=True;
    ``what`` starts each error message, e.g. ``"config key 'model.init_from': checkpoint"``."""
    path = Path(path)
    if path.is_dir():
        path = RunFolder(path).checkpoint
    ckpt = load_weights_file(path, what)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise FcoslabError(f"{what} {path} is not an fcoslab checkpoint (no 'model' and 'config' entries)")
    return ckpt


def rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():  # as many devices as were saved and are visible
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class RunFolder:
    """One run's folder: where its config, checkpoint and history live, and how they are written."""

    CONFIG, CHECKPOINT, HISTORY, BEST = "config.json", "last.pt", "history.json", "best.pt"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config, self.checkpoint, self.history_file = (self.path / self.CONFIG, self.path / self.CHECKPOINT,
                                                           self.path / self.HISTORY)
        self.best = self.path / self.BEST

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    def remove_unsaved(self) -> None:
        """Remove what a run wrote before its first checkpoint (config, history, TensorBoard log, temporary
        files), and the folder if that leaves it empty; anything else in it stays."""
        if not self.path.is_dir():
            return
        for name in (self.CONFIG, self.HISTORY, self.CONFIG + ".tmp", self.HISTORY + ".tmp", self.CHECKPOINT + ".tmp"):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / "tensorboard", ignore_errors=True)
        try:
            self.path.rmdir()
        except OSError:  # not empty
            pass

    def check_writable(self) -> None:
        """Create the folder and prove a file can be written there, before anything is computed."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise FcoslabError(f"run folder {self.path} cannot be written: {e.strerror or e}") from None

    def start(self, config: dict, history: list[dict]) -> None:
        """Write the resolved config and the history so far (a resumed run's history is kept)."""
        write_json(self.config, config)
        write_json(self.history_file, history)

    def save(self, state: dict) -> None:
        """Save the checkpoint, then the history it carries (``state["history"]``)."""
        atomic_write(self.checkpoint, lambda tmp: torch.save(state, tmp))
        write_json(self.history_file, state["history"])  # always the checkpoint's own history

    def keep_best(self) -> None:
        """Copy the checkpoint just saved to ``best.pt`` (the evaluation it carries scored best so far)."""
        atomic_write(self.best, lambda tmp: shutil.copyfile(self.checkpoint, tmp))

    def load(self) -> dict:
        return load_checkpoint(self.checkpoint)

    def read_history(self) -> list[dict]:
        if not self.history_file.is_file():
            raise FcoslabError(f"{self.history_file} does not exist: is {self.path} a run folder?")
        try:
            return json.loads(self.history_file.read_text())
        except json.JSONDecodeError as e:
            raise FcoslabError(f"{self.history_file} is not valid JSON ({e})") from None


def read_history(run_dir: str | Path) -> list[dict]:
    """The evaluation history of a run folder: one dict per evaluation (epoch, step, losses, AP, ...).

    Example::

        import fcoslab
        for record in fcoslab.read_history("runs/shapes"):
            print(record["epoch"], record["loss"], record["AP"])
    """
    return RunFolder(run_dir).read_history()


def run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Short names for plot legends: each run folder's last path parts, as few as keep them apart
    (``["/x/abl/a/seed0", "/x/abl/b/seed0"]`` -> ``["a/seed0", "b/seed0"]``)."""
    parts = [Path(p).resolve().parts for p in run_dirs]
    for n in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(set(parts)):
            return labels
    return [str(p) for p in run_dirs]
