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
these functions; no submodule has their names (the modules are :mod:`fcoslab.engine.trainer` and
:mod:`fcoslab.evaluation.coco`).

Conventions used in every module
--------------------------------
Boxes are float32 ``(x1, y1, x2, y2)`` in absolute, continuous pixels (width = x2 - x1, no +1).
COCO ``xywh`` boxes and COCO category ids appear only at the dataset and evaluation edges.

Dimension legend (used in docstrings and shape comments):

    B  images in a batch          L  FPN levels (P3-P7: 5; P3-P5: 3)
    P  points over all levels     M  ground-truth boxes per image (padded)
    K  classes                    N  detections

Layout, in the order data flows (a package imports only those before it; tests/test_layout.py):
the top-level helpers :mod:`fcoslab.errors`, :mod:`fcoslab.files`, :mod:`fcoslab.boxes`, :mod:`fcoslab.draw`,
:mod:`fcoslab.distributed`, :mod:`fcoslab.runfolder`; :mod:`fcoslab.config` (frozen dataclasses, presets);
:mod:`fcoslab.data` (annotation formats, generated sets, transforms, loading) and :mod:`fcoslab.ops` (nms,
batched_nms, sigmoid_focal_loss, fcos_assign with torch and CuPy backends); :mod:`fcoslab.modeling` (points,
ResNet + FPN + head, targets, loss, decode); :mod:`fcoslab.inference` (predictor, tiling, ONNX export);
:mod:`fcoslab.evaluation` (COCO and VOC metrics, error analysis, comparisons); :mod:`fcoslab.engine`
(training); :mod:`fcoslab.viz` (plots, viewer); :mod:`fcoslab.apps` (the command line, notebooks).
"""

from __future__ import annotations

import importlib

from .errors import FcoslabError

__version__ = "0.1.0"
__all__ = ["load_config", "train", "evaluate", "Predictor", "read_history", "FcoslabError"]

_LAZY = {"load_config": "config", "evaluate": "evaluation.coco", "Predictor": "inference.predictor",
         "read_history": "runfolder"}


def train(cfg, out, resume: bool = False, resume_overrides=None, **kwargs) -> list[dict]:
    """Train ``cfg`` (a :class:`fcoslab.config.Config`) into the run folder ``out``; returns the history,
    one dict per evaluation (as ``history.json`` holds it).

    ``resume=True`` continues the run saved in ``out`` with its own config (``cfg`` is then None) and
    ``resume_overrides`` such as ``{"train.epochs": 24}``. Other keyword arguments go to
    :class:`fcoslab.engine.trainer.Trainer`: ``progress`` (a progress bar), ``on_step`` and ``on_eval`` (callbacks
    given each step's and each evaluation's record).

    Example::

        import fcoslab
        cfg = fcoslab.load_config("shapes", ["train.epochs=2"])
        history = fcoslab.train(cfg, "runs/try")
        print(history[-1]["AP"])
        fcoslab.train(None, "runs/try", resume=True, resume_overrides={"train.epochs": 4})
    """
    from .engine.trainer import train as train_run

    return train_run(cfg, out, resume=resume, resume_overrides=resume_overrides, **kwargs)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fcoslab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

