import dataclasses
import json
import math

import pytest

from fcoslab.config import Config, config_from_dict, list_presets, load_config
from fcoslab.errors import FcoslabError


def test_presets_exist_and_load():
    assert {"shapes", "seed_coco_2x", "imprv_coco_1x"} <= set(list_presets())
    seed = load_config("seed_coco_2x")
    assert not seed.model.centerness and seed.loss.box == "iou" and seed.assign.center_radius == 1.5
    assert seed.train.epochs == 24 and seed.train.lr_steps == (16, 22) and seed.train.grad_clip == 3.0
    assert seed.data.test_min_size == 700 and seed.model.frozen_bn and seed.model.freeze_at == 2
    imprv = load_config("imprv_coco_1x")
    assert imprv.model.centerness and imprv.loss.box == "giou" and imprv.model.head_norm == "gn"
    assert imprv.model.regression == "relu_stride"


def test_overrides_are_typed():
    cfg = load_config("shapes", ["train.epochs=3", "data.min_size=[96,128]", "assign.center_radius=none",
                                 "model.centerness=false", "train.lr=0.5"])
    assert cfg.train.epochs == 3 and cfg.data.min_size == (96, 128) and cfg.assign.center_radius is None
    assert cfg.model.centerness is False and cfg.train.lr == 0.5


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown config key 'train.epoch'; valid keys in 'train': epochs"),
    ("trian.epochs=3", "unknown config section 'trian'"),
    ("train.epochs=many", "config key 'train.epochs': expected int, got 'many'"),
    ("train.epochs=2.5", "expected int"),
    ("model.backbone=resnet7", "'resnet7' is not one of"),
    ("train.epochs", "must look like key.sub=value"),
    ("data.min_size=12", "expected a list"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(FcoslabError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config("shapes", [override])


def test_unknown_preset_and_bad_file(tmp_path):
    with pytest.raises(FcoslabError, match="unknown preset 'nope'; presets: .*shapes"):
        load_config("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FcoslabError, match="bad.json is not valid JSON"):
        load_config(str(bad))
    bad.write_text(json.dumps({"train": {"epochs": "x"}}))
    with pytest.raises(FcoslabError, match="'train.epochs'"):
        load_config(str(bad))


def test_config_roundtrip_through_dict():
    cfg = load_config("imprv_coco_1x", ["train.epochs=2"])
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again, Config)


def test_learning_rate_schedules():
    from fcoslab.train import lr_factor

    step = load_config("shapes", {"train.warmup_iters": 10, "train.warmup_factor": 0.2, "train.lr_steps": (2, 3.5),
                                  "train.lr_gamma": 0.1, "train.epochs": 4}).train
    assert lr_factor(0, step, 10) == pytest.approx(0.2)  # warm-up starts at warmup_factor
    assert lr_factor(5, step, 10) == pytest.approx(0.6)
    assert lr_factor(10, step, 10) == 1.0
    assert lr_factor(19, step, 10) == 1.0
    assert lr_factor(20, step, 10) == pytest.approx(0.1)  # epoch 2 reached
    assert lr_factor(34, step, 10) == pytest.approx(0.1)
    assert lr_factor(35, step, 10) == pytest.approx(0.01)  # half-way through the fourth epoch
    assert load_config("shapes", {"train.lr_steps": "[4.5]"}).train.lr_steps == (4.5,)
    cosine = dataclasses.replace(step, lr_schedule="cosine")
    assert lr_factor(20, cosine, 10) == pytest.approx(0.5)
    assert lr_factor(40, cosine, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(10, cosine, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    with pytest.raises(FcoslabError, match="train.lr_schedule"):
        load_config("shapes", {"train.lr_schedule": "linear"})


def test_warmup_fits_a_short_run():
    from fcoslab.train import lr_factor

    short = dataclasses.replace(load_config("shapes").train, warmup_iters=200, epochs=4, lr_steps=(3,))
    assert lr_factor(20, short, 20) == 1.0  # 80 steps in all: warm-up is cut to 20 steps, the peak is reached
    assert lr_factor(10, short, 20) < 1.0
    assert lr_factor(60, short, 20) == pytest.approx(0.1)
    long = dataclasses.replace(short, epochs=100, lr_steps=(99,))
    assert lr_factor(199, long, 20) < 1.0 <= lr_factor(200, long, 20)  # a long run keeps its 200 steps
