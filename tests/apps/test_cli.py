"""The command line end to end on a tiny shapes set, and every user mistake it must report clearly. In
process: ``python -m fcoslab`` as a process of its own (exit codes, signals, torchrun) is tested in
tests/engine/test_stopping.py and test_distributed.py."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import set_args, tiny_overrides
from fcoslab.apps.cli import main


@pytest.fixture(scope="module")
def trained_run(shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--quiet", "--out", str(out), "--set", *set_args(shapes_dir)]) == 0
    return out


def test_train_writes_run_files(trained_run):
    history = json.loads((trained_run / "history.json").read_text())
    assert len(history) == 1 and history[0]["epoch"] == 1 and history[0]["step"] == 6
    for key in ("loss", "loss_cls", "loss_box", "loss_centerness", "AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR100", "seconds"):
        assert key in history[0]
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 1 and cfg["model"]["fpn_channels"] == 32
    ckpt = torch.load(trained_run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["history"] == history and ckpt["cat_ids"] == [1, 2, 3, 5]


def test_resume_continues_and_appends(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["epochs"] = 2
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["config"] = cfg
    torch.save(ckpt, run / "last.pt")
    assert main(["train", "--quiet", "--resume", str(run)]) == 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["step"] == 12


def test_evaluate_prints_summary_and_writes_results(trained_run, capsys):
    out = trained_run / "res.json"
    assert main(["evaluate", str(trained_run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("Average Precision") == 6 and text.count("Average Recall") == 6
    results = json.loads(out.read_text())
    assert all(r["category_id"] in (1, 2, 3, 5) and len(r["bbox"]) == 4 for r in results)


def test_evaluate_per_class_voc_and_analysis(trained_run, shapes_dir, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["evaluate", str(trained_run), "--out", str(tmp_path / "r.json"), "--metrics", "both", "--analysis",
                 "--analysis-out", str(out), "--score", "0.05", "--iou", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "VOC mAP@0.50 (all-point)" in text and "voc_AP50_11pt" in text and "errors (TIDE" in text
    gt = json.loads((shapes_dir / "val.json").read_text())
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    assert all(any(line.startswith(name) for line in text.splitlines()) for name in names)  # one row a class
    report = json.loads((out / "analysis.json").read_text())
    matrix = report["confusion"]["matrix"]
    assert report["confusion"]["names"] == names + ["background"] and len(matrix) == len(names) + 1
    objects = sum(not a.get("iscrowd") for a in gt["annotations"])
    assert sum(sum(row) for row in matrix[:-1]) == objects  # every object is matched or missed exactly once
    assert set(report["errors"]["dAP"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Missed"}
    assert set(report["per_class"]) == set(names)
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "errors.png").stat().st_size > 1000


def test_evaluate_equals_the_history_of_the_checkpoint(trained_run, tmp_path):
    from fcoslab.evaluation.coco import STAT_NAMES, evaluate_checkpoint

    history = json.loads((trained_run / "history.json").read_text())
    stats = evaluate_checkpoint(trained_run).stats
    assert history[-1]["AP"] > 0  # something was detected, so the comparison means something
    assert {k: round(stats[k], 5) for k in STAT_NAMES} == {k: history[-1][k] for k in STAT_NAMES}


def test_predict_draws_and_writes_json(trained_run, shapes_dir, tmp_path):
    photo = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the stored 40x64 image is shown 64x40
    Image.new("RGB", (40, 64), (200, 10, 10)).save(photo, exif=exif)
    out = tmp_path / "pred"
    assert main(["predict", str(trained_run / "last.pt"), str(shapes_dir / "val" / "000000.png"), str(photo),
                 "--score", "0.0", "--out", str(out)]) == 0
    records = json.loads((out / "detections.json").read_text())
    assert [Path(r["file"]).name for r in records] == ["000000.png", "photo.jpg"]
    assert (records[1]["width"], records[1]["height"]) == (64, 40)
    assert Image.open(out / "photo.png").size == (64, 40)
    assert all(d["label"] in ("ellipse", "rectangle", "triangle", "cross") for r in records for d in r["detections"])


def test_make_shapes_and_presets_commands(tmp_path, capsys):
    assert main(["make-shapes", str(tmp_path / "s"), "--train", "3", "--val", "2", "--image-size", "48",
                 "--min-side", "0.2"]) == 0
    assert len(list((tmp_path / "s" / "train").glob("*.png"))) == 3
    assert "min_side=0.2" in (tmp_path / "s" / "train.json").read_text()
    capsys.readouterr()
    assert main(["make-shapes", str(tmp_path / "t"), "--min-side", "0"]) == 2
    err = capsys.readouterr().err
    assert "min_side 0 must lie between" in err and "Traceback" not in err
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "seed_coco_2x" in out and "imprv_coco_1x" in out and "shapes" in out


@pytest.mark.parametrize("args,message", [
    (["train", "--out", "{tmp}/r", "--set", "train.epoch=1"], "unknown config key 'train.epoch'"),
    (["train", "--out", "{tmp}/r", "--config", "nope"], "unknown preset 'nope'"),
    (["train", "--out", "{tmp}/r", "--set", "data.train_ann={tmp}/none.json"],
     "annotation file {tmp}/none.json does not exist"),
    (["train", "--out", "{tmp}/r", "--set", "data.train_ann={tmp}/broken.json"],
     "broken.json is not valid JSON"),
    (["evaluate", "{tmp}/nothing"], "checkpoint {tmp}/nothing does not exist"),
    (["evaluate", "{tmp}/broken.json"], "cannot load checkpoint"),
    (["predict", "{tmp}/nothing", "x.png"], "does not exist"),
    (["check-data", "{tmp}/broken.json", "{tmp}"], "broken.json is not valid JSON"),
])
def test_user_errors_exit_2_with_one_clear_line(tmp_path, args, message, capsys):
    (tmp_path / "broken.json").write_text('{"images": [1, 2')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("fcoslab: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err


def test_missing_image_listed_in_annotations(shapes_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(shapes_dir, data)
    (data / "train" / "000003.png").unlink()
    code = main(["train", "--out", str(tmp_path / "r"), "--set", *set_args(data)])
    err = capsys.readouterr().err
    assert code == 2 and "listed in" in err and "000003.png" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_corrupt_image_in_a_worker_names_the_file(shapes_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(shapes_dir, data)
    (data / "train" / "000002.png").write_bytes(b"garbage")
    code = main(["train", "--out", str(tmp_path / "r"), "--quiet", "--set",
                 *set_args(data, **{"data.num_workers": 2, "data.check_images": "off"})])
    err = capsys.readouterr().err
    assert code == 2 and "cannot read image" in err and "000002.png" in err and "Traceback" not in err


def test_bad_images_stop_training_before_the_first_epoch(shapes_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(shapes_dir, data)
    (data / "train" / "000002.png").write_bytes(b"garbage")
    png = (data / "val" / "000001.png").read_bytes()
    (data / "val" / "000001.png").write_bytes(png[: len(png) // 2])  # truncated
    code = main(["train", "--out", str(tmp_path / "r"), "--quiet", "--set", *set_args(data)])
    err = capsys.readouterr().err
    assert code == 2 and "2 image(s) cannot be read" in err and "Traceback" not in err
    assert "000002.png: not an image file" in err and "000001.png: " in err
    assert not (tmp_path / "r").exists()  # failed before its first save: no empty run folder


def test_predict_skips_an_unreadable_image_and_writes_the_rest(trained_run, shapes_dir, tmp_path, capsys):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "val", images)
    (images / "000003.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    code = main(["predict", str(trained_run), str(images), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and "1 of 8 images could not be read" in captured.err and "000003.png" in captured.err
    records = json.loads((out / "detections.json").read_text())
    assert len(records) == 7 and not any(r["file"].endswith("000003.png") for r in records)
    assert len(list(out.glob("*.png"))) == 7 and "in 7 images" in captured.out


@pytest.mark.parametrize("option, message", [(["--score", "1.5"], "--score must be"), (["--tile", "8"], "at least 32"),
                                             (["--overlap", "1"], "--overlap in [0, 1)")])
def test_predict_refuses_values_out_of_range(trained_run, shapes_dir, tmp_path, capsys, option, message):
    code = main(["predict", str(trained_run), str(shapes_dir / "val"), "--out", str(tmp_path / "p"), *option])
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_refuses_to_overwrite_a_run(trained_run, capsys):
    assert main(["train", "--out", str(trained_run)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_unwritable_run_folder(shapes_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["train", "--out", str(blocker / "run"), "--set", *set_args(shapes_dir)])
    assert code == 2 and "cannot be written" in capsys.readouterr().err


def test_train_with_voc_metrics_only(shapes_dir, tmp_path, capsys):
    args = set_args(shapes_dir, **{"eval.metrics": "voc", "eval.best_metric": "voc_mAP50"})
    assert main(["train", "--quiet", "--out", str(tmp_path / "run"), "--set", *args]) == 0
    assert "voc_mAP50" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "AP" not in history[0] and history[0]["voc_mAP50"] is not None
    assert (tmp_path / "run" / "best.pt").exists()


def test_the_viewer_screenshot_without_chromium_says_so_and_keeps_the_old_picture(tmp_path, monkeypatch, capsys):
    from fcoslab.apps import browser

    picture = tmp_path / "viewer.jpg"
    picture.write_bytes(b"old")
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    assert browser.main([str(tmp_path / "run"), "--out", str(picture)]) == 2
    err = capsys.readouterr().err
    assert "needs chromium at" in err and "no-chromium" in err and "Traceback" not in err
    assert picture.read_bytes() == b"old"
