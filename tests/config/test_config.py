import json
from pathlib import Path

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


def test_one_value_for_a_list_key_is_a_list_of_one(tmp_path):
    cfg = load_config("shapes", ["data.min_size=224", "train.lr_steps=8", "model.init_class_map=cat:dog"])
    assert cfg.data.min_size == (224,) and cfg.train.lr_steps == (8.0,) and cfg.model.init_class_map == ("cat:dog",)
    assert isinstance(cfg.train.lr_steps[0], float)
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"data": {"min_size": 224}, "train": {"lr_steps": 5}}))
    cfg = load_config(str(path))
    assert cfg.data.min_size == (224,) and cfg.train.lr_steps == (5.0,)
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown config key 'train.epoch'; valid keys in 'train': epochs"),
    ("trian.epochs=3", "unknown config section 'trian'"),
    ("train.epochs=many", "config key 'train.epochs': expected int, got 'many'"),
    ("train.epochs=2.5", "expected int"),
    ("model.backbone=resnet7", "'resnet7' is not one of"),
    ("train.epochs", "must look like key.sub=value"),
    ("data.min_size=abc", "config key 'data.min_size': expected int, got 'abc'"),
    ("data.min_size=[96,1.5]", "config key 'data.min_size[1]': expected int, got 1.5"),
    ("assign.regress_ranges=64", "config key 'assign.regress_ranges': expected a list, got 64"),
    ("runtime.precision=fp8", "config key 'runtime.precision': 'fp8' is not one of auto, fp16, bf16, off"),
    ("runtime.device=gpu", "config key 'runtime.device' is 'gpu': expected auto, cpu, cuda or cuda:N"),
    ("eval.best_metric=voc_mAP", "config key 'eval.best_metric': 'voc_mAP' is not recorded with eval.metrics=coco"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(FcoslabError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config("shapes", [override])


def test_old_keys_of_saved_runs_are_read_in_todays_names(tmp_path):
    """Run folders written before runtime.* and eval.batch_size existed still load (fcoslab.config.migrate)."""
    old = Config().to_dict()
    del old["runtime"], old["eval"]["batch_size"]
    old["train"] = {**old["train"], "amp": "off", "device": "cpu", "threads": 1, "eval_batch_size": 3}
    old["data"] = {**old["data"], "shapes_train": 0}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    cfg = load_config(str(path))
    assert (cfg.runtime.precision, cfg.runtime.device, cfg.runtime.threads, cfg.eval.batch_size) == ("off", "cpu", 1, 3)
    assert cfg.shapes is None
    assert load_config("shapes", ["train.amp=bf16", "runtime.precision=off"]).runtime.precision == "off"  # new wins


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


def test_relative_paths_are_anchored_where_they_were_written(tmp_path, monkeypatch):
    """A preset's data lives in the project, a config file's next to the file, an override's in the cwd."""
    from fcoslab.config import project_root

    monkeypatch.chdir(tmp_path)
    preset = load_config("shapes")
    assert preset.data.train_ann == str(project_root() / "data" / "shapes" / "train.json")
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "mine.json").write_text('{"data": {"train_ann": "ann/train.json"}}')
    from_file = load_config(str(tmp_path / "cfgs" / "mine.json"))
    assert from_file.data.train_ann == str(tmp_path / "cfgs" / "ann" / "train.json")
    overridden = load_config("seed_coco_2x", ["data.val_ann=v.json", "model.backbone_weights=w.pth"])
    assert overridden.data.val_ann == str(tmp_path / "v.json")
    assert overridden.model.backbone_weights == str(tmp_path / "w.pth")


def test_data_paths_nobody_gave_are_the_projects(tmp_path, monkeypatch):
    from fcoslab.config import project_root

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.json").write_text('{"train": {"epochs": 3}}')
    cfg = load_config(str(tmp_path / "mine.json"))
    assert cfg.data.val_ann == str(project_root() / "data" / "shapes" / "val.json") and cfg.train.epochs == 3


def test_every_key_is_documented_and_docs_config_md_is_current(capsys):
    from fcoslab.apps.cli import main
    from fcoslab.config.docs import config_markdown, explain

    undocumented = [r["key"] for r in explain() if not r["meaning"]]
    assert not undocumented, f"write a comment with these fields in fcoslab/config/sections.py: {undocumented}"
    docs = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert docs.read_text() == config_markdown(), "regenerate: python -m fcoslab.config.docs > docs/config.md"
    assert main(["config", "shapes", "--set", "train.epochs=3", "--explain"]) == 0
    text = capsys.readouterr().out
    assert "* train.epochs = 3   [int, default 12]  length of the run" in text
    assert "  data.check_images = \"header\"   [str, default \"header\"] (header | deep | off)" in text
    assert main(["config", "shapes"]) == 0 and '"epochs": 5' in capsys.readouterr().out


def test_the_shapes_preset_trains_1000_steps_at_160_px_on_p3_p5_and_shapes_128_keeps_the_previous_recipe():
    from fcoslab.engine.resume import plan

    fast, old = load_config("shapes"), load_config("shapes_128")
    schedule = plan(fast.train, fast.train.images_per_epoch // fast.train.batch_size)  # what the trainer runs
    assert schedule["total"] == 1000 and schedule["decays"] == [800] and schedule["warmup"] == 200
    was = plan(old.train, old.train.images_per_epoch // old.train.batch_size)
    assert was["total"] == 1728 and was["decays"] == [1440]
    assert fast.data.min_size == (160,) and fast.data.max_size == 160 and fast.data.test_min_size == 160
    assert old.data.min_size == (128,) and old.data.max_size == 128 and old.data.test_min_size == 128
    assert fast.model.strides == (8, 16, 32) and len(fast.assign.regress_ranges) == 3
    assert len(old.model.strides) == len(old.assign.regress_ranges) == 5
    assert fast.model.fpn_norm == "gn" and old.model.fpn_norm == "none"
    # everything else is the same: data, network width, optimiser and decoder
    assert fast.shapes == old.shapes and fast.decode == old.decode and fast.loss == old.loss
    assert (fast.data.train_ann, fast.data.val_ann) == (old.data.train_ann, old.data.val_ann)
    t, o = fast.train, old.train
    assert (t.lr, t.optimizer, t.weight_decay, t.warmup_iters, t.seed) == (
        o.lr, o.optimizer, o.weight_decay, o.warmup_iters, o.seed)
    assert fast.model.backbone_width == old.model.backbone_width and fast.model.head_convs == old.model.head_convs
