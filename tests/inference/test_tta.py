"""Test-time augmentation (eval.tta, fcoslab.inference.tta): views mapped back to the image's pixels, merged
by NMS, and evaluation's guarantees kept: off is the evaluation of before, on does not depend on
eval.batch_size or the number of processes, and the Predictor gives what evaluation scored."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from fcoslab.apps.cli import main
from fcoslab.config import load_config
from fcoslab.data import CocoDetection, build_transforms
from fcoslab.data.synthetic.shapes import CATEGORY_IDS, CLASSES
from fcoslab.errors import FcoslabError
from fcoslab.evaluation.coco import evaluate_model, evaluation_loader, predict_dataset
from fcoslab.inference.predictor import Precision, Predictor, predict_batches
from fcoslab.inference.tta import HorizontalFlip, merge_views, tta_views, unflip, view_dataset
from fcoslab.modeling.model import build_model
from helpers import same_detections, spread_score_model, write_mixed_set
from helpers import tiny_overrides

CPU, FLOAT32 = torch.device("cpu"), Precision(None, "runtime.precision=off")
TTA = {"eval.tta": True, "eval.tta_sizes": [64, 128]}


def save_untrained_run(shapes_dir, path):
    """An untrained tiny shapes run saved by hand (padding to 32), with a spread classifier so that it detects."""
    from fcoslab.runfolder import RunFolder

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"model.pad_multiple": 32, "data.max_size": 128}))
    torch.manual_seed(0)
    model = build_model(cfg.model, 4)
    torch.nn.init.normal_(model.head.cls_logits.weight, std=0.3)
    folder = RunFolder(path)
    folder.check_writable()  # makes the folder
    folder.start(cfg.to_dict(), [])
    folder.save({"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": 4, "cat_ids": list(CATEGORY_IDS),
                 "class_names": list(CLASSES), "epoch": 0, "history": []})
    return folder.path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A random shapes-preset network padding to 32, at test size 96, and a set of mixed image sizes."""
    cfg = load_config("shapes").replace(**{"data.test_min_size": 96, "data.max_size": 200, "data.num_workers": 0,
                                           "runtime.precision": "off", "model.pad_multiple": 32,
                                           "model.fpn_channels": 32, "model.head_convs": 1})
    ann, images = write_mixed_set(tmp_path_factory.mktemp("mixed"))
    return spread_score_model(cfg), cfg, CocoDetection(ann, images, build_transforms(cfg.data, train=False))


def test_views_hand_table():
    cfg = load_config("shapes", {"data.test_min_size": 128, "data.max_size": 128})
    assert [(v.size, v.flip) for v in tta_views(cfg)] == [(128, False)]
    assert tta_views(cfg)[0].data is cfg.data
    on = cfg.replace(**{"eval.tta": True, "eval.tta_sizes": [96, 128, 160]})  # 128 is the test size: once
    views = tta_views(on)
    assert [(v.size, v.flip) for v in views] == [(128, False), (128, True), (96, False), (96, True), (160, False),
                                                 (160, True)]
    assert views[0].data is on.data and views[1].data is on.data
    assert (views[2].data.test_min_size, views[2].data.max_size) == (96, 96)  # max_size scaled alike
    assert (views[4].data.test_min_size, views[4].data.max_size) == (160, 160)  # not capped at the 128 of before
    square = on.replace(**{"data.square_size": 80, "eval.tta_flip": False, "eval.tta_sizes": [112]})
    assert [(v.size, v.flip, v.data.square_size) for v in tta_views(square)] == [(80, False, 80), (112, False, 112)]
    with pytest.raises(FcoslabError, match="eval.tta_sizes"):
        load_config("shapes", {"eval.tta_sizes": [0]})


