"""Configuration: the sections and their keys (:mod:`.sections`, frozen dataclasses), loading presets and
overrides and checking them (:mod:`.core`), value typing (:mod:`.coerce`), keys that moved (:mod:`.migrate`),
the named presets (``presets/*.json``) and the generated key reference (:mod:`.docs`,
``python -m fcoslab.config.docs > docs/config.md``).

Imports only the top-level helpers (:mod:`fcoslab.errors`); every other package may import this one.
"""

from .coerce import coerce  # noqa: F401
from .core import (DATA_PATH_KEYS, Config, OPTIONAL_SECTIONS, PATH_KEYS, PRESET_DIR, anchor_paths,  # noqa: F401
                   apply_overrides, config_from_dict, flatten, key_choices, list_presets, load_config, parse_overrides,
                   project_root, read_config_file, validate)
from .migrate import MOVED, migrate_keys  # noqa: F401
from .sections import (COCO_STATS, VALID_STRIDES, VOC_STATS, AssignConfig, DataConfig,  # noqa: F401
                       DecodeConfig, EvalConfig, LossConfig, ModelConfig, RuntimeConfig, ShapesConfig,
                       TrainConfig, metric_keys)
