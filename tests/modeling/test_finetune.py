"""Fine-tuning: model.init_from with a new class set, class rows kept by name, train.freeze."""

import logging

import pytest
import torch

from helpers import tiny_overrides, torchvision_fcos
from fcoslab.config import load_config
from fcoslab.errors import FcoslabError
from fcoslab.modeling.finetune import apply_freeze, class_rows, init_from
from fcoslab.modeling.model import build_model
from fcoslab.engine.trainer import Trainer


def test_class_rows_by_name_and_by_map():
    assert class_rows(["a", "b", "c"], ["c", "x", "a"], ()) == {0: 2, 2: 0}
    assert class_rows(["a", "b", "c"], ["c", "x", "a"], ("b:x",)) == {0: 2, 1: 1, 2: 0}
    assert class_rows(["N/A", "person", "N/A"], ["person"], ()) == {0: 1}
    with pytest.raises(FcoslabError, match="init_class_map.*'q:x'"):
        class_rows(["a"], ["x"], ("q:x",))


def test_init_from_keeps_fitting_tensors_and_the_rows_of_named_classes(shapes_dir, tmp_path, caplog):
    cfg = load_config("shapes", tiny_overrides(shapes_dir))
    old = build_model(cfg.model, 4)
    torch.nn.init.normal_(old.head.cls_logits.weight)
    path = tmp_path / "old.pt"
    torch.save({"model": old.state_dict(), "config": cfg.to_dict(), "class_names": ["a", "b", "c", "d"],
                "cat_ids": [1, 2, 3, 4], "num_classes": 4, "epoch": 1, "history": []}, path)
    new_cfg = cfg.replace(**{"model.init_from": str(path), "model.init_class_map": ["b:x"]})
    new = build_model(new_cfg.model, 3)
    fresh_bias = new.head.cls_logits.bias.detach().clone()
    with caplog.at_level(logging.INFO, logger="fcoslab"):
        report = init_from(new, new_cfg.model, ["c", "x", "y"])
    assert ("classifier: 1 classes kept by name (c), 1 by model.init_class_map (b->x), 1 fresh (y)"
            in caplog.text), caplog.text
    assert report["classes_mapped"] == {"x": "b"}
    w_old, w_new = old.head.cls_logits.weight, new.head.cls_logits.weight
    assert torch.equal(w_new[0], w_old[2]) and torch.equal(w_new[1], w_old[1])  # c by name, x from b
    assert not torch.equal(w_new[2], w_old[3]) and new.head.cls_logits.bias[2] == fresh_bias[2]  # y is fresh
    assert report["classes_kept"] == ["c", "x"] and report["classes_fresh"] == ["y"]
    assert torch.equal(new.head.bbox_pred.weight, old.head.bbox_pred.weight)
    assert torch.equal(new.backbone.stem[0].weight, old.backbone.stem[0].weight)
    narrow_cfg = new_cfg.replace(**{"model.fpn_channels": 16})  # a head of another width keeps the backbone only
    narrow = build_model(narrow_cfg.model, 3)
    report = init_from(narrow, narrow_cfg.model, ["c", "x", "y"])
    assert "head.cls_logits.weight" in report["skipped"] and report["classes_kept"] == []
    assert torch.equal(narrow.backbone.stem[0].weight, old.backbone.stem[0].weight)


def test_a_missing_init_from_names_the_key(shapes_dir, tmp_path):
    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"model.init_from": str(tmp_path / "none")}))
    with pytest.raises(FcoslabError, match=f"config key 'model.init_from': checkpoint {tmp_path / 'none'} does not exist"):
        init_from(build_model(cfg.model, 3), cfg.model, ["a", "b", "c"])
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FcoslabError, match="config key 'model.init_from': checkpoint .*empty_run/last.pt does not exist"):
        init_from(build_model(cfg.model, 3), cfg.replace(**{"model.init_from": str(tmp_path / "empty_run")}).model, ["a", "b", "c"])


