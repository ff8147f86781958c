"""Training: learning-rate schedules, full disk, non-finite losses (torchrun and SIGKILL: test_distributed)."""

import dataclasses
import math

import pytest
import torch

from helpers import set_args, tiny_overrides
from fcoslab.apps.cli import main
from fcoslab.config import load_config
from fcoslab.errors import FcoslabError
from fcoslab.engine.trainer import Trainer


def test_learning_rate_schedules():
    from fcoslab.engine.trainer import lr_factor

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
    from fcoslab.engine.trainer import lr_factor

    short = dataclasses.replace(load_config("shapes").train, warmup_iters=200, epochs=4, lr_steps=(3,))
    assert lr_factor(20, short, 20) == 1.0  # 80 steps in all: warm-up is cut to 20 steps, the peak is reached
    assert lr_factor(10, short, 20) < 1.0
    assert lr_factor(60, short, 20) == pytest.approx(0.1)
    long = dataclasses.replace(short, epochs=100, lr_steps=(99,))
    assert lr_factor(199, long, 20) < 1.0 <= lr_factor(200, long, 20)  # a long run keeps its 200 steps


def test_full_disk_keeps_the_last_good_checkpoint(shapes_dir, tmp_path, monkeypatch):
    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"train.epochs": 2, "train.eval_every": 2}))
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.train_epoch()
    trainer.epoch = 1
    trainer.save()
    good = (tmp_path / "run" / "last.pt").read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(FcoslabError, match="No space left on device.*intact"):
        trainer.save()
    assert (tmp_path / "run" / "last.pt").read_bytes() == good
    assert not (tmp_path / "run" / "last.pt.tmp").exists()


def test_a_failed_write_of_any_kind_leaves_the_old_file(tmp_path):
    from fcoslab.files import atomic_write

    target = tmp_path / "last.pt"
    target.write_bytes(b"good")

    def writer_fails(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file data/0")

    with pytest.raises(FcoslabError, match="PytorchStreamWriter failed.*intact"):
        atomic_write(target, writer_fails)
    assert target.read_bytes() == b"good" and not (tmp_path / "last.pt.tmp").exists()


def test_resume_keeps_model_and_optimizer():
    from fcoslab.engine.trainer import resumed_config

    saved = {"config": load_config("shapes").to_dict()}
    assert resumed_config(saved, {"train.epochs": 9}).train.epochs == 9
    for key, value in (("model.fpn_channels", 32), ("train.optimizer", "sgd")):
        with pytest.raises(FcoslabError, match="cannot be overridden with --resume"):
            resumed_config(saved, {key: value})


def test_nonfinite_losses_stop_training_and_keep_the_checkpoint(shapes_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(run), "--set", *set_args(shapes_dir)]) == 0
    good = (run / "last.pt").read_bytes()
    capsys.readouterr()
    code = main(["train", "--quiet", "--resume", str(run), "--set", "train.epochs=2", "train.lr=1e30",
                 "train.grad_clip=0", "train.max_nonfinite=2", "train.warmup_iters=0"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite losses in a row" in err and "Traceback" not in err
    assert (run / "last.pt").read_bytes() == good


def test_history_records_coco_voc_and_per_class_metrics_best_checkpoint_and_tensorboard(shapes_dir, tmp_path, capsys):
    import json

    from fcoslab.evaluation.coco import evaluate_checkpoint

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{
        "train.epochs": 2, "eval.metrics": "both", "eval.best_metric": "voc_mAP50", "train.tensorboard": True}))
    history = Trainer(cfg, tmp_path / "run", progress=False).run()
    assert [h["epoch"] for h in history] == [1, 2]
    record = history[-1]
    names = ["ellipse", "rectangle", "triangle", "cross"]
    assert set(record["per_class_AP"]) == set(names) and set(record["voc_per_class"]) == set(names)
    assert {"AP", "AP50", "voc_mAP", "voc_mAP50", "voc_mAP50_11pt", "voc_mAP75"} <= set(record)
    best_epoch = max(history, key=lambda h: h["voc_mAP50"])["epoch"]
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == best_epoch and best["history"][-1]["voc_mAP50"] == max(h["voc_mAP50"] for h in history)
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == history
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    again = evaluate_checkpoint(tmp_path / "run", device="cpu")  # the run's metrics, the same numbers
    assert again.record()["voc_mAP50"] == record["voc_mAP50"] and again.record()["AP"] == record["AP"]
    with pytest.raises(FcoslabError, match="eval.best_metric.*voc_mAP50.*eval.metrics=coco"):
        Trainer(cfg.replace(**{"eval.metrics": "coco"}), tmp_path / "other", progress=False)