def test_unflip_hand_table():
    det = {"boxes": torch.tensor([[10.0, 5, 30, 20], [0, 0, 100, 50]]), "scores": torch.tensor([0.9, 0.5]),
           "labels": torch.tensor([1, 0])}
    back = unflip(det, 100)
    assert back["boxes"].tolist() == [[70.0, 5, 90, 20], [0, 0, 100, 50]]
    assert back["scores"] is det["scores"] and back["labels"] is det["labels"]
    assert unflip(unflip(det, 100), 100)["boxes"].tolist() == det["boxes"].tolist()
    assert unflip({"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
                  64)["boxes"].shape == (0, 4)


def test_flip_transform_moves_image_and_boxes_together():
    from torchvision import tv_tensors

    image = tv_tensors.Image(torch.arange(2 * 3 * 5, dtype=torch.uint8).reshape(3, 2, 5))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[1.0, 0, 2, 1]]), format="XYXY", canvas_size=(2, 5))
    flipped, target = HorizontalFlip()(image, {"boxes": boxes, "labels": torch.tensor([0])})
    assert torch.equal(flipped, image.flip(-1)) and target["boxes"].tolist() == [[3.0, 0, 4, 1]]


def test_a_box_on_the_flipped_image_lands_at_the_mirrored_place(mixed, tmp_path):
    """On a left-right symmetric image at the test size (no resize) the flipped view sees the same pixels:
    each of its boxes must come back as the mirror image of the plain view's box."""
    model, cfg, _ = mixed
    rng = np.random.default_rng(3)
    half = np.asarray(Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).resize((64, 96), Image.BILINEAR))
    pixels = np.concatenate([half, half[:, ::-1]], axis=1)  # (96, 128, 3), symmetric
    sizes = [(128, 96, "RGB")]
    ann, images = write_mixed_set(tmp_path / "sym", sizes=sizes)
    Image.fromarray(pixels).save(images / "0.png")
    dataset = CocoDetection(ann, images, build_transforms(cfg.data, train=False))
    plain_view, flip_view = tta_views(cfg.replace(**{"eval.tta": True}))
    assert not plain_view.flip and flip_view.flip
    flipped = view_dataset(dataset, flip_view, plain=False)
    assert torch.equal(flipped[0][0], dataset[0][0])  # symmetric: the same network input
    batches = lambda ds: (b for bs in evaluation_loader(ds, cfg) for b in bs)
    (_, plain), = predict_batches(model, batches(dataset), cfg, CPU, FLOAT32)
    (_, mirrored), = predict_batches(model, batches(flipped), cfg, CPU, FLOAT32, flip=True)
    assert len(plain["scores"]) > 5 and torch.equal(mirrored["scores"], plain["scores"])
    x1, y1, x2, y2 = plain["boxes"].unbind(1)
    torch.testing.assert_close(mirrored["boxes"], torch.stack([128 - x2, y1, 128 - x1, y2], 1), atol=1e-4, rtol=0)


def test_merge_keeps_the_best_in_score_order():
    g = torch.Generator().manual_seed(0)
    dets = []
    for n in (40, 35, 50):
        xy = torch.rand(n, 2, generator=g) * 80
        wh = torch.rand(n, 2, generator=g) * 30 + 2
        dets.append({"boxes": torch.cat([xy, xy + wh], 1), "scores": torch.rand(n, generator=g),
                     "labels": torch.randint(0, 3, (n,), generator=g)})
    decode = load_config("shapes").decode  # nms 0.6, at most 50
    merged = merge_views(dets, decode)
    assert len(merged["scores"]) == decode.max_detections == 50
    assert (merged["scores"][1:] <= merged["scores"][:-1]).all()
    boxes, scores, labels = (torch.cat([d[k] for d in dets]) for k in ("boxes", "scores", "labels"))
    want = torchvision.ops.batched_nms(boxes, scores, labels, decode.nms_thresh)[:50]
    assert torch.equal(merged["scores"], scores[want]) and torch.equal(merged["labels"], labels[want])
    few = merge_views(dets, load_config("shapes", {"decode.max_detections": 7}).decode)
    assert torch.equal(few["scores"], merged["scores"][:7])
    twins = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([s]), "labels": torch.tensor([k])}
             for s, k in ((0.9, 0), (0.8, 1))]
    assert merge_views(twins, decode)["labels"].tolist() == [0, 1]  # class-aware: both kept
    agnostic = load_config("shapes", {"decode.class_agnostic_nms": True}).decode
    assert merge_views(twins, agnostic)["labels"].tolist() == [0]
    empty = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert merge_views([empty, empty], decode)["boxes"].shape == (0, 4)


