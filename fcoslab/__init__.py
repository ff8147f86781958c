"""fcoslab: a research kit for FCOS (Fully Convolutional One-Stage Object Detection, arXiv 1904.01355).

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

__version__ = "0.1.0"

from .errors import FcoslabError  # noqa: F401
