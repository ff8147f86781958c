"""fcoslab: a research kit for FCOS (Fully Convolutional One-Stage Object Detection, arXiv 1904.01355).

Public API
----------
The names a script or notebook needs, importable from ``fcoslab`` itself (each has an example in its
docstring)::

    import fcoslab
    cfg = fcoslab.load_config("shapes", ["train.epochs=2"])   # config: preset or JSON file + overrides
    history = fcoslab.train(cfg, "runs/try")                   # train into a run folder; the history
    evaluation = fcoslab.evaluate("runs/try")                  # COCO (and VOC) metrics of a run
    predictor = fcoslab.Predictor("runs/try")                  # detections for PIL images
    records = fcoslab.read_history("runs/try")                 # one dict per evaluation
    # every user mistake raises fcoslab.FcoslabError, whose message names the key, file or value

``load_config``, :class:`Predictor`, ``evaluate`` and ``read_history`` are imported on first use (PEP 562),
so ``import fcoslab`` loads neither torch nor any module. ``fcoslab.train`` and ``fcoslab.evaluate`` are
these functions even once their modules are imported; the modules themselves are reached with
``from fcoslab.train import Trainer`` or ``from fcoslab.evaluate import coco_evaluate``.

Conventions used in every module
--------------------------------
Boxes are float32 ``(x1, y1, x2, y2)`` in absolute, continuous pixels (width = x2 - x1, no +1).
COCO ``xywh`` boxes and COCO category ids appear only at the dataset and evaluation edges.

Dimension legend (used in docstrings and shape comments):

    B  images in a batch          L  FPN levels (P3-P7, so 5)
    P  points over all levels     M  ground-truth boxes per image (padded)
    K  classes                    N  detections

Layout: :mod:`fcoslab.config` (frozen dataclasses, presets), :mod:`fcoslab.datasets` (COCO loading,
shapes generator, transforms), :mod:`fcoslab.model` (ResNet + FPN + head), :mod:`fcoslab.ops`
(nms, batched_nms, sigmoid_focal_loss, fcos_assign with torch and CuPy backends),
:mod:`fcoslab.targets`, :mod:`fcoslab.loss`, :mod:`fcoslab.decode`, :mod:`fcoslab.evaluate`,
:mod:`fcoslab.train`, :mod:`fcoslab.predict`, :mod:`fcoslab.cli`.
"""

from __future__ import annotations

import importlib
import sys
import types

from .errors import FcoslabError

__version__ = "0.1.0"
__all__ = ["load_config", "train", "evaluate", "Predictor", "read_history", "FcoslabError"]

_LAZY = {"load_config": "config", "evaluate": "evaluate", "Predictor": "inference", "read_history": "runfolder"}
_SHADOWED = ("train", "evaluate")  # API functions named like their modules


def train(cfg, out, resume: bool = False, resume_overrides=None, **kwargs) -> list[dict]:
    """Train ``cfg`` (a :class:`fcoslab.config.Config`) into the run folder ``out``; returns the history,
    one dict per evaluation (as ``history.json`` holds it).

    ``resume=True`` continues the run saved in ``out`` with its own config (``cfg`` is then None) and
    ``resume_overrides`` such as ``{"train.epochs": 24}``. Other keyword arguments go to
    :class:`fcoslab.train.Trainer`: ``progress`` (a progress bar), ``on_step`` and ``on_eval`` (callbacks
    given each step's and each evaluation's record).

    Example::

        import fcoslab
        cfg = fcoslab.load_config("shapes", ["train.epochs=2"])
        history = fcoslab.train(cfg, "runs/try")
        print(history[-1]["AP"])
        fcoslab.train(None, "runs/try", resume=True, resume_overrides={"train.epochs": 4})
    """
    from .train import train as train_run

    return train_run(cfg, out, resume=resume, resume_overrides=resume_overrides, **kwargs)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fcoslab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """The package's module type: importing the submodule ``fcoslab.train`` (or ``fcoslab.evaluate``)
    would bind the package attribute of that name to the module, replacing the API function; it keeps
    the function (the module stays in ``sys.modules``, where ``from fcoslab.train import ...`` finds it)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
