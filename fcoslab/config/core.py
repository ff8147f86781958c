"""Configuration: frozen dataclasses, named presets (JSON files) and ``key.sub=value`` overrides.

A config is built in three layers: the dataclass defaults, a preset (``fcoslab/config/presets/NAME.json`` or
any JSON file) and command-line overrides. Unknown keys and values of the wrong type are errors that
name the key and list what is valid. Every run saves the resolved config as ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .coerce import coerce
from .migrate import migrate_keys
from .sections import (VALID_STRIDES, AssignConfig, DataConfig, DecodeConfig, EvalConfig, LossConfig, ModelConfig,
                       RuntimeConfig, ShapesConfig, TrainConfig, metric_keys)
from ..errors import FcoslabError

PRESET_DIR = Path(__file__).parent / "presets"
# Relative file paths in a config mean: for a preset, the project folder (the checkout fcoslab runs from, else
# the working directory); for a config file, that file's folder; for overrides, the working directory.
# load_config stores them absolute, so a run's config.json works from anywhere.


def project_root() -> Path:
    """The source checkout fcoslab is imported from (where ``data/`` and ``runs/`` live), else the working
    directory (an installed fcoslab)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "fcoslab").is_dir():
        return checkout
    return Path.cwd()


def anchor_paths(flat: dict[str, Any], base: Path) -> dict[str, Any]:
    """``flat`` with the relative paths of :data:`PATH_KEYS` made absolute against ``base``."""
    def anchored(value):
        return str(Path(base, value).resolve()) if isinstance(value, str) and value else value
    return {k: anchored(v) if k in PATH_KEYS else v for k, v in flat.items()}


