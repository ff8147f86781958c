"""Training recipes: gradient accumulation, EMA weights, the validation loss, early stopping, extending a run."""

import contextlib
import json

import pytest
import torch

from fcoslab.apps.cli import main
from fcoslab.config import load_config
from fcoslab.data import build_datasets, collate_fn
from fcoslab.engine.accumulate import accumulate_gradients, micro_batches
from fcoslab.engine.ema import ModelEMA
from fcoslab.engine.resume import check_change
from fcoslab.engine.trainer import Trainer
from fcoslab.engine.validation import ValidationLoss, early_stop_reason
from fcoslab.errors import FcoslabError
from fcoslab.modeling.loss import FCOSCriterion
from fcoslab.modeling.model import build_model
from helpers import set_args, tiny_overrides

# exactly comparable runs: frozen BatchNorm (batch statistics differ between a batch and its halves),
# float32, SGD (see tests/engine/test_distributed.py)
EXACT = {"model.frozen_bn": True, "runtime.precision": "off", "train.optimizer": "sgd", "train.lr": 0.01}


def a_batch(shapes_dir, n=8, **extra):
    """``n`` training images of the tiny set, sizes jittered (48 or 64 px) and padded as one batch, the last
    image without boxes."""
    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"data.min_size": [48, 64], **EXACT, **extra}))
    train_set, _ = build_datasets(cfg)
    torch.manual_seed(0)
    batch = collate_fn(cfg.data, cfg.model.size_divisibility)([train_set[i] for i in range(n)])
    batch["gt_labels"][-1] = -1
    return cfg, batch


def gradients(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("extra", [{}, {"model.centerness": False}, {"loss.centerness_weighted_box": False},
                                   {"assign.method": "atss"}, {"assign.method": "tal"},
                                   {"loss.cls": "quality_focal", "model.centerness": False}, {"loss.quality": "iou"}])
def test_two_micro_batches_give_the_gradients_of_the_whole_batch(shapes_dir, extra):
    cfg, batch = a_batch(shapes_dir, **extra)
    torch.manual_seed(1)
    model = build_model(cfg.model, 4).train()
    criterion = FCOSCriterion(cfg.assign, cfg.loss)
    losses, _ = criterion(model(batch["images"]), batch["gt_boxes"], batch["gt_labels"], batch["image_sizes"])
    losses["loss"].backward()
    whole = gradients(model)
    model.zero_grad(set_to_none=True)
    parts, finite = accumulate_gradients(micro_batches(batch, 2), lambda c: model(c["images"]), criterion,
                                         lambda loss: loss.backward(), contextlib.nullcontext, model)
    assert finite.item() == 1.0
    for k in ("loss", "cls", "box", "centerness"):
        torch.testing.assert_close(parts[k], losses[k].detach(), rtol=1e-5, atol=1e-6)
    accumulated = gradients(model)
    assert accumulated.keys() == whole.keys()
    for k in whole:
        torch.testing.assert_close(accumulated[k], whole[k], rtol=1e-4, atol=1e-6, msg=k)


def test_micro_batches_are_slices_of_the_padded_batch(shapes_dir):
    _, batch = a_batch(shapes_dir, n=6)
    chunks = micro_batches(batch, 3)
    assert [c["images"].shape for c in chunks] == [batch["images"][:2].shape] * 3
    assert sum((c["image_ids"] for c in chunks), []) == batch["image_ids"]
    with pytest.raises(ValueError, match="does not split"):
        micro_batches(batch, 4)


def test_accumulated_training_equals_the_whole_batch(shapes_dir, tmp_path):
    base = tiny_overrides(shapes_dir, **EXACT, **{"eval.loss": False})
    whole = Trainer(load_config("shapes", base), tmp_path / "whole", progress=False)
    whole.run()
    acc = Trainer(load_config("shapes", {**base, "train.accumulate": 2}), tmp_path / "acc", progress=False)
    history = acc.run()
    assert history[-1]["step"] == whole.history[-1]["step"] == 6  # the same optimizer steps
    assert history[-1]["loss"] == pytest.approx(whole.history[-1]["loss"], rel=1e-5)
    for (k, a), b in zip(acc.model.state_dict().items(), whole.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=k)
    with pytest.raises(FcoslabError, match="'train.accumulate' \\(3\\) must divide train.batch_size \\(4\\)"):
        load_config("shapes", {**base, "train.accumulate": 3})


def test_ema_follows_its_formula():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, warmup=2.0)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.9 * (1 - torch.exp(torch.tensor(-1 / 2.0)))
    torch.testing.assert_close(ema.model[0].weight, d * start["0.weight"] + (1 - d) * model[0].weight)
    assert ema.model[1].num_batches_tracked.item() == 7 and ema.updates == 1
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_is_evaluated_saved_predicted_and_resumed_exactly(shapes_dir, tmp_path):
    from fcoslab.inference.predictor import Predictor

    over = tiny_overrides(shapes_dir, **{"train.ema": True, "train.ema_warmup": 3.0, "train.epochs": 2,
                                        "train.warmup_iters": 1})
    history = Trainer(load_config("shapes", over), tmp_path / "full", progress=False).run()
    assert {"AP", "raw_AP", "raw_AP50", "val_loss", "val_loss_cls", "val_loss_box"} <= set(history[-1])
    ckpt = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert ckpt["ema_updates"] == 12 and set(ckpt["model"]) == set(ckpt["train_model"])
    assert any(not torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in ckpt["model"])
    predictor = Predictor(tmp_path / "full", device="cpu")
    for k, v in predictor.model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k  # predict (and export) use the average
    Trainer(load_config("shapes", {**over, "train.epochs": 1}), tmp_path / "half", progress=False).run()
    assert main(["train", "--quiet", "--resume", str(tmp_path / "half"), "--set", "train.epochs=2"]) == 0
    resumed = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    for key in ("model", "train_model"):
        for k, v in ckpt[key].items():
            assert torch.equal(resumed[key][k], v), (key, k)
    assert json.loads((tmp_path / "half" / "history.json").read_text())[-1]["AP"] == history[-1]["AP"]


