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
class DataConfig:
    train_ann: str = "data/shapes/train.json"  # COCO json of the training set
    train_images: str = "data/shapes/train"  # folder its file_name entries are relative to
    val_ann: str = "data/shapes/val.json"  # COCO json of the validation set
    val_images: str = "data/shapes/val"  # folder of the validation images
    # Training resize: shorter side drawn from min_size (scale jitter), longer side at most max_size.
    min_size: tuple[int, ...] = (800,)
    max_size: int = 1333  # longer side at most this (training and evaluation)
    test_min_size: int = 800  # evaluation and prediction: shorter side
    hflip: float = 0.5  # probability of a horizontal flip in training
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength in training; 0 = off
    num_workers: int = 2  # data-loader processes (0: load in the training process)
    cache_images: bool = False  # keep decoded images in memory (small datasets; use with num_workers=0)
    # Before the first epoch, check every training and validation image: header (format, size, and that the
    # file is complete), deep (decode each in full) or off (fcoslab.data.image_check)
    check_images: str = "header"
    # antialias: uint8 resize with antialiasing to round(side * scale); interpolate: torchvision's detection
    # transform (float bilinear without antialiasing, sides floor(side * scale)), for imported torchvision models
    resize: str = "antialias"
    # >0: square inputs of this side: training takes a random resized crop (area 30-100%, aspect 3:4-4:3) of
    # the image, evaluation resizes the whole image to the square (aspect not kept); min_size etc. unused
    square_size: int = 0
    min_box_area: float = 0.0  # training boxes smaller than this (px^2, after the resize) are dropped
    keep_small_boxes: bool = False  # keep boxes under 1 px wide or high (after the resize), as torchvision does
    pad_with_mean: bool = False  # pad with the ImageNet mean colour, i.e. zeros after normalisation (torchvision)


@dataclass(frozen=True)
class ShapesConfig:
    """The generated shapes set that ``data``'s paths point at (a config without this section never
    generates anything): made into the annotation files' folder when missing or made otherwise."""
    train: int = 4608  # training images generated
    val: int = 128  # validation images generated
    image_size: int = 128  # side of the square images, px
    seed: int = 0  # generator seed
    min_side: float = 0.12  # smallest object side as a fraction of image_size