@dataclass(frozen=True)
class Config:
    """A whole config: one section (:mod:`.sections`) per part of the data flow, plus where it runs."""
    data: DataConfig = field(default_factory=DataConfig)
    shapes: Optional[ShapesConfig] = None  # the generated set the data paths point at, if any
    model: ModelConfig = field(default_factory=ModelConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with ``{"train.epochs": 2, ...}``-style overrides applied (checked like the CLI's)."""
        return apply_overrides(self, overrides)


def key_choices(dotted: str) -> tuple:
    """The valid words of a ``Literal`` key such as ``"eval.backend"`` (empty for other keys)."""
    section, _, key = dotted.partition(".")
    section_type = typing.get_type_hints(Config)[section]
    section_type = next((a for a in typing.get_args(section_type) if dataclasses.is_dataclass(a)), section_type)
    tp = typing.get_type_hints(section_type)[key]
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


DATA_PATH_KEYS = ("data.train_ann", "data.train_images", "data.val_ann", "data.val_images")
PATH_KEYS = DATA_PATH_KEYS + ("model.backbone_weights", "model.init_from")  # anchored by load_config (see project_root)
OPTIONAL_SECTIONS = {"shapes": ShapesConfig}
_NONE = (None, "none", "null", "None")


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply flat ``{"section.key": value}`` overrides; unknown keys list the valid ones.

    ``{"shapes": None}`` (``shapes=none`` on the command line) removes the optional ``shapes`` section;
    a ``shapes.*`` key adds it. Overrides that give the data paths (any of :data:`DATA_PATH_KEYS`) without
    any ``shapes`` key also remove it: the four paths alone point any preset at the user's data, and the
    generated shapes set is then neither made nor checked.
    """
    overrides = migrate_keys(overrides)
    if any(k in overrides for k in DATA_PATH_KEYS) and not any(k.split(".")[0] == "shapes" for k in overrides):
        overrides = {"shapes": None, **overrides}
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in sections:
            raise FcoslabError(f"unknown config section '{section}' in '{dotted}'; valid sections: "
                               + ", ".join(sections))
        if section in OPTIONAL_SECTIONS and not key:
            if isinstance(value, dict) and not value:
                sections[section] = OPTIONAL_SECTIONS[section]()
                continue
            if value not in _NONE:
                raise FcoslabError(f"config key '{section}' alone can only be none (to remove the section); "
                                   f"set its keys as {section}.KEY=VALUE")
            sections[section] = None
            continue
        sub = sections[section]
        if sub is None and section in OPTIONAL_SECTIONS:
            sub = OPTIONAL_SECTIONS[section]()
        hints = typing.get_type_hints(type(sub))
        if key not in hints:
            raise FcoslabError(f"unknown config key '{dotted}'; valid keys in '{section}': " + ", ".join(hints))
        sections[section] = dataclasses.replace(sub, **{key: coerce(value, hints[key], dotted)})
    return Config(**sections)


def flatten(tree: dict, where: str) -> dict[str, Any]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}``; ``where`` names the source in errors."""
    if not isinstance(tree, dict):
        raise FcoslabError(f"{where}: expected a JSON object of sections, got {type(tree).__name__}")
    flat = {}
    for section, values in tree.items():
        if section.startswith("_"):  # "_doc" and similar comments
            continue
        if section in OPTIONAL_SECTIONS and (values is None or values == {}):
            flat[section] = values  # None: no section; {}: the section with its defaults
            continue
        if not isinstance(values, dict):
            raise FcoslabError(f"{where}: section '{section}' must be an object of keys, got {values!r}")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def read_config_file(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise FcoslabError(f"cannot read config file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise FcoslabError(f"config file {path} is not valid JSON: {e}") from None


def load_config(name_or_path: str = "shapes", overrides: Optional[list[str] | dict] = None) -> Config:
    """Resolve a preset name or JSON file, then apply ``key.sub=value`` overrides.

    Args:
        name_or_path: a preset name from :func:`list_presets` or a path to a JSON config
            (a full ``config.json`` saved by a run works too).
        overrides: ``["train.epochs=2", ...]`` strings or a ``{"train.epochs": 2}`` dict.

    Example::

        import fcoslab
        cfg = fcoslab.load_config("shapes", ["train.epochs=2", "data.min_size=224"])
        print(cfg.train.epochs, cfg.data.min_size)  # 2 (224,)
    """
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise FcoslabError(f"config file {path} does not exist; presets: {', '.join(list_presets())}")
        tree, where, base = read_config_file(path), str(path), path.resolve().parent
    elif (PRESET_DIR / f"{name_or_path}.json").exists():
        tree, where = read_config_file(PRESET_DIR / f"{name_or_path}.json"), f"preset {name_or_path}"
        base = project_root()
    else:
        raise FcoslabError(f"unknown preset '{name_or_path}'; presets: {', '.join(list_presets())} "
                           "(or give a path to a .json config)")
    cfg = apply_overrides(Config(), anchor_paths(flatten(tree, where), base))
    if overrides:
        overrides = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        cfg = apply_overrides(cfg, anchor_paths(overrides, Path.cwd()))
    names = [k.partition(".")[2] for k in DATA_PATH_KEYS]
    defaults = {k: str(project_root() / v) for k in names
                if not Path(v := getattr(cfg.data, k)).is_absolute()}  # data paths nobody gave: the project's
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **defaults))
    validate(cfg)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["train.epochs=2", ...]`` -> ``{"train.epochs": "2", ...}`` (values are typed when applied)."""
    pairs = {}
    for item in items:
        if "=" not in item:
            raise FcoslabError(f"override '{item}' must look like key.sub=value, e.g. train.epochs=2")
        k, _, v = item.partition("=")
        pairs[k.strip()] = v
    return pairs


def config_from_dict(tree: dict) -> Config:
    """Rebuild a :class:`Config` from ``Config.to_dict()`` (as stored in checkpoints)."""
    return apply_overrides(Config(), flatten(tree, "stored config"))


def validate(cfg: Config) -> None:
    """Every check of a config that needs no data and no device: ranges and cross-field rules (the choices of
    ``Literal`` keys are checked when values are typed). Raises FcoslabError naming the key."""
    m = cfg.model
    if len(cfg.assign.regress_ranges) != len(m.strides):
        raise FcoslabError(f"config key 'assign.regress_ranges' has {len(cfg.assign.regress_ranges)} ranges "
                           f"but model.strides has {len(m.strides)} levels")
    if m.strides not in VALID_STRIDES:
        raise FcoslabError(f"config key 'model.strides': the levels are P3-P5 (or P2-P5, from stride 4) from the "
                           f"backbone and up to two more (P6, P7): one of {', '.join(map(str, VALID_STRIDES))}; "
                           f"got {m.strides}")
    if m.fpn_channels < 2 or m.fpn_channels % 2:
        raise FcoslabError(f"config key 'model.fpn_channels' must be an even number of at least 2, got {m.fpn_channels}")
    for key, value in (("train.epochs", cfg.train.epochs), ("train.batch_size", cfg.train.batch_size),
                       ("data.max_size", cfg.data.max_size), ("train.eval_every", cfg.train.eval_every), ("train.accumulate", cfg.train.accumulate),
                       ("eval.batch_size", cfg.eval.batch_size), ("train.log_every", cfg.train.log_every)):
        if value < 1:
            raise FcoslabError(f"config key '{key}' must be at least 1, got {value}")
    if m.backbone_width != 64:
        if m.backbone not in ("resnet10", "resnet18", "resnet34") or m.backbone_width < 8 or m.backbone_width % 8:
            raise FcoslabError(f"config key 'model.backbone_width': {m.backbone_width} needs a resnet10/18/34 backbone "
                               f"and a multiple of 8 (got backbone {m.backbone}); 64 is torchvision's width")
        if m.backbone_weights or m.torchvision_weights:
            raise FcoslabError(f"config key 'model.backbone_width': pretrained weights exist only for width 64, "
                               f"got {m.backbone_width}")
    if cfg.train.images_per_epoch and cfg.train.images_per_epoch < cfg.train.batch_size:
        raise FcoslabError(f"config key 'train.images_per_epoch' must be 0 (one pass over the data) or at least "
                           f"train.batch_size ({cfg.train.batch_size}), got {cfg.train.images_per_epoch}")
    if cfg.train.checkpoint_minutes < 0:
        raise FcoslabError(f"config key 'train.checkpoint_minutes' must be 0 (off) or positive, got "
                           f"{cfg.train.checkpoint_minutes}")
    if not 0 <= cfg.data.repeat_threshold <= 1:
        raise FcoslabError(f"config key 'data.repeat_threshold' must be 0 (off) or a fraction of images in (0, 1], "
                           f"got {cfg.data.repeat_threshold}")
    if any(size < 1 for size in cfg.eval.tta_sizes):
        raise FcoslabError(f"config key 'eval.tta_sizes' lists test sizes in pixels, each at least 1, got "
                           f"{list(cfg.eval.tta_sizes)}")
    if cfg.data.square_size < 0 or cfg.data.min_box_area < 0:
        raise FcoslabError("config keys 'data.square_size' and 'data.min_box_area' must be 0 (off) or positive")
    if m.pad_multiple < 0 or (m.pad_multiple and m.pad_multiple % 32):
        raise FcoslabError(f"config key 'model.pad_multiple' must be 0 (the largest stride) or a multiple of 32 "
                           f"(the backbone's C5 stride), got {m.pad_multiple}")
    if not 0 <= m.freeze_at <= 5:
        raise FcoslabError(f"config key 'model.freeze_at' must be in 0..5, got {m.freeze_at}")
    if cfg.eval.best_metric not in metric_keys(cfg.eval.metrics):
        raise FcoslabError(f"config key 'eval.best_metric': '{cfg.eval.best_metric}' is not recorded with "
                           f"eval.metrics={cfg.eval.metrics}; choose one of {', '.join(metric_keys(cfg.eval.metrics))}")
    validate_assign(cfg.assign)
    device = cfg.runtime.device
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:") and device[5:].isdigit()):
        raise FcoslabError(f"config key 'runtime.device' is '{device}': expected auto, cpu, cuda or cuda:N")
    if cfg.runtime.threads < 0:
        raise FcoslabError(f"config key 'runtime.threads' must be 0 (torch's default) or positive, got {cfg.runtime.threads}")
    validate_recipes(cfg.train)


def validate_assign(a) -> None:
    """The ranges of the assignment keys (``assign.*``); raises FcoslabError naming the key."""
    for key, value in (("assign.atss_topk", a.atss_topk), ("assign.tal_topk", a.tal_topk)):
        if value < 1:
            raise FcoslabError(f"config key '{key}' must be at least 1, got {value}")
    if not a.atss_anchor_scale > 0:
        raise FcoslabError(f"config key 'assign.atss_anchor_scale' must be positive, got {a.atss_anchor_scale}")
    for key, value in (("assign.tal_alpha", a.tal_alpha), ("assign.tal_beta", a.tal_beta)):
        if not value >= 0:
            raise FcoslabError(f"config key '{key}' must be 0 or positive, got {value}")


def validate_recipes(t) -> None:
    """The training recipes' keys (accumulation, EMA, early stopping); raises FcoslabError naming the key."""
    if t.batch_size % t.accumulate:
        raise FcoslabError(f"config key 'train.accumulate' ({t.accumulate}) must divide train.batch_size ({t.batch_size})")
    if t.ema and not (0.0 < t.ema_decay < 1.0 and t.ema_warmup >= 0):
        raise FcoslabError(f"config keys 'train.ema_decay' must be in (0, 1) and 'train.ema_warmup' at least 0, got "
                           f"{t.ema_decay} and {t.ema_warmup}")
    if t.early_stop < 0:
        raise FcoslabError(f"config key 'train.early_stop' must be 0 (off) or a number of evaluations, got {t.early_stop}")
