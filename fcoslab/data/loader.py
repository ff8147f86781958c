"""Datasets and loaders of a config: deterministic batches that survive resume and distribution.

Every sample's augmentation is seeded by (seed, epoch, index), and each epoch's order by (seed, epoch),
so a run resumed mid-epoch, or split over processes, sees exactly the batches of an uninterrupted
single-process run.
"""

from __future__ import annotations

import bisect
import os
from typing import Optional

import torch

from ..config import Config, DataConfig
from ..errors import FcoslabError
from .formats.coco import CocoDetection
from .repeat import COPY_SEED_STEP, expected_pass_length, pass_copies, pass_members
from .transforms import build_transforms


def build_datasets(cfg: Config, train_transforms: bool = True) -> tuple[CocoDetection, CocoDetection]:
    """The training and validation datasets of a config, checked before any training starts (the
    generated shapes set must exist already: :func:`fcoslab.data.synthetic.shapes.ensure_shapes`)."""
    d = cfg.data
    train = CocoDetection(d.train_ann, d.train_images, build_transforms(d, train=train_transforms),
                          cache_images=d.cache_images)
    val = CocoDetection(d.val_ann, d.val_images, build_transforms(d, train=False), cache_images=d.cache_images)
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

    The samples form one stream, pass after pass over the dataset, each pass in the order of a
    permutation seeded by (seed, pass). Epoch ``e`` takes the next ``epoch_length`` samples of the
    stream: by default one pass (its last ``length % batch_size`` samples are dropped; a set smaller
    than a batch is repeated to fill one). Each global batch of ``batch_size`` samples is cut into ``world`` equal,
    contiguous slices and this process takes slice ``rank``. Batches before ``start_batch`` are skipped
    (resume). An epoch has ``epoch_length // batch_size`` batches. A sample's augmentation seed comes
    from (seed, pass, index), so the same image drawn twice in one epoch is augmented differently.

    ``repeat_factors`` (float (N,), :func:`fcoslab.data.repeat.repeat_factors`) makes each pass show image
    ``i`` ``floor(r_i)`` times plus once more with probability ``frac(r_i)``, drawn under (seed, pass)
    (:mod:`fcoslab.data.repeat`); the passes then differ in length, so epochs are of a fixed length, by
    default the mean pass length ``sum(r_i)``, drawn pass after pass. A copy ``k > 0`` of an image gets its
    own augmentation seed. Factors that are all 1 (or None) give the sampler without repeats, bit for bit.
    """

    def __init__(self, length: int, batch_size: int, rank: int, world: int, seed: int, epoch: int = 0,
                 start_batch: int = 0, epoch_length: int = 0, repeat_factors: Optional[torch.Tensor] = None):
        self.length, self.batch_size, self.rank, self.world = length, batch_size, rank, world
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        if repeat_factors is not None and bool((repeat_factors == 1).all()):
            repeat_factors = None  # nothing is repeated: the plain passes
        self.factors = repeat_factors
        if self.factors is not None:
            epoch_length = epoch_length or expected_pass_length(self.factors)
        self.num_batches = max(epoch_length or length, batch_size) // batch_size
        one_pass = not epoch_length and length >= batch_size  # the rest of each pass is dropped
        # position of this epoch's first sample in the stream
        self.first = epoch * (length if one_pass else self.num_batches * batch_size)
        self.per_rank = batch_size // world
        self._starts = [0]  # with repeats: the stream position where each pass starts, as far as known

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def _pass(self, n: int) -> tuple[list[int], Optional[list[int]]]:
        """Pass ``n``'s samples in stream order: image indices, and each one's copy number (None: all 0)."""
        g = torch.Generator().manual_seed(self.seed * 100003 + n)
        if self.factors is None:
            return torch.randperm(self.length, generator=g).tolist(), None
        index, copy = pass_members(pass_copies(self.factors, self.seed, n))  # (S,), (S,)
        shuffle = torch.randperm(len(index), generator=g)
        return index[shuffle].tolist(), copy[shuffle].tolist()

    def _locate(self, q: int) -> tuple[int, int]:
        """(pass, position in the pass) of stream position ``q``."""
        if self.factors is None:
            return q // self.length, q % self.length
        while self._starts[-1] <= q:  # the pass lengths up to q: their repeat draws only, no shuffle
            n = len(self._starts) - 1
            self._starts.append(self._starts[-1] + int(pass_copies(self.factors, self.seed, n).sum()))
        n = bisect.bisect_right(self._starts, q) - 1
        return n, q - self._starts[n]

    def __iter__(self):
        passes: dict[int, tuple] = {}  # the passes this epoch touches
        for b in range(self.start_batch, self.num_batches):
            lo = self.first + b * self.batch_size + self.rank * self.per_rank
            batch = []
            for q in range(lo, lo + self.per_rank):
                n, k = self._locate(q)
                if n not in passes:
                    passes[n] = self._pass(n)
                order, copies = passes[n]
                i, copy = order[k], 0 if copies is None else copies[k]
                batch.append((i, (self.seed * 1000003 + n) * 10000019 + i + copy * COPY_SEED_STEP))
            yield batch


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(index, seed)`` runs its random transforms under ``seed``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            # The transforms draw from the CPU generator only; torch.manual_seed would also queue a
            # lazy CUDA seeding with a captured stack trace, which cost half of the loading time.
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]


def make_loader(dataset, batch_sampler, data: DataConfig, collate, batch_size: int = 1) -> torch.utils.data.DataLoader:
    """A DataLoader with ``data.num_workers`` workers, collating each batch's samples with ``collate``
    (:func:`fcoslab.data.transforms.collate_fn`); ``batch_sampler=None`` gives an ordered one."""
    workers = data.num_workers
    common = dict(num_workers=workers, collate_fn=collate,
                  pin_memory=torch.cuda.is_available(), persistent_workers=False)
    if workers > 0 and hasattr(os, "fork"):
        common["multiprocessing_context"] = "fork"
    if batch_sampler is None:
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
    return torch.utils.data.DataLoader(SeededSamples(dataset), batch_sampler=batch_sampler, **common)