def test_validation_loss_does_not_depend_on_batching(shapes_dir):
    cfg, batch = a_batch(shapes_dir)
    model = build_model(cfg.model, 4).eval()
    criterion = FCOSCriterion(cfg.assign, cfg.loss)
    with torch.no_grad():
        whole, _ = criterion(model(batch["images"]), batch["gt_boxes"], batch["gt_labels"])
        results = []
        for parts in (1, 2, 4):
            summed = ValidationLoss(criterion)
            for chunk in micro_batches(batch, parts):
                summed(model(chunk["images"]), chunk)
            results.append(summed.result())
    for r in results:
        assert r["val_loss"] == pytest.approx(whole["loss"].item(), rel=1e-5)
        assert r["val_loss_box"] == pytest.approx(whole["box"].item(), rel=1e-5)


def test_early_stop_rule():
    h = [{"epoch": e, "AP": ap} for e, ap in enumerate([0.1, 0.3, 0.2, 0.3, 0.25], 1)]
    assert early_stop_reason(h[:3], "AP", 2) is None
    assert "did not improve on 0.3000 (epoch 2) in 3 evaluations" in early_stop_reason(h, "AP", 3)
    assert early_stop_reason(h, "AP", 4) is None and early_stop_reason(h, "AP", 0) is None


def test_early_stop_ends_the_run_records_why_and_stays_stopped(shapes_dir, tmp_path, caplog):
    caplog.set_level("INFO", logger="fcoslab")
    run = tmp_path / "run"
    args = set_args(shapes_dir, **{**EXACT, "train.lr": 0.0, "train.epochs": 5, "train.early_stop": 1})
    assert main(["train", "--quiet", "--out", str(run), "--set", *args]) == 0  # lr 0: AP never improves
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "early stop: AP did not improve" in history[-1]["stopped"]
    assert "early stop: AP did not improve" in caplog.text
    assert main(["train", "--quiet", "--resume", str(run)]) == 0
    assert json.loads((run / "history.json").read_text()) == history


def test_extending_a_run_says_the_new_schedule_and_refuses_to_rewrite_the_past(shapes_dir, tmp_path, capsys, caplog):
    t = load_config("shapes").train  # 5 epochs of 200 steps, decay after epoch 4, warm-up 200
    text = check_change(t, t.__class__(**{**t.__dict__, "epochs": 10}), 200, 5 * 200, reschedule=False)
    assert "schedule was: 5 epochs, 1000 steps" in text and "schedule now: 10 epochs, 2000 steps" in text
    moved = t.__class__(**{**t.__dict__, "epochs": 10, "lr_steps": (8,)})
    with pytest.raises(FcoslabError, match="decays before step 1000 would be at steps none instead of \\[800\\]"):
        check_change(t, moved, 200, 5 * 200, reschedule=False)
    assert "rescheduled" in check_change(t, moved, 200, 5 * 200, reschedule=True)
    cosine = t.__class__(**{**t.__dict__, "lr_schedule": "cosine"})
    with pytest.raises(FcoslabError, match="learning rate at step 500 would be"):
        check_change(cosine, cosine.__class__(**{**cosine.__dict__, "epochs": 10}), 200, 500, reschedule=False)
    with pytest.raises(FcoslabError, match="'train.batch_size' cannot change"):
        check_change(t, t.__class__(**{**t.__dict__, "batch_size": 8}), 200, 10, reschedule=True)
    # the command line: a finished run extended, and a refused change as one clear error
    caplog.set_level("INFO", logger="fcoslab")
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(run), "--set", *set_args(shapes_dir, **{"train.lr_steps": [1]})]) == 0
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(run), "--set", "train.lr_steps=[3]", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "rewrites the part of the schedule already trained" in err and "--reschedule" in err and "Traceback" not in err
    assert main(["train", "--quiet", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    assert "schedule now: 2 epochs" in caplog.text
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2]
