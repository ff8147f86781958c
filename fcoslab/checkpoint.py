"""Checkpoints and run files, written atomically (temporary file, then rename).

A checkpoint holds only tensors and plain Python values, so it loads with ``weights_only=True`` and
can never run code. It also carries the evaluation history, so that ``history.json`` can always be
rewritten from the last good checkpoint: a run killed at any moment never records an evaluation twice.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from .errors import FcoslabError


def atomic_write(path: Path, write) -> None:
    """Write through ``path.tmp`` and rename; on failure the old file stays and the temp file goes."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FcoslabError(f"cannot write {path}: {e.strerror or e}; the previous {path.name} (if any) is intact") from None


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def describe_load_error(e: Exception) -> str:
    """One line about why ``torch.load(..., weights_only=True)`` failed (torch's own text runs to a page)."""
    text = str(e)
    if "WeightsUnpickler error" in text:
        detail = next((line.strip() for line in text.split("WeightsUnpickler error", 1)[1].splitlines()
                       if line.strip(" :")), "")
        return f"not a file that torch.load reads with weights_only=True ({detail.strip(' :')})"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file (or ``RUN_DIR/last.pt`` when given a run folder) with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FcoslabError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file raises one of several types
        raise FcoslabError(f"cannot load checkpoint {path}: {describe_load_error(e)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise FcoslabError(f"{path} is not an fcoslab checkpoint (no 'model' and 'config' entries)")
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
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