def test_tta_off_is_the_evaluation_of_before(mixed):
    model, cfg, dataset = mixed
    before = list(predict_batches(model, (b for bs in evaluation_loader(dataset, cfg) for b in bs), cfg, CPU, FLOAT32))
    position = {info["id"]: k for k, info in enumerate(dataset.images)}
    before.sort(key=lambda item: position[item[0]])
    assert same_detections(predict_dataset(model, dataset, cfg, CPU, FLOAT32), before)
    one_view = cfg.replace(**{"eval.tta": True, "eval.tta_flip": False})  # tta with nothing to add
    assert same_detections(predict_dataset(model, dataset, one_view, CPU, FLOAT32), before)


def test_tta_does_not_depend_on_batch_size_or_processes(mixed):
    model, cfg, dataset = mixed
    runs = {bs: predict_dataset(model, dataset, cfg.replace(**TTA, **{"eval.batch_size": bs}), CPU, FLOAT32)
            for bs in (1, 4)}
    assert same_detections(runs[1], runs[4])
    shards = [predict_dataset(model, dataset, cfg.replace(**TTA, **{"eval.batch_size": 3}), CPU, FLOAT32, rank, 2)
              for rank in (0, 1)]
    assert sorted(i for s in shards for i, _ in s) == [i for i, _ in runs[1]] and all(shards)
    assert same_detections(sorted((x for s in shards for x in s), key=lambda x: x[0]), runs[1])


def test_tta_on_mixed_sizes_stays_in_each_image(mixed):
    model, cfg, dataset = mixed
    off = predict_dataset(model, dataset, cfg, CPU, FLOAT32)
    on = predict_dataset(model, dataset, cfg.replace(**TTA), CPU, FLOAT32)
    assert [i for i, _ in on] == [i for i, _ in off] and not same_detections(on, off)
    for k, (_, det) in enumerate(on):
        h, w = dataset.raw_item(k)[1]["orig_size"].tolist()
        boxes = det["boxes"]
        assert len(boxes) <= cfg.decode.max_detections and (det["scores"][1:] <= det["scores"][:-1]).all()
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= w + 1e-3).all() and (boxes[:, 1::2] <= h + 1e-3).all()
    evaluation = evaluate_model(model, dataset, cfg.replace(**TTA), CPU, FLOAT32)
    assert len(evaluation.results) == sum(len(d["scores"]) for _, d in on)


def test_predictor_and_cli_use_tta(shapes_dir, tmp_path):
    run = save_untrained_run(shapes_dir, tmp_path / "run")
    dataset_cfg = Predictor(run, device="cpu").cfg.data
    dataset = CocoDetection(dataset_cfg.val_ann, dataset_cfg.val_images, build_transforms(dataset_cfg, train=False))
    images = [dataset.load_image(i) for i in range(len(dataset))]
    for over in ({}, {"eval.tta": "true", "eval.tta_sizes": "[48,80]"}):
        predictor = Predictor(run, device="cpu", overrides=over)
        assert predictor.cfg.eval.tta == bool(over)
        got = list(zip([im["id"] for im in dataset.images], predictor(images)))
        want = predict_dataset(predictor.model, dataset, predictor.cfg, CPU, predictor.precision)
        assert same_detections(got, want) and sum(len(d["scores"]) for _, d in got) > 0
    out = tmp_path / "results.json"
    assert main(["evaluate", str(run), "--out", str(out), "--set", "eval.tta=true", "eval.tta_sizes=[48]"]) == 0
    assert main(["evaluate", str(run), "--out", str(out), "--set", "model.fpn_channels=8"]) == 2
    assert main(["predict", str(run), str(dataset.image_path(0)), "--out", str(tmp_path / "pred"),
                 "--set", "eval.tta=true"]) == 0
