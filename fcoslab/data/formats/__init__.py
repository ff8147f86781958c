"""Annotation formats: COCO json loading and checks (:mod:`.coco`), and the converters of VOC XML,
YOLO txt and plain list files to COCO (:mod:`.voc`, :mod:`.yolo`, :mod:`.listfile`, sharing :mod:`.convert`).

Imports only the top-level helpers (errors, files) and :mod:`fcoslab.config`.
"""

from .coco import CocoDetection, read_coco_json, read_image  # noqa: F401
from .convert import Conversion, read_class_names  # noqa: F401
from .listfile import list_to_coco  # noqa: F401
from .voc import voc_to_coco  # noqa: F401
from .yolo import yolo_to_coco  # noqa: F401