# pyramids: P3 or P2 up to P5 from the backbone, then none, P6 or P6-P7
VALID_STRIDES = tuple(tuple(2 ** k for k in range(first, last + 1)) for first in (3, 2) for last in (5, 6, 7))


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = 0  # 0: taken from the training annotation file
    backbone: str = "resnet50"  # resnet10 | resnet18 | resnet34 | resnet50 | resnet101
    backbone_width: int = 64  # channels of the first stage (resnet10/18/34 only; 64 = torchvision's)
    backbone_weights: str = ""  # local state_dict file; "" = random init
    torchvision_weights: bool = False  # use torchvision's weight enum (needs network or its cache)
    init_from: str = ""  # a run folder or checkpoint: every tensor whose name and shape fit (fcoslab.modeling.finetune)
    init_class_map: tuple[str, ...] = ()  # "old:new" class names whose classifier rows carry over (equal names do)
    frozen_bn: bool = True  # backbone BatchNorm with fixed statistics and affine (pretrained backbones)
    freeze_at: int = 2  # 0 none, 1 stem, 2 stem + layer1, ... up to 5
    fpn_channels: int = 256  # channels of the FPN and the heads
    p6_from: str = "p5"  # p5 | c5
    head_convs: int = 4  # 3x3 convs in each head tower
    head_norm: str = "gn"  # gn | none
    centerness: bool = True  # predict center-ness (on the regression tower) and use it in scores
    regression: str = "relu_stride"  # exp | relu_stride
    # P3-P7; (8, 16, 32) = P3-P5 only; (4, 8, ...) adds P2 for small objects (VALID_STRIDES lists them)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    point_offset: float = 0.5  # points at (i + offset) * stride; torchvision's FCOS uses 0
    # stride: points spaced by the level's stride; input_ratio: by padded input size // level size, as
    # torchvision's anchor generator does (differs on P6/P7 when inputs are padded to less than 128)
    point_spacing: str = "stride"
    level_scales: bool = True  # a learnt scale per level on the regression (torchvision's FCOS has none)
    pad_multiple: int = 0  # inputs padded to a multiple of this; 0 = the largest stride
    prior_prob: float = 0.01  # initial foreground probability of the classifier's bias
    channels_last: bool = False  # channels-last memory format in training

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of ``pad_multiple``, by default the largest stride, so that each
        level is exactly half the one below (any multiple works: each level is ceil(half) of the one below)."""
        return self.pad_multiple or max(self.strides)


@dataclass(frozen=True)
class AssignConfig:
    # per level (lo, hi): a point may learn a box when max(l, t, r, b) is in [lo, hi] (assign.range_bounds)
    regress_ranges: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
    center_radius: Optional[float] = 1.5  # None turns center sampling off
    range_bounds: str = "closed"  # closed: lo <= max(l, t, r, b) <= hi; open: lo < max < hi (torchvision's FCOS)
    area_order: str = "exact"  # exact: smallest area wins; float32_1e8: torchvision's max of float32(1e8 - area)


@dataclass(frozen=True)
class LossConfig:
    box: str = "giou"  # iou (-log IoU) | giou (1 - GIoU)
    focal_alpha: float = 0.25  # focal loss weight of positives
    focal_gamma: float = 2.0  # focal loss focusing exponent
    box_weight: float = 1.0  # weight of the box (GIoU/IoU) loss
    centerness_weighted_box: bool = True  # weight box loss by center-ness targets (when center-ness is on)
    num_pos_per_process: bool = False  # True: each process divides by its own positives (torchvision under DDP)


@dataclass(frozen=True)
class DecodeConfig:
    score_thresh: float = 0.05  # candidates below this score are dropped
    pre_nms_topk: int = 1000  # per level
    nms_thresh: float = 0.6  # IoU of class-aware NMS
    class_agnostic_nms: bool = False  # True: boxes of different classes suppress each other too
    max_detections: int = 100  # detections kept an image


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12  # length of the run
    # Images per epoch; 0 = one pass over the training set. A fixed number gives a run the same length
    # (steps, warm-up, decays, evaluations) on any dataset: an epoch then draws that many images, pass
    # after pass over the set.
    images_per_epoch: int = 0
    batch_size: int = 16  # global: split over processes under torchrun
    optimizer: str = "sgd"  # sgd (momentum) | adamw
    lr: float = 0.01  # peak learning rate (for the global batch)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # on weights only (not norms, biases, scales)
    warmup_iters: int = 500  # at most a quarter of the run
    warmup_factor: float = 1.0 / 3  # learning rate at step 0, a fraction of lr
    lr_schedule: str = "step"  # step (x lr_gamma at each of lr_steps) | cosine (to 0 at the last step)
    lr_steps: tuple[float, ...] = (8, 11)  # epochs (fractions allowed) after which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1  # factor at each of lr_steps
    grad_clip: float = 0.0  # 0 = off
    freeze: str = "none"  # none | backbone | backbone_fpn (head only): parameters kept fixed (fcoslab.modeling.finetune)
    freeze_epochs: int = 0  # ... for the first N epochs; 0 = the whole run
    amp: str = "auto"  # auto (fp16 on CUDA) | fp16 | bf16 | off
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    eval_batch_size: int = 8  # images per evaluation batch (per process); evaluate and predict use it too
    checkpoint_every: int = 0  # iterations between mid-epoch checkpoints; 0 = epoch ends only
    # Minutes between mid-epoch checkpoints (0 = off): a kill -9 loses at most this; Ctrl-C/SIGTERM save at once
    checkpoint_minutes: float = 10.0
    max_nonfinite: int = 5  # consecutive non-finite losses that stop training
    seed: int = 0  # initialisation, order of images and augmentations
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    tensorboard: bool = False  # also log to RUN/tensorboard (history.json stays the record)
    log_every: int = 20  # steps between TensorBoard's loss and lr points (also step 1, and the last before an eval)


@dataclass(frozen=True)
class EvalConfig:
    """What every evaluation computes and records in ``history.json``."""
    metrics: str = "coco"  # coco | voc | both: COCO's 12 numbers and per-class AP; VOC AP (fcoslab.evaluation.voc)
    best_metric: str = "AP"  # the history key (higher is better) that picks best.pt, e.g. AP50 or voc_mAP50
    backend: str = "pycocotools"  # pycocotools | faster: faster-coco-eval, the same COCO numbers (1e-4) sooner


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    shapes: Optional[ShapesConfig] = None  # the generated set the data paths point at, if any
    model: ModelConfig = field(default_factory=ModelConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with ``{"train.epochs": 2, ...}``-style overrides applied (checked like the CLI's)."""
        return apply_overrides(self, overrides)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


