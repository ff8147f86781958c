"""Datasets: COCO-format loading, the synthetic shapes generator, transforms and batching."""

from .coco import CocoDetection, CocoIndex, check_coco_dict, coco_api, read_coco_json, read_image, to_rgb  # noqa: F401
from .shapes import CLASSES as SHAPES_CLASSES, ensure_shapes, make_shapes, read_generator_key  # noqa: F401
from .transforms import ResizeShortest, build_transforms, collate, pad_targets, resized_shape  # noqa: F401
from .loader import EpochBatchSampler, SeededSamples, build_datasets, make_loader  # noqa: F401
