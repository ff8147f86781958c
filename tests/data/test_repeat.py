"""Repeat-factor sampling (data.repeat_threshold, fcoslab.data.repeat): LVIS's rule on a skewed set, and the
sampler's guarantees kept with it: one seed one stream, torchrun shards, resume mid-epoch, fixed-length epochs."""

import math

import numpy as np
import pytest
import torch

from fcoslab.config import load_config
from fcoslab.data import CocoDetection, EpochBatchSampler, check_coco_dict, image_labels, repeat_factors, train_repeat_factors
from fcoslab.data.repeat import describe, expected_pass_length, pass_copies, pass_members
from fcoslab.errors import FcoslabError

N, RARE = 200, 4  # the rare class is in 4 of 200 images: 2%


def skewed_coco(n=N, rare=RARE) -> dict:
    """A COCO dict where every image holds a 'common' box, the first ``rare`` also a 'rare' one (and a crowd
    'rare' box on the last image, which the training targets leave out), and image ``rare`` is empty."""
    images = [{"id": 100 + i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(n)]
    anns = [{"image_id": 100 + i, "category_id": 7, "bbox": [1, 1, 10, 10]} for i in range(n) if i != rare]
    anns += [{"image_id": 100 + i, "category_id": 9, "bbox": [20, 20, 8, 8]} for i in range(rare)]
    anns += [{"image_id": 100 + n - 1, "category_id": 9, "bbox": [30, 30, 8, 8], "iscrowd": 1}]
    return {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "common"}, {"id": 9, "name": "rare"}]}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """The skewed set as a dataset whose images do not exist: its labels come from the annotations alone."""
    return CocoDetection("skewed.json", tmp_path_factory.mktemp("no_images"), check_images=False,
                         data=check_coco_dict(skewed_coco(), "skewed"))


def legacy_batches(length, batch_size, rank, world, seed, epoch=0, start_batch=0, epoch_length=0):
    """The sampler before repeat factors, written as a loop over the stream (the reference for t = 0)."""
    num_batches = max(epoch_length or length, batch_size) // batch_size
    one_pass = not epoch_length and length >= batch_size
    first = epoch * (length if one_pass else num_batches * batch_size)
    per_rank = batch_size // world
    out = []
    for b in range(start_batch, num_batches):
        batch = []
        for q in range(first + b * batch_size + rank * per_rank, first + b * batch_size + (rank + 1) * per_rank):
            n = q // length
            order = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100003 + n)).tolist()
            i = order[q % length]
            batch.append((i, (seed * 1000003 + n) * 10000019 + i))
        out.append(batch)
    return out


def test_factors_hand_table(skewed):
    labels = image_labels(skewed)
    assert len(labels) == N and labels[0].tolist() == [0, 1] and labels[RARE].tolist() == [] and labels[N - 1].tolist() == [0]
    r = repeat_factors(labels, 0.08)  # rare: f = 0.02, sqrt(0.08 / 0.02) = 2; common: f = 199/200 -> 1
    assert r.dtype == torch.float64 and r[:RARE].tolist() == [2.0] * RARE and (r[RARE:] == 1).all()
    r = repeat_factors(labels, 1.0)
    assert r[0] == pytest.approx(math.sqrt(50)) and r[RARE] == 1.0 and r[5] == pytest.approx(math.sqrt(200 / 199))
    assert repeat_factors([np.array([3, 3, 3]), np.array([], np.int64)], 0.5).tolist() == [1.0, 1.0]  # f = 1/2: r = 1
    assert train_repeat_factors(skewed, 0.0) is None
    assert "4 of 200 images repeated" in describe(repeat_factors(labels, 0.08), 0.08)


def test_pass_members_list_every_copy():
    index, copy = pass_members(torch.tensor([1, 3, 1, 2]))
    assert index.tolist() == [0, 1, 2, 3, 1, 3, 1] and copy.tolist() == [0, 0, 0, 0, 1, 1, 2]
    index, copy = pass_members(torch.ones(5, dtype=torch.long))
    assert index.tolist() == list(range(5)) and copy.tolist() == [0] * 5


