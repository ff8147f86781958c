"""Writing files so that a crash or a full disk never leaves half a file, and one-line load errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import FcoslabError


def atomic_write(path: Path, write) -> None:
    """Write through ``path.tmp`` and rename; on failure the old file stays and the temp file goes."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0] if str(e) else e
        raise FcoslabError(f"cannot write {path}: {reason}; the previous {path.name} (if any) is intact") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def describe_load_error(e: Exception) -> str:
    """One line about why ``torch.load(..., weights_only=True)`` failed (torch's own text runs to a page)."""
    text = str(e)
    if "WeightsUnpickler error" in text:
        detail = next((line.strip() for line in text.split("WeightsUnpickler error", 1)[1].splitlines()
                       if line.strip(" :")), "")
        return f"not a file that torch.load reads with weights_only=True ({detail.strip(' :')})"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)


def load_weights_file(path: Path, what: str):
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or foreign file is a
    :class:`FcoslabError` that names ``what`` and ``path`` (tensors only: a weights file can never run code)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FcoslabError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise FcoslabError(f"cannot load {what} {path}: {describe_load_error(e)}") from None
