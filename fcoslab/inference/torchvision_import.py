"""torchvision's FCOS in fcoslab: its weights become an fcoslab run folder that gives the same detections.

    fcoslab import-torchvision fcos_resnet50_fpn_coco-99b0c9b7.pth --out runs/tv_fcos

The network and its post-processing are the ``tv_fcos_r50`` preset; each way torchvision's FCOS differs
from fcoslab's defaults is a config option there, not a special case here:

- points at ``i * stride`` (``model.point_offset=0``): its anchors are centred on the pixel grid;
- no learnt scale per level (``model.level_scales=false``); distances ``relu(x) * stride`` as fcoslab's
  ``relu_stride`` (its box coder multiplies by the anchor size, which equals the stride);
- resize inside its transform: float bilinear without antialiasing, sides ``floor(side * scale)``, shorter
  side 800, longer at most 1333 (``data.resize=interpolate``, ``data.test_min_size=800``, ``data.max_size=1333``);
- ImageNet normalisation before zero padding, to a multiple of 32 (``data.pad_with_mean=true``: padding
  with the mean colour is padding with zeros after normalisation; ``model.pad_multiple=32``);
- score threshold 0.2, 1000 candidates per level, NMS 0.6, 100 detections (``decode.*``);
- a 91-way classifier whose label is the COCO category id: label 0 (``__background__``) and the ten
  ``N/A`` ids are never trained. The run keeps all 91 outputs with category ids 0..90, so that its labels
  equal torchvision's; COCO's 80 categories evaluate as usual and detections of the other eleven ids are
  not scored.

Only this module knows torchvision's parameter names.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import torch

from ..config import Config, load_config
from ..errors import FcoslabError
from ..files import load_weights_file
from ..modeling.model import FCOS, build_model
from ..runfolder import RunFolder

log = logging.getLogger("fcoslab")

PRESET = "tv_fcos_r50"
_RENAMES = [  # torchvision prefix -> fcoslab prefix, first match wins
    (r"backbone\.body\.conv1\.", "backbone.stem.0."),
    (r"backbone\.body\.bn1\.", "backbone.stem.1."),
    (r"backbone\.body\.", "backbone."),
    (r"backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"fpn.lateral.\1."),
    (r"backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"fpn.output.\1."),
    (r"backbone\.fpn\.extra_blocks\.(p6|p7)\.", r"fpn.\1."),
    (r"head\.classification_head\.conv\.", "head.cls_tower."),
    (r"head\.classification_head\.cls_logits\.", "head.cls_logits."),
    (r"head\.regression_head\.conv\.", "head.reg_tower."),
    (r"head\.regression_head\.bbox_reg\.", "head.bbox_pred."),
    (r"head\.regression_head\.bbox_ctrness\.", "head.centerness."),
]


def coco_category_names() -> list[str]:
    """The names of torchvision's 91 COCO labels (label = category id; 0 and the unused ids are placeholders)."""
    from torchvision.models._meta import _COCO_CATEGORIES

    return list(_COCO_CATEGORIES)


def fcoslab_state(tv_state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """torchvision FCOS parameter names -> fcoslab's (``num_batches_tracked`` of BatchNorm is dropped:
    fcoslab's frozen BatchNorm has none). A name of no known part is an error naming it."""
    out = {}
    for key, value in tv_state.items():
        key = key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, replacement in _RENAMES:
            new, hits = re.subn("^" + pattern, replacement, key)
            if hits:
                out[new] = value
                break
        else:
            raise FcoslabError(f"{source}: parameter '{key}' is not part of torchvision's FCOS "
                               "(expected backbone.body.*, backbone.fpn.*, head.*)")
    return out


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision FCOS ``state_dict`` file (or a training checkpoint holding one under ``model``)."""
    state = load_weights_file(Path(path), "weights file")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # torchvision's reference scripts save {"model": ..., "optimizer": ...}
    if not isinstance(state, dict) or "head.classification_head.cls_logits.weight" not in state:
        raise FcoslabError(f"{path} is not a torchvision FCOS state_dict (no head.classification_head.cls_logits)")
    return state


def load_torchvision_fcos(model: FCOS, tv_state: dict[str, torch.Tensor], source: str) -> None:
    """Load torchvision FCOS weights into an fcoslab model built from the ``tv_fcos_r50`` preset (strict)."""
    state = fcoslab_state(tv_state, source)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(ours[k].shape)}" for k in set(state) & set(ours)
              if state[k].shape != ours[k].shape]
    if missing or unexpected or shapes:
        raise FcoslabError(f"{source} does not fit the {PRESET} network: missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}, other shapes {shapes[:4]}")
    model.load_state_dict(state)


def import_torchvision(weights: str | Path, out: str | Path, class_names: Optional[list[str]] = None,
                       overrides: Optional[dict] = None, force: bool = False) -> RunFolder:
    """Write a run folder (config, checkpoint, empty history) holding torchvision FCOS ``weights``.

    Args:
        weights: a ``fcos_resnet50_fpn`` state_dict file, e.g. torchvision's COCO ``fcos_resnet50_fpn_coco-99b0c9b7.pth``.
        class_names: names of the classifier's outputs; default COCO's 91 torchvision labels (for a
            91-way head), else ``class_k``.
        overrides: config overrides on top of the ``tv_fcos_r50`` preset (e.g. the data paths).
    Returns:
        the run folder, which ``fcoslab evaluate``/``predict``, the notebooks and the viewer open like any run.
    """
    if RunFolder(out).has_checkpoint() and not force:
        raise FcoslabError(f"{out} already holds a run ({RunFolder.CHECKPOINT}); choose another --out, or --force "
                           "to replace it")
    state = read_state(weights)
    num_classes = state["head.classification_head.cls_logits.weight"].shape[0]
    if class_names is None:
        class_names = coco_category_names() if num_classes == 91 else [f"class_{k}" for k in range(num_classes)]
    if len(class_names) != num_classes:
        raise FcoslabError(f"{weights} has {num_classes} classes but {len(class_names)} names were given")
    cfg: Config = load_config(PRESET, {"model.num_classes": num_classes, **(overrides or {})})
    model = build_model(cfg.model, num_classes)
    load_torchvision_fcos(model, state, str(weights))
    folder = RunFolder(out)
    folder.check_writable()
    folder.start(cfg.to_dict(), [])
    folder.save({"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": num_classes,
                 "cat_ids": list(range(num_classes)), "class_names": list(class_names), "epoch": 0,
                 "history": [], "imported_from": str(Path(weights).resolve())})
    log.info("imported %s (%d classes) into %s", weights, num_classes, folder.path)
    return folder
