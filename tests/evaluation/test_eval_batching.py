"""Evaluation batches images of one padded size only (fcoslab.data.batching): an image's detections do
not depend on eval.batch_size, on the number of processes, or on the images batched with it."""


import numpy as np
import pytest
import torch

import fcoslab.distributed
from fcoslab.config import load_config
from fcoslab.data import (CocoDetection, ResizeShortest, build_transforms, collate_by_padded_size, eval_image_shape,
                              padded_shape, planned_padded_shapes, size_grouped_batches)
from fcoslab.data.formats.coco import make_sample
from fcoslab.evaluation.coco import evaluate_model, merge_shards, predict_dataset, to_coco_results
from fcoslab.inference.predictor import (BatchInvariantConv2d, BatchInvariantGroupNorm, Precision, batch_invariant_layers,
                               native_cpu_bf16)
from helpers import same_detections, spread_score_model, torchvision_fcos, write_mixed_set

CPU, FLOAT32 = torch.device("cpu"), Precision(None, "runtime.precision=off")
SMALL = {"data.test_min_size": 96, "data.max_size": 200, "data.num_workers": 0, "runtime.precision": "off"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A random shapes-preset network (its BatchNorm folded into the convolutions), its config (padding to
    32) and the mixed-size set."""
    cfg = load_config("shapes").replace(**{**SMALL, "data.test_min_size": 288, "data.max_size": 600,  # P3 >= 1024 px
                                           "model.pad_multiple": 32, "model.fpn_channels": 32,
                                           "model.head_convs": 1, "model.frozen_bn": True,  # folded
                                           "decode.score_thresh": 0.05})
    ann, images = write_mixed_set(tmp_path_factory.mktemp("mixed"))
    return spread_score_model(cfg), cfg, CocoDetection(ann, images, build_transforms(cfg.data, train=False))


def assert_same_detections(have: dict, want: dict, atol: float) -> None:
    """Each detection of ``want`` has its own in ``have``: the same label (COCO category id), score and box
    within ``atol``. Matched, not compared in order: two scores a few 1e-7 apart may swap places."""
    assert len(have["scores"]) == len(want["scores"]) > 0
    close = ((have["labels"][:, None] == want["labels"][None]) &
             ((have["scores"][:, None] - want["scores"][None]).abs() <= atol) &
             ((have["boxes"][:, None] - want["boxes"][None]).abs().amax(-1) <= atol))  # (N have, N want)
    used = set()
    for j in range(close.shape[1]):
        match = [i for i in close[:, j].nonzero()[:, 0].tolist() if i not in used]
        assert match, f"torchvision's detection {j} (score {want['scores'][j]:.6f}) has no match"
        used.add(match[0])


def coco_fields(results: list[dict]) -> list[dict]:
    """The fields fcoslab writes (pycocotools' loadRes adds area, id and segmentation to the dicts it scores)."""
    return [{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in results]


def test_grouped_batches_hand_table():
    A, B, C = (96, 128), (128, 96), (64, 224)
    assert size_grouped_batches([A, B, A, A, B, C, A], 2) == [[0, 2], [1, 4], [3, 6], [5]]
    assert size_grouped_batches([A, B, A, A, B, C, A], 3) == [[0, 2, 3], [1, 4], [5], [6]]
    assert size_grouped_batches([A] * 5, 2) == [[0, 1], [2, 3], [4]]  # one size: the batches of before
    assert size_grouped_batches([], 8) == []
    assert padded_shape(96, 127, 32) == (96, 128) and padded_shape(97, 128, 32) == (128, 128)


@pytest.mark.parametrize("data", [{"resize": "antialias"}, {"resize": "interpolate"}, {"square_size": 80}])
def test_planned_shapes_are_those_of_the_transforms(data):
    cfg = load_config("shapes").replace(**{"data.test_min_size": 97, "data.max_size": 211},
                                        **{f"data.{k}": v for k, v in data.items()})
    transforms = build_transforms(cfg.data, train=False)
    rng = np.random.default_rng(0)
    for h, w in rng.integers(20, 700, (40, 2)).tolist():
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0)
        image, _ = transforms(*make_sample(torch.zeros((3, h, w), dtype=torch.uint8), *empty))
        assert tuple(image.shape[-2:]) == eval_image_shape(h, w, cfg.data), (h, w)
    assert ResizeShortest(97, 211, "interpolate").output_shape(300, 1000, 97) == (63, 211)


def test_a_plan_from_a_wrong_json_still_pads_each_image_to_its_own_size():
    sample = lambda h, w: make_sample(torch.zeros((3, h, w), dtype=torch.uint8), np.zeros((0, 4), np.float32),
                                      np.zeros(0, np.int64), h * 1000 + w)
    batches = collate_by_padded_size([sample(96, 128), sample(60, 200), sample(90, 100)], size_divisibility=32)
    assert [b["images"].shape[-2:] for b in batches] == [(96, 128), (64, 224)]
    assert [b["image_ids"] for b in batches] == [[96128, 90100], [60200]]


def test_results_do_not_depend_on_eval_batch_size(mixed):
    model, cfg, dataset = mixed
    shapes = planned_padded_shapes(dataset, cfg)
    assert len(set(shapes)) == 4 and shapes.count((288, 384)) == 5  # image 7 planned from its file's header
    raw = {bs: predict_dataset(model, dataset, cfg.replace(**{"eval.batch_size": bs}), CPU, FLOAT32)
           for bs in (1, 3, 8)}  # 3 cuts the group of 5 into 3 + 2
    assert same_detections(raw[1], raw[8]) and same_detections(raw[3], raw[8])  # bit for bit
    evaluation = evaluate_model(model, dataset, cfg.replace(**{"eval.batch_size": 3}), CPU, FLOAT32)
    assert len(evaluation.results) > 100
    assert coco_fields(evaluation.results) == to_coco_results(raw[1], dataset.index.cat_ids)
    assert [r["image_id"] for r in evaluation.results] == sorted(r["image_id"] for r in evaluation.results)


@pytest.mark.skipif(not native_cpu_bf16()[0], reason="bfloat16 is emulated (slowly) on this CPU")
def test_bfloat16_results_do_not_depend_on_eval_batch_size(mixed):
    model, cfg, dataset = mixed
    bf16 = Precision(torch.bfloat16, "runtime.precision=bf16")
    raw = {bs: predict_dataset(model, dataset, cfg.replace(**{"eval.batch_size": bs}), CPU, bf16)
           for bs in (1, 8)}
    assert same_detections(raw[1], raw[8])


def test_two_processes_give_the_results_of_one(mixed, monkeypatch):
    model, cfg, dataset = mixed
    cfg = cfg.replace(**{"eval.batch_size": 3})
    shards = [predict_dataset(model, dataset, cfg, CPU, FLOAT32, rank, 2) for rank in (0, 1)]
    ids = [i for shard in shards for i, _ in shard]
    assert sorted(ids) == [im["id"] for im in dataset.images] and all(shards)  # every image once
    parts = [to_coco_results(shard, dataset.index.cat_ids) for shard in shards]
    monkeypatch.setattr(fcoslab.distributed, "gather_objects", lambda results: parts)  # rank 0's gather
    two = evaluate_model(model, dataset, cfg, CPU, FLOAT32, rank=0, world=2)
    one = evaluate_model(model, dataset, cfg.replace(**{"eval.batch_size": 8}), CPU, FLOAT32)
    assert coco_fields(two.results) == coco_fields(one.results) == coco_fields(merge_shards(parts[::-1], dataset))
    assert two.stats == one.stats


@pytest.mark.parametrize("threads", [2, 1])
@pytest.mark.parametrize("channels, kernel, size", [((64, 64), 3, (7, 5)), ((32, 32), 3, (16, 16)),
                                                    ((512, 128), 1, (8, 6)), ((16, 16), 7, (40, 30))])
def test_a_convolution_gives_each_image_the_result_it_has_in_any_batch(channels, kernel, size, threads):
    """(64, 3, 7x5) alone and (512, 1, 8x6) in 18 on one thread take another kernel in a plain nn.Conv2d."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(*channels, kernel, padding=kernel // 2).eval()
    batch_invariant_layers(conv)
    x = torch.randn(18, channels[0], *size).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            whole = conv(x)  # on one thread, 1x1: in slices of at most 15
            for n in (1, 2, 5):
                assert all(torch.equal(conv(x[i:i + n]), whole[i:i + n]) for i in range(0, 18 - n, 3)), n
    finally:
        torch.set_num_threads(before)
    batch_invariant_layers(conv, on=False)
    assert type(conv) is torch.nn.Conv2d


@pytest.mark.parametrize("size", [(40, 40), (12, 20)])  # PyTorch sums 1600 pixels in per-thread parts, 240 not
def test_a_group_norm_gives_each_image_the_result_it_has_in_any_batch(size):
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(32, 64).eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.normal_()
    batch_invariant_layers(norm)
    x = (torch.randn(8, 64, *size) * 3 + 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = norm(x)
        assert whole.is_contiguous(memory_format=torch.channels_last)
        assert all(torch.equal(norm(x[i:i + n]), whole[i:i + n]) for n in (1, 3) for i in (0, 4))


def test_folded_convolutions_stay_folded_and_become_batch_invariant(mixed):
    from fcoslab.modeling.model import _ConvThenFrozenBN

    model = mixed[0]
    folded = [m for m in model.modules() if isinstance(m, _ConvThenFrozenBN)]
    assert folded and all(type(m).__name__ == "BatchInvariant_ConvThenFrozenBN" for m in folded)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch_invariant_layers(model, on=False)
    try:
        assert all(type(m) is _ConvThenFrozenBN for m in folded)
        assert not any(isinstance(m, BatchInvariantConv2d) for m in model.modules())
    finally:
        batch_invariant_layers(model)
    assert all(isinstance(m, BatchInvariantConv2d) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(isinstance(m, BatchInvariantGroupNorm) for m in model.modules() if isinstance(m, torch.nn.GroupNorm))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_imported_torchvision_batched_equals_torchvision_one_image_at_a_time(tmp_path):
    from torchvision.transforms.v2 import functional as F

    from fcoslab.inference.torchvision_import import import_torchvision
    from fcoslab.inference.predictor import Predictor

    tv = torchvision_fcos(min_size=96, max_size=200)
    torch.save(tv.state_dict(), tmp_path / "fcos.pth")
    run = import_torchvision(tmp_path / "fcos.pth", tmp_path / "run", overrides=SMALL).path
    ann, image_dir = write_mixed_set(tmp_path / "set")
    predictor = Predictor(run, device="cpu", amp="off")
    assert predictor.cfg.eval.batch_size == 8
    dataset = CocoDetection(ann, image_dir, build_transforms(predictor.cfg.data, train=False))
    got = predict_dataset(predictor.model, dataset, predictor.cfg, CPU, predictor.precision)
    with torch.inference_mode():
        want = [tv([F.to_dtype(F.pil_to_tensor(dataset.load_image(i)), torch.float32, scale=True)])[0]
                for i in range(len(dataset))]
    assert sum(len(w["scores"]) for w in want) > 50
    for (_, have), w in zip(got, want):
        assert_same_detections(have, w, atol=1e-4)