def test_rare_share_rises_to_the_expected_value(skewed):
    t = 0.1
    r = train_repeat_factors(skewed, t)  # the rare images: sqrt(0.1 / 0.02) = 2.236
    copies = torch.stack([pass_copies(r, 0, n) for n in range(400)]).double()  # (passes, N)
    assert set(copies[:, 0].tolist()) == {2.0, 3.0} and (copies[:, RARE:] == 1).all()
    assert copies[:, :RARE].mean().item() == pytest.approx(math.sqrt(5), abs=0.03)
    sampler = EpochBatchSampler(N, 5, 0, 1, seed=0, repeat_factors=r)
    assert sampler.num_batches == expected_pass_length(r) // 5 == 41  # round(196 + 4 * 2.236) = 205 a pass
    drawn = [i for epoch in range(30) for b in EpochBatchSampler(N, 5, 0, 1, seed=0, epoch=epoch, repeat_factors=r)
             for i, _ in b]
    share = float(np.isin(drawn, range(RARE)).mean())
    expected = RARE * math.sqrt(5) / (N - RARE + RARE * math.sqrt(5))  # 4.36%, against 2% without repeats
    assert share == pytest.approx(expected, rel=0.05)


def test_one_stream_per_seed(skewed):
    r = train_repeat_factors(skewed, 0.1)
    a = list(EpochBatchSampler(N, 8, 0, 1, seed=4, epoch=2, repeat_factors=r))
    assert a == list(EpochBatchSampler(N, 8, 0, 1, seed=4, epoch=2, repeat_factors=r.clone()))
    assert a != list(EpochBatchSampler(N, 8, 0, 1, seed=5, epoch=2, repeat_factors=r))
    assert a != list(EpochBatchSampler(N, 8, 0, 1, seed=4, epoch=3, repeat_factors=r))
    seeds = [s for b in a for _, s in b]
    assert len(set(seeds)) == len(seeds)  # the copies of an image are augmented differently


@pytest.mark.parametrize("epoch_length", [0, 96])
def test_shards_and_resume_with_repeats(skewed, epoch_length):
    r = train_repeat_factors(skewed, 0.3)  # the rare images 3.9 times, so passes are 212 +- 2
    for epoch in (0, 3):
        whole = list(EpochBatchSampler(N, 8, 0, 1, seed=1, epoch=epoch, epoch_length=epoch_length, repeat_factors=r))
        parts = [list(EpochBatchSampler(N, 8, k, 2, seed=1, epoch=epoch, epoch_length=epoch_length, repeat_factors=r))
                 for k in range(2)]
        assert len(whole) == len(parts[0]) == (epoch_length or expected_pass_length(r)) // 8
        for b, batch in enumerate(whole):
            assert not set(parts[0][b]) & set(parts[1][b]) and parts[0][b] + parts[1][b] == batch
        for start in (1, len(whole) - 1):
            again = EpochBatchSampler(N, 8, 0, 1, seed=1, epoch=epoch, start_batch=start, epoch_length=epoch_length,
                                      repeat_factors=r)
            assert len(again) == len(whole) - start and list(again) == whole[start:]


def test_fixed_length_epochs_continue_the_stream(skewed):
    r = train_repeat_factors(skewed, 0.3)
    two = [s for b in EpochBatchSampler(N, 8, 0, 1, seed=2, epoch_length=480, repeat_factors=r) for s in b]
    ones = [s for e in (0, 1) for b in EpochBatchSampler(N, 8, 0, 1, seed=2, epoch=e, epoch_length=240,
                                                         repeat_factors=r) for s in b]
    assert two == ones and len(two) == 480  # 480 samples span 3 passes of about 212


@pytest.mark.parametrize("args", [(20, 8, 0, 1, 5, 2, 0, 0), (20, 8, 1, 2, 5, 2, 1, 0), (20, 4, 0, 2, 3, 1, 0, 50),
                                  (6, 8, 0, 1, 0, 3, 0, 0), (N, 16, 1, 4, 7, 4, 2, 1000)])
def test_threshold_zero_is_the_sampler_of_before(skewed, args):
    length, batch_size, rank, world, seed, epoch, start, epoch_length = args
    kwargs = dict(epoch=epoch, start_batch=start, epoch_length=epoch_length)
    want = legacy_batches(length, batch_size, rank, world, seed, **kwargs)
    assert list(EpochBatchSampler(length, batch_size, rank, world, seed, **kwargs)) == want
    ones = torch.ones(length, dtype=torch.float64)  # a threshold that repeats nothing
    assert list(EpochBatchSampler(length, batch_size, rank, world, seed, repeat_factors=ones, **kwargs)) == want
    if length == N:
        none = train_repeat_factors(skewed, 0.0)
        assert list(EpochBatchSampler(length, batch_size, rank, world, seed, repeat_factors=none, **kwargs)) == want


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_threshold_is_checked(value):
    with pytest.raises(FcoslabError, match="data.repeat_threshold"):
        load_config("shapes", {"data.repeat_threshold": value})
    assert load_config("shapes", {"data.repeat_threshold": 0.01}).data.repeat_threshold == 0.01
