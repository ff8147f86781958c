"""What a training run sets up before its first step: the device and processes, the checked data, the
model with its pretrained weights and layout."""

from __future__ import annotations

import logging
import time

import torch

from .. import distributed as dist
from ..config import Config, RuntimeConfig
from ..data import dataset_image_files, describe_bad_images, find_bad_images, is_size_mismatch
from ..errors import FcoslabError
from ..modeling.finetune import init_from
from ..inference.predictor import resolve_device
from ..modeling.model import build_model, load_pretrained_backbone

log = logging.getLogger("fcoslab")


def setup_device(runtime: RuntimeConfig, batch_size: int) -> tuple[torch.device, int, int]:
    """The device of this process, its rank and the number of processes (torchrun or one process); the
    global ``batch_size`` must split evenly over the processes."""
    device = resolve_device(runtime.device)
    rank, world, local_rank = dist.init(device.type)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if batch_size % world:
        raise FcoslabError(f"config key 'train.batch_size' ({batch_size}) must be divisible by "
                           f"the number of processes ({world})")
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    return device, rank, world


def build_training_model(cfg: Config, class_names: list[str], device: torch.device, world: int,
                         pretrained: bool) -> torch.nn.Module:
    """The bare model on ``device``: for a new run (``pretrained``) the backbone's ImageNet weights and
    then ``model.init_from``'s detector; layout; SyncBatchNorm."""
    m = cfg.model
    model = build_model(cfg.model, m.num_classes or len(class_names))
    if pretrained:
        load_pretrained_backbone(model, m)
        if m.init_from:
            init_from(model, m, class_names)
        elif m.frozen_bn and not (m.backbone_weights or m.torchvision_weights):
            log.warning("frozen BatchNorm without pretrained weights: set model.backbone_weights=PATH "
                        "(or model.torchvision_weights=true, or model.init_from=RUN), or model.frozen_bn=false "
                        "to train from scratch")
    model.to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1 and not cfg.model.frozen_bn:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif dist.is_main():
            log.warning("BatchNorm statistics are per process on CPU (SyncBatchNorm needs CUDA)")
    return model


def check_dataset_images(datasets, depth: str, rank: int = 0, world: int = 1) -> None:
    """``data.check_images``: every image of the datasets checked before the first epoch (split over the
    processes), so that a truncated or foreign file stops the run now, not after an epoch of training.
    Unreadable files are an error that lists them; images whose size differs from their annotation's are
    a warning (their boxes are clipped to the annotated size)."""
    if depth == "off":
        return
    started = time.time()
    bad = []
    for ds in datasets:
        bad += find_bad_images(dataset_image_files(ds, (rank, world)), deep=depth == "deep")
    if world > 1:
        bad = [b for part in dist.all_gather_objects(bad) for b in part]
    unreadable = [(p, r) for p, r in bad if not is_size_mismatch(r)]
    if unreadable:
        raise FcoslabError(f"{len(unreadable)} image(s) cannot be read (found by data.check_images={depth} before "
                           f"training; fix or remove them, or check them all with fcoslab check-data --deep):\n"
                           + describe_bad_images(unreadable))
    if bad and dist.is_main():
        log.warning("%d image(s) differ in size from their annotation:\n%s", len(bad), describe_bad_images(bad))
    if dist.is_main():
        log.info("checked %d images (%s) in %.1f s", sum(len(ds) for ds in datasets), depth, time.time() - started)
