"""Scoring detections: COCO evaluation of a model or run (:mod:`.coco`), COCO AP in numpy (:mod:`.coco_ap`),
VOC metrics (:mod:`.voc`), error analysis (:mod:`.errors`), bootstrap intervals (:mod:`.bootstrap`),
run comparison (:mod:`.compare`) and the data and per-class reports (:mod:`.reports`).

May import the top-level helpers, config, data, ops, modeling and :mod:`fcoslab.inference`; never
:mod:`fcoslab.engine` (which imports this package).
"""

from .coco import coco_evaluate, evaluate, evaluate_checkpoint, evaluate_model  # noqa: F401
from .compare import compare_runs, comparison_table  # noqa: F401
from .voc import voc_evaluate  # noqa: F401
