"""Configuration: the frozen dataclasses of every key (:mod:`.core`), value coercion (:mod:`.coerce`), the
named presets (``presets/*.json``) and the generated key reference (:mod:`.docs`,
``python -m fcoslab.config.docs > docs/config.md``).

Imports only the top-level helpers (:mod:`fcoslab.errors`); every other package may import this one.
"""

from .coerce import coerce  # noqa: F401
from .core import (CHOICES, DATA_PATH_KEYS, OPTIONAL_SECTIONS, PATH_KEYS, PRESET_DIR, VALID_STRIDES,  # noqa: F401
                   AssignConfig, Config, DataConfig, DecodeConfig, EvalConfig, LossConfig, ModelConfig,
                   ShapesConfig, TrainConfig, anchor_paths, apply_overrides, config_from_dict, flatten,
                   list_presets, load_config, parse_overrides, project_root, read_config_file, validate)
