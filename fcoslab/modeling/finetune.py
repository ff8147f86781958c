"""Starting from another detector: ``model.init_from`` and ``train.freeze``.

``model.init_from=RUN_OR_CKPT`` loads every tensor of a saved fcoslab model (a trained run, or an
imported torchvision FCOS) whose name and shape fit. The classifier is the one part that depends on the
class set: with the same classes in the same order it loads as is; otherwise each new class takes the
row of the old class of the same name (or the one ``model.init_class_map`` names, ``"old:new"``), and
the other classes start fresh, with the prior-probability bias.

``train.freeze`` keeps the backbone (``backbone``) or the backbone and FPN (``backbone_fpn``, i.e. the
head only) fixed, for the first ``train.freeze_epochs`` epochs or, with 0, the whole run. Only
parameters are frozen: BatchNorm statistics still update unless ``model.frozen_bn``.
"""

from __future__ import annotations

import logging

import torch

from .. import distributed as dist
from ..config import ModelConfig, TrainConfig
from ..errors import FcoslabError
from ..runfolder import load_checkpoint

log = logging.getLogger("fcoslab")

CLASSIFIER = ("head.cls_logits.weight", "head.cls_logits.bias")  # rows: (K, ...)
FREEZE_PARTS = {"none": (), "backbone": ("backbone",), "backbone_fpn": ("backbone", "fpn")}


def class_rows(old_names: list[str], new_names: list[str], class_map: tuple[str, ...]) -> dict[int, int]:
    """``{new label: old label}`` for the new classes that keep an old classifier row: by
    ``"old:new"`` entries of ``class_map`` first, then by equal names."""
    old_index: dict[str, int] = {}
    for i, name in enumerate(old_names):
        old_index.setdefault(name, i)
    wanted = {}
    for entry in class_map:
        old, sep, new = entry.partition(":")
        if not sep or old not in old_index or new not in new_names:
            raise FcoslabError(f"config key 'model.init_class_map': '{entry}' must be 'old:new' with an old class "
                               f"of the checkpoint and a new class of the data (new classes: {', '.join(new_names)})")
        wanted[new] = old
    return {j: old_index[wanted.get(name, name)] for j, name in enumerate(new_names)
            if wanted.get(name, name) in old_index}


def init_from(model: torch.nn.Module, cfg: ModelConfig, class_names: list[str]) -> dict:
    """Load ``cfg.init_from`` into ``model`` (in place) as described in the module docstring.

    Returns:
        a report: ``loaded`` / ``skipped`` (name -> reason) tensor names, ``classes_kept`` new class names
        whose row came from the checkpoint, ``classes_mapped`` those of them whose row came from an old class
        of another name (``{new: old}``, from ``model.init_class_map``), ``classes_fresh`` the others.
    """
    ckpt = load_checkpoint(cfg.init_from, "config key 'model.init_from': checkpoint")
    theirs, old_names = ckpt["model"], list(ckpt["class_names"])
    ours = model.state_dict()
    same_classes = old_names == list(class_names)
    rows = {} if same_classes else class_rows(old_names, list(class_names), cfg.init_class_map)
    state, skipped = {}, {}
    for name, tensor in ours.items():
        if name not in theirs:
            skipped[name] = "not in the checkpoint"
        elif name in CLASSIFIER and not same_classes and theirs[name].shape[1:] == tensor.shape[1:]:
            value = tensor.clone()
            for new, old in rows.items():
                value[new] = theirs[name][old]
            state[name] = value
        elif theirs[name].shape != tensor.shape:
            skipped[name] = f"shape {tuple(theirs[name].shape)} in the checkpoint, {tuple(tensor.shape)} here"
        else:
            state[name] = theirs[name]
    model.load_state_dict(state, strict=False)
    if CLASSIFIER[0] not in state:  # a classifier of another width (fpn_channels) keeps nothing
        rows = {}
    kept = [class_names[j] for j in sorted(rows)] if not same_classes else list(class_names)
    fresh = [n for n in class_names if n not in kept]
    mapped = {class_names[j]: old_names[i] for j, i in rows.items() if old_names[i] != class_names[j]}
    log.info("init_from %s: loaded %d of %d tensors; classifier: %s", cfg.init_from, len(state), len(ours),
             "the same classes" if same_classes else _classifier_summary(kept, mapped, fresh))
    for name, why in list(skipped.items())[:10]:
        log.info("init_from: not loaded %s (%s)", name, why)
    return {"loaded": sorted(state), "skipped": skipped, "classes_kept": kept, "classes_mapped": mapped,
            "classes_fresh": fresh}


def _classifier_summary(kept: list[str], mapped: dict[str, str], fresh: list[str]) -> str:
    """``2 classes kept by name (a, b), 1 by model.init_class_map (old->x), 1 fresh (y)``."""
    by_name = [n for n in kept if n not in mapped]
    listed = lambda names: ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") or "-"  # noqa: E731
    return (f"{len(by_name)} classes kept by name ({listed(by_name)}), {len(mapped)} by model.init_class_map "
            f"({listed([f'{old}->{new}' for new, old in mapped.items()])}), {len(fresh)} fresh ({listed(fresh)})")


def apply_freeze(model: torch.nn.Module, t: TrainConfig, epoch: int, trainable: dict[str, bool]) -> bool:
    """Set ``requires_grad`` for ``epoch`` (0-based) under ``train.freeze``; ``trainable`` holds each
    parameter's flag without it (stages frozen by ``model.freeze_at`` stay frozen). Returns whether any
    flag changed (a DistributedDataParallel wrapper must then be rebuilt); each change is logged once, by
    the main process, with the epoch (1-based, as the progress bar counts) from which it holds."""
    frozen_now = t.freeze != "none" and (t.freeze_epochs == 0 or epoch < t.freeze_epochs)
    parts = FREEZE_PARTS[t.freeze] if frozen_now else ()
    changed = []
    for name, p in model.named_parameters():
        want = trainable[name] and name.split(".")[0] not in parts
        if p.requires_grad != want:
            p.requires_grad_(want)
            changed.append(p)
    if changed and dist.is_main():
        names = "+".join(FREEZE_PARTS[t.freeze])
        size = f"{len(changed)} tensors, {sum(p.numel() for p in changed) / 1e6:.2f}M parameters"
        if frozen_now:
            until = f"epochs 1-{t.freeze_epochs}" if t.freeze_epochs else "the whole run"
            log.info("epoch %d: train.freeze=%s: %s frozen (%s) for %s", epoch + 1, t.freeze, names, size, until)
        else:
            log.info("epoch %d: train.freeze=%s ends (train.freeze_epochs=%d): %s trains from now on (%s)",
                     epoch + 1, t.freeze, t.freeze_epochs, names, size)
    return bool(changed)