def test_freezing_and_unfreezing_are_logged_once_with_the_epoch(shapes_dir, caplog, monkeypatch):
    from fcoslab import distributed

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"train.freeze": "backbone_fpn", "train.freeze_epochs": 2,
                                                              "model.freeze_at": 1}))
    model = build_model(cfg.model, 3)
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    with caplog.at_level(logging.INFO, logger="fcoslab"):
        changed = [apply_freeze(model, cfg.train, epoch, trainable) for epoch in range(4)]
    assert changed == [True, False, True, False]
    messages = [r.getMessage() for r in caplog.records if "train.freeze" in r.getMessage()]
    assert len(messages) == 2, messages
    assert messages[0].startswith("epoch 1: train.freeze=backbone_fpn: backbone+fpn frozen (") and "for epochs 1-2" in messages[0]
    assert messages[1].startswith("epoch 3: train.freeze=backbone_fpn ends (train.freeze_epochs=2): backbone+fpn trains")
    frozen = sum(not trainable[n] for n, _ in model.named_parameters())  # model.freeze_at's stages: never changed
    assert frozen > 0 and all(p.requires_grad == trainable[n] for n, p in model.named_parameters())
    caplog.clear()
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    with caplog.at_level(logging.INFO, logger="fcoslab"):
        assert apply_freeze(model, cfg.train, 0, trainable)
    assert not [r for r in caplog.records if "train.freeze" in r.getMessage()]  # other processes stay quiet


def test_backbone_frozen_for_one_epoch_then_trained(shapes_dir, tmp_path):
    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"train.freeze": "backbone", "train.freeze_epochs": 1}))
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()  # one epoch: frozen throughout
    after_one = trainer.model.state_dict()
    assert torch.equal(after_one["backbone.stem.0.weight"], start["backbone.stem.0.weight"])
    lateral = next(k for k in start if k.startswith("fpn.lateral.0.") and k.endswith("weight"))  # conv (+ norm)
    assert torch.equal(after_one[lateral], start[lateral]) is False
    resumed = Trainer.from_run(tmp_path / "run", {"train.epochs": 2}, progress=False)
    resumed.run()
    assert not torch.equal(resumed.model.state_dict()["backbone.stem.0.weight"], start["backbone.stem.0.weight"])


@pytest.mark.slow
def test_fine_tuning_an_imported_torchvision_fcos_on_new_classes(shapes_dir, tmp_path):
    from fcoslab.inference.torchvision_import import import_torchvision

    weights = tmp_path / "tv.pth"
    torch.save(torchvision_fcos().state_dict(), weights)
    run = import_torchvision(weights, tmp_path / "tv")
    d = shapes_dir
    cfg = load_config("tv_fcos_r50", {
        "data.train_ann": str(d / "train.json"), "data.train_images": str(d / "train"),
        "data.val_ann": str(d / "val.json"), "data.val_images": str(d / "val"), "data.min_size": [64],
        "data.max_size": 64, "data.test_min_size": 64, "data.num_workers": 0, "train.batch_size": 4,
        "train.epochs": 2, "train.warmup_iters": 1, "runtime.precision": "off", "model.init_from": str(run.path),
        "train.freeze": "backbone_fpn", "train.lr": 0.001})  # the preset's 0.01 is for batch 16 and trained weights
    losses = []
    trainer = Trainer(cfg, tmp_path / "ft", progress=False, on_step=lambda r: losses.append(r["loss"]))
    imported = torch.load(run.checkpoint, weights_only=True)["model"]
    assert torch.equal(trainer.model.head.bbox_pred.weight, imported["head.bbox_pred.weight"])
    assert trainer.model.head.cls_logits.weight.shape[0] == 4  # the shapes classes, all fresh
    trainer.run()
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses
    state = trainer.model.state_dict()
    assert torch.equal(state["backbone.layer4.2.conv3.weight"], imported["backbone.layer4.2.conv3.weight"])
    assert torch.equal(state["fpn.p7.weight"], imported["fpn.p7.weight"])  # head only
    assert not torch.equal(state["head.bbox_pred.weight"], imported["head.bbox_pred.weight"])
