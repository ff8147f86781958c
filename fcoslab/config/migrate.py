"""Keys that moved: configs saved by older versions (a run folder's ``config.json``, a checkpoint, a user's
file or command line) are read in today's names, here and nowhere else."""

from __future__ import annotations

from typing import Any

from .coerce import coerce

MOVED = {  # old key -> new key
    "train.amp": "runtime.precision", "train.device": "runtime.device", "train.threads": "runtime.threads",
    "train.eval_batch_size": "eval.batch_size"}


def migrate_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` (``{"section.key": value}``) in today's key names.

    - :data:`MOVED` keys take their new name; a new key given as well wins over the old one.
    - ``data.shapes_train`` (0 = never generate), ``data.shapes_val``, ... become the ``shapes`` section.
    """
    out = {}
    for key, value in flat.items():
        if key in MOVED:
            if MOVED[key] not in flat:
                out[MOVED[key]] = value
        elif not key.startswith("data.shapes_"):
            out[key] = value
    old = {k.removeprefix("data.shapes_"): v for k, v in flat.items() if k.startswith("data.shapes_")}
    if "train" in old and coerce(old["train"], int, "data.shapes_train") <= 0:
        out["shapes"] = None
    elif old:
        out.update({f"shapes.{k}": v for k, v in old.items()})
    return out
