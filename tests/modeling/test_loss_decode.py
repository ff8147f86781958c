import pytest
import torch

from fcoslab.config import DecodeConfig, load_config
from fcoslab.data import pad_targets
from fcoslab.modeling.decode import decode
from fcoslab.modeling.loss import FCOSCriterion
from fcoslab.modeling.model import build_model
from fcoslab.modeling.points import level_sizes, make_points


def small_model(**over):
    cfg = load_config("shapes_128", {"model.fpn_channels": 32, "model.head_convs": 1, **over})  # P3-P7
    torch.manual_seed(0)
    return cfg, build_model(cfg.model, 3)


def test_forward_shapes_and_points():
    cfg, model = small_model()
    out = model(torch.rand(2, 3, 64, 96))
    assert out["level_sizes"] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    P = sum(h * w for h, w in out["level_sizes"])
    assert out["cls_logits"].shape == (2, P, 3) and out["bbox_ltrb"].shape == (2, P, 4)
    assert out["centerness"].shape == (2, P) and (out["bbox_ltrb"] >= 0).all()
    assert out["points"][0].tolist() == [4.0, 4.0] and out["points"][1].tolist() == [12.0, 4.0]
    _, no_ctr = small_model(**{"model.centerness": False, "model.regression": "exp", "model.head_norm": "none"})
    assert no_ctr(torch.rand(1, 3, 64, 64))["centerness"] is None


def test_level_sizes_match_the_model():
    cfg, model = small_model()
    out = model(torch.rand(1, 3, 128, 256))
    assert out["level_sizes"] == level_sizes(128, 256, cfg.model.strides) == [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    for h, w in [(100, 128), (97, 161), (800, 1216)]:  # any input size: each level is ceil(half) of the one below
        out = model(torch.rand(1, 3, h, w))
        assert out["level_sizes"] == level_sizes(h, w, cfg.model.strides), (h, w)


def test_points_offset():
    points, strides = make_points([(1, 2)], (16,), 0.0)
    assert points.tolist() == [[0.0, 0.0], [16.0, 0.0]] and strides.tolist() == [16.0, 16.0]


def loss_of(model, cfg, images, boxes, labels):
    """Loss terms and statistics through the criterion training uses."""
    terms, stats = FCOSCriterion(cfg.assign, cfg.loss)(model(images), *pad_targets(boxes, labels))
    return {**terms, **stats}


def test_image_without_objects():
    for over in ({}, {"model.centerness": False, "loss.box": "iou"}):
        cfg, model = small_model(**over)
        losses = loss_of(model, cfg, torch.rand(2, 3, 64, 64), [torch.zeros(0, 4)] * 2,
                         [torch.zeros(0, dtype=torch.int64)] * 2)
        assert losses["cls"] > 0 and losses["box"] == 0 and losses["centerness"] == 0
        losses["loss"].backward()  # still differentiable
        assert model.head.cls_logits.weight.grad.abs().sum() > 0


def test_overfitting_two_images_lowers_the_loss():
    cfg, model = small_model()
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.tensor([[20.0, 10.0, 60.0, 60.0], [2.0, 40.0, 14.0, 56.0]])]
    labels = [torch.tensor([0]), torch.tensor([1, 2])]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(40):
        losses = loss_of(model, cfg, images, boxes, labels)
        first = first if first is not None else losses["loss"].item()
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert losses["loss"].item() < 0.5 * first
    assert losses["num_pos"] > 0


def fake_outputs(level_sizes, K=2, ctr=None):
    points, strides = make_points(level_sizes, (8, 16, 32, 64, 128)[: len(level_sizes)], 0.5)
    P = len(points)
    return {"cls_logits": torch.full((1, P, K), -10.0), "bbox_ltrb": torch.full((1, P, 4), 4.0),
            "centerness": ctr, "points": points, "strides": strides, "level_sizes": level_sizes}


def test_decode_threshold_nms_and_rescale():
    out = fake_outputs([(4, 4)])
    out["cls_logits"][0, 5, 1] = 3.0  # point (12, 12): box (8, 8, 16, 16)
    out["cls_logits"][0, 6, 1] = 2.0  # point (20, 12): box (16, 8, 24, 16): touches, survives NMS
    out["cls_logits"][0, 6, 0] = 1.0  # same point, other class: survives
    out["bbox_ltrb"][0, 9] = torch.tensor([1.0, 1.0, 1.0, 1.0])
    out["cls_logits"][0, 9, 1] = 2.5  # a small box (11, 19, 13, 21) elsewhere: kept
    det = decode(out, torch.tensor([[32, 32]]), torch.tensor([[64, 128]]), DecodeConfig(score_thresh=0.5))[0]
    assert det["labels"].tolist() == [1, 1, 1, 0]
    torch.testing.assert_close(det["scores"], torch.sigmoid(torch.tensor([3.0, 2.5, 2.0, 1.0])))
    # original is 128 wide and 64 high: x scales by 4, y by 2
    assert det["boxes"][0].tolist() == [32.0, 16.0, 64.0, 32.0]
    few = decode(out, torch.tensor([[32, 32]]), torch.tensor([[32, 32]]), DecodeConfig(score_thresh=0.5, max_detections=2))[0]
    assert len(few["scores"]) == 2


def test_decode_clips_and_uses_centerness():
    out = fake_outputs([(2, 2)], ctr=torch.zeros(1, 4))
    out["cls_logits"][0, 0, 0] = 10.0
    out["bbox_ltrb"][0, 0] = torch.tensor([50.0, 50.0, 3.0, 3.0])
    det = decode(out, torch.tensor([[16, 10]]), torch.tensor([[16, 10]]), DecodeConfig(score_thresh=0.1))[0]
    assert det["boxes"][0].tolist() == [0.0, 0.0, 7.0, 7.0]
    torch.testing.assert_close(det["scores"][0], torch.sqrt(torch.sigmoid(torch.tensor(10.0)) * 0.5))