DATA_PATH_KEYS = ("data.train_ann", "data.train_images", "data.val_ann", "data.val_images")
PATH_KEYS = DATA_PATH_KEYS + ("model.backbone_weights", "model.init_from")  # anchored by load_config (see project_root)
OPTIONAL_SECTIONS = {"shapes": ShapesConfig}
_NONE = (None, "none", "null", "None")


def _legacy_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    """Configs saved before the ``shapes`` section had ``data.shapes_train`` (0 = never generate),
    ``data.shapes_val``, ...: read them as the section (so old run folders still load)."""
    if not any(k.startswith("data.shapes_") for k in overrides):
        return overrides
    out = {k: v for k, v in overrides.items() if not k.startswith("data.shapes_")}
    old = {k.removeprefix("data.shapes_"): v for k, v in overrides.items() if k.startswith("data.shapes_")}
    if "train" in old and coerce(old["train"], int, "data.shapes_train") <= 0:
        out["shapes"] = None
    else:
        out.update({f"shapes.{k}": v for k, v in old.items()})
    return out


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply flat ``{"section.key": value}`` overrides; unknown keys list the valid ones.

    ``{"shapes": None}`` (``shapes=none`` on the command line) removes the optional ``shapes`` section;
    a ``shapes.*`` key adds it. Overrides that give the data paths (any of :data:`DATA_PATH_KEYS`) without
    any ``shapes`` key also remove it: the four paths alone point any preset at the user's data, and the
    generated shapes set is then neither made nor checked.
    """
    overrides = _legacy_keys(overrides)
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


CHOICES = {  # keys whose value is one of a few words
    "model.backbone": ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101"), "model.p6_from": ("p5", "c5"),
    "model.head_norm": ("gn", "none"), "model.regression": ("exp", "relu_stride"), "loss.box": ("iou", "giou"),
    "model.point_spacing": ("stride", "input_ratio"), "data.resize": ("antialias", "interpolate"),
    "data.check_images": ("off", "header", "deep"), "assign.range_bounds": ("closed", "open"),
    "assign.area_order": ("exact", "float32_1e8"), "train.amp": ("auto", "fp16", "bf16", "off"),
    "train.optimizer": ("sgd", "adamw"), "train.lr_schedule": ("step", "cosine"),
    "train.freeze": ("none", "backbone", "backbone_fpn"), "eval.metrics": ("coco", "voc", "both"),
    "eval.backend": ("pycocotools", "faster")}


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    m = cfg.model
    for key, allowed in CHOICES.items():
        section, _, name = key.partition(".")
        if getattr(getattr(cfg, section), name) not in allowed:
            raise FcoslabError(f"config key '{key}': '{getattr(getattr(cfg, section), name)}' is not one of "
                               f"{', '.join(allowed)}")
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
                       ("data.max_size", cfg.data.max_size), ("train.eval_every", cfg.train.eval_every),
                       ("train.eval_batch_size", cfg.train.eval_batch_size), ("train.log_every", cfg.train.log_every)):
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
    if cfg.data.square_size < 0 or cfg.data.min_box_area < 0:
        raise FcoslabError("config keys 'data.square_size' and 'data.min_box_area' must be 0 (off) or positive")
    if m.pad_multiple < 0 or (m.pad_multiple and m.pad_multiple % 32):
        raise FcoslabError(f"config key 'model.pad_multiple' must be 0 (the largest stride) or a multiple of 32 "
                           f"(the backbone's C5 stride), got {m.pad_multiple}")
    if not 0 <= m.freeze_at <= 5:
        raise FcoslabError(f"config key 'model.freeze_at' must be in 0..5, got {m.freeze_at}")
