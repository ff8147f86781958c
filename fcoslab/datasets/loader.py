"""Datasets and loaders of a config: deterministic batches that survive resume and distribution.

Every sample's augmentation is seeded by (seed, epoch, index), and each epoch's order by (seed, epoch),
so a run resumed mid-epoch, or split over processes, sees exactly the batches of an uninterrupted
single-process run.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch

from ..config import Config
from ..errors import FcoslabError
from .coco import CocoDetection
from .shapes import make_shapes
from .transforms import build_transforms, collate

log = logging.getLogger("fcoslab")


def ensure_shapes(cfg: Config) -> None:
    """Generate the shapes set where the config asks for it and its files are missing."""
    d = cfg.data
    if d.shapes_train <= 0 or (Path(d.train_ann).exists() and Path(d.val_ann).exists()):
        return
    out = Path(d.train_ann).parent
    if Path(d.val_ann).parent != out or Path(d.train_images) != out / "train" or Path(d.val_images) != out / "val":
        raise FcoslabError("data.shapes_train is set, so the shapes set is generated, but data.train_ann, "
                           "val_ann, train_images and val_images do not follow the layout OUT/train.json, "
                           "OUT/val.json, OUT/train, OUT/val; set data.shapes_train=0 for your own data")
    log.info("generating the shapes dataset into %s (%d train, %d val images)", out, d.shapes_train, d.shapes_val)
    make_shapes(out, d.shapes_train, d.shapes_val, d.shapes_image_size, d.shapes_seed)


def build_datasets(cfg: Config, train_transforms: bool = True) -> tuple[CocoDetection, CocoDetection]:
    """The training and validation datasets of a config, checked before any training starts."""
    from .. import distributed as dist

    if dist.is_main():
        ensure_shapes(cfg)
    dist.barrier()
    d = cfg.data
    train = CocoDetection(d.train_ann, d.train_images, build_transforms(d, train=train_transforms))
    val = CocoDetection(d.val_ann, d.val_images, build_transforms(d, train=False))
    if train.index.cat_ids != val.index.cat_ids:
        raise FcoslabError(f"{d.train_ann} and {d.val_ann} have different category ids: "
                           f"{train.index.cat_ids} vs {val.index.cat_ids}")
    if len(train) == 0:
        raise FcoslabError(f"{d.train_ann} lists no images")
    if cfg.model.num_classes and cfg.model.num_classes != train.index.num_classes:
        raise FcoslabError(f"config key 'model.num_classes' is {cfg.model.num_classes} but {d.train_ann} has "
                           f"{train.index.num_classes} categories")
    return train, val


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, sample_seed)`` for one process and one epoch.

    The epoch's permutation comes from (seed, epoch); each global batch of ``batch_size`` indices is
    cut into ``world`` equal, contiguous slices and this process takes slice ``rank``. Batches before
    ``start_batch`` are skipped (resume). An epoch has ``len // batch_size`` batches (at least one:
    a set smaller than a batch is repeated to fill it).
    """

    def __init__(self, length: int, batch_size: int, rank: int, world: int, seed: int, epoch: int = 0,
                 start_batch: int = 0):
        self.length, self.batch_size, self.rank, self.world = length, batch_size, rank, world
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        self.num_batches = max(1, length // batch_size)
        self.per_rank = batch_size // world

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.length, generator=g)
        if self.length < self.batch_size:
            order = order.repeat(self.batch_size // self.length + 1)[: self.batch_size]
        for b in range(self.start_batch, self.num_batches):
            lo = b * self.batch_size + self.rank * self.per_rank
            for_rank = order[lo: lo + self.per_rank].tolist()
            yield [(i, (self.seed * 1000003 + self.epoch) * 10000019 + i) for i in for_rank]


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(index, seed)`` runs its random transforms under ``seed``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def make_loader(dataset, batch_sampler, cfg: Config, batch_size: int = 1) -> torch.utils.data.DataLoader:
    """A DataLoader padding batches to the largest stride; ``batch_sampler=None`` gives an ordered one."""
    workers = cfg.data.num_workers
    common = dict(num_workers=workers, collate_fn=partial(collate, size_divisibility=max(cfg.model.strides)),
                  pin_memory=torch.cuda.is_available(), persistent_workers=False)
    if workers > 0:
        common["multiprocessing_context"] = "fork" if hasattr(__import__("os"), "fork") else None
    if batch_sampler is None:
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
    return torch.utils.data.DataLoader(SeededSamples(dataset), batch_sampler=batch_sampler, **common)
