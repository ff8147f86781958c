"""Datasets: COCO-format loading, the synthetic shapes and COCO-like generators, transforms and batching,
and the converters of VOC, YOLO and list annotations to COCO: annotation files in :mod:`.formats`, generated
sets in :mod:`.synthetic`, then :mod:`.transforms`, :mod:`.batching`, :mod:`.repeat` (repeat-factor sampling),
:mod:`.loader`, :mod:`.image_check`.

Imports only the top-level helpers (errors, files) and :mod:`fcoslab.config`; modeling and above import it.
"""

from .formats.coco import (CocoDetection, CocoIndex, check_coco_dict, coco_api, read_coco_json, read_image,  # noqa: F401
                   read_pixels, to_rgb)
from .synthetic.shapes import CLASSES as SHAPES_CLASSES, ensure_shapes, make_shapes, read_generator_key  # noqa: F401
from .synthetic.cocolike import make_cocolike  # noqa: F401
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, ResizeShortest, build_transforms, collate,  # noqa: F401
                         collate_fn, eval_image_shape, float_pixels, pad_targets, resized_shape)
from .batching import (collate_by_padded_size, collate_by_padded_size_fn, padded_shape,  # noqa: F401
                       planned_padded_shapes, size_grouped_batches)
from .repeat import describe as describe_repeats, image_labels, repeat_factors, train_repeat_factors  # noqa: F401
from .loader import EpochBatchSampler, SeededSamples, build_datasets, make_loader  # noqa: F401
from .formats.convert import Conversion, read_class_names  # noqa: F401
from .formats.voc import VOC_CLASSES, voc_to_coco  # noqa: F401
from .formats.yolo import read_yolo_names, yolo_to_coco  # noqa: F401
from .formats.listfile import list_to_coco  # noqa: F401
from .image_check import (CHECK_DEPTHS, dataset_image_files, describe_bad_images, find_bad_images,  # noqa: F401
                          image_problem, is_size_mismatch)
