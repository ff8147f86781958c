"""The FCOS model and its training signal: the points of each level (:mod:`.points`), ResNet + FPN + head
(:mod:`.model`), fine-tuning from a run (:mod:`.finetune`), target assignment (:mod:`.targets`), the loss
(:mod:`.loss`) and decoding raw outputs into detections (:mod:`.decode`).

May import the top-level helpers, :mod:`fcoslab.config`, :mod:`fcoslab.data` and :mod:`fcoslab.ops`.
"""

from .decode import decode, one_class_per_object  # noqa: F401
from .finetune import apply_freeze, init_from  # noqa: F401
from .loss import FCOSCriterion, fcos_loss  # noqa: F401
from .model import FCOS, build_model  # noqa: F401
from .points import level_names, level_sizes, make_points  # noqa: F401
from .targets import assign_targets, fcos_targets  # noqa: F401
