"""ONNX export: onnxruntime reproduces fcoslab's head outputs and detections, static and dynamic, through the
library and the command line; a failed export leaves no file."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_overrides


from fcoslab import export  # noqa: E402
from fcoslab.cli import main  # noqa: E402
from fcoslab.config import load_config  # noqa: E402
from fcoslab.errors import FcoslabError  # noqa: E402
from fcoslab.export import OnnxPredictor, export_onnx, sample_input, traceable_decode  # noqa: E402
from fcoslab.inference import Predictor, training_layout  # noqa: E402

# Padding to 32 and a longer side up to 128 px: images of other aspects get inputs of other sizes.
RUN_OVERRIDES = {"model.pad_multiple": 32, "data.max_size": 128}


@pytest.fixture(scope="module")
def run_dir(shapes_dir, tmp_path_factory):
    """A tiny shapes run trained one epoch (a few seconds): real detections of spread scores."""
    from fcoslab.train import train

    out = tmp_path_factory.mktemp("export") / "run"
    train(load_config("shapes", tiny_overrides(shapes_dir, **RUN_OVERRIDES)), out, progress=False)
    return out


@pytest.fixture(scope="module")
def images(shapes_dir):
    """Images whose inputs differ in size: 64x64, 64x128, 107x64 (resized), 61x45 (cropped), greyscale."""
    base = Image.open(shapes_dir / "val" / "000000.png").convert("RGB")
    other = Image.open(shapes_dir / "val" / "000003.png")
    return [base, base.resize((128, 64)), base.resize((60, 100)), base.crop((5, 3, 50, 64)), other.convert("L")]


def ort_session(path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_model(run):
    predictor = Predictor(run, device="cpu", amp="off")
    training_layout(predictor.model)
    return predictor.model, predictor.cfg


def assert_same_detections(got, want, box_atol=1e-3, score_atol=1e-5):
    assert len(got["scores"]) == len(want["scores"])
    assert torch.equal(got["labels"], want["labels"])
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=box_atol, rtol=0)
    torch.testing.assert_close(got["scores"], want["scores"], atol=score_atol, rtol=0)


def test_static_export_equals_torch(run_dir, tmp_path):
    path = tmp_path / "static.onnx"
    result = export_onnx(run_dir, path)
    assert result["image_size"] == (64, 64) and set(result["max_abs_diff"]) == {"cls_logits", "bbox_ltrb",
                                                                                "centerness", "points"}
    session = ort_session(path)
    assert [i.shape for i in session.get_inputs()] == [[1, 3, 64, 64]]
    model, cfg = torch_model(run_dir)
    sample = sample_input(64, 64, cfg, seed=5)
    names = ["cls_logits", "bbox_ltrb", "centerness", "points"]
    got = dict(zip(names, session.run(names, {"images": sample["images"].numpy()})))
    with torch.no_grad():
        want = model(sample["images"])
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name].numpy(), atol=1e-4, rtol=0, err_msg=name)
    meta = export.read_metadata(session)
    assert meta["class_names"] == ["ellipse", "rectangle", "triangle", "cross"] and meta["cat_ids"] == [1, 2, 3, 5]
    assert meta["config"]["model"]["pad_multiple"] == 32 and meta["with_decode"] is False


def test_dynamic_export_takes_any_batch_and_size(run_dir, tmp_path):
    from fcoslab.points import level_sizes, make_points

    path = tmp_path / "dynamic.onnx"
    export_onnx(run_dir, path, dynamic=True)
    session = ort_session(path)
    model, cfg = torch_model(run_dir)
    for batch, (h, w) in [(1, (64, 64)), (2, (96, 160)), (3, (128, 32))]:
        images = torch.cat([sample_input(h, w, cfg, seed=b)["images"] for b in range(batch)])
        logits, ltrb, ctr, points = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            want = model(images)
        assert logits.shape == (batch, sum(a * b for a, b in level_sizes(h, w, cfg.model.strides)), 4)
        np.testing.assert_allclose(logits, want["cls_logits"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(ltrb, want["bbox_ltrb"].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(ctr, want["centerness"].numpy(), atol=1e-4, rtol=0)
        expected = make_points(level_sizes(h, w, cfg.model.strides), cfg.model.strides, cfg.model.point_offset)[0]
        assert np.array_equal(points, expected.numpy())


@pytest.mark.parametrize("agnostic, max_det", [(False, 50), (True, 7)])
def test_traceable_decode_equals_decode(run_dir, agnostic, max_det):
    from fcoslab.decode import decode

    model, cfg = torch_model(run_dir)
    cfg = cfg.replace(**{"decode.class_agnostic_nms": agnostic, "decode.max_detections": max_det})
    for seed, (h, w) in enumerate([(64, 64), (96, 160)]):
        sample = sample_input(h, w, cfg, seed)
        with torch.no_grad():
            outputs = model(sample["images"])
        want = decode(outputs, sample["image_sizes"], sample["orig_sizes"], cfg.decode)[0]
        got = dict(zip(["boxes", "scores", "labels"], traceable_decode(outputs, sample["image_sizes"],
                                                                       sample["orig_sizes"], cfg.decode, 4)))
        assert len(want["scores"]) > 0
        assert_same_detections(got, want, box_atol=0, score_atol=0)


def test_with_decode_file_without_detections(run_dir, tmp_path):
    """A threshold no score reaches: empty outputs of the right types, as fcoslab's decode gives."""
    model, cfg = torch_model(run_dir)
    cfg = cfg.replace(**{"decode.score_thresh": 1.0})
    sample = sample_input(64, 96, cfg)
    args = tuple(sample[k] for k in ("images", "image_sizes", "orig_sizes"))
    torch.onnx.export(export._Detector(model, cfg.decode).eval(), args, str(tmp_path / "d.onnx"), dynamo=False,
                      opset_version=17, input_names=["images", "image_sizes", "orig_sizes"],
                      output_names=["boxes", "scores", "labels"])
    boxes, scores, labels = ort_session(tmp_path / "d.onnx").run(None, {k: v.numpy() for k, v in sample.items()})
    assert (boxes.shape, scores.shape, labels.shape) == ((0, 4), (0,), (0,)) and labels.dtype == np.int64


def test_with_decode_dynamic_equals_predictor_on_images_of_several_sizes(run_dir, images, tmp_path):
    path = tmp_path / "detector.onnx"
    export_onnx(run_dir, path, dynamic=True, with_decode=True)
    onnx_predictor, predictor = OnnxPredictor(path), Predictor(run_dir, device="cpu", amp="off")
    assert onnx_predictor.class_names == predictor.class_names and onnx_predictor.cfg == predictor.cfg
    sizes = set()
    for image in images:
        want = predictor([image])[0]
        assert len(want["scores"]) > 0
        assert_same_detections(onnx_predictor([image])[0], want)
        sizes.add(tuple(predictor._prepare(image)[0].shape[-2:]))
    assert len(sizes) >= 3


def test_static_with_decode_pads_to_its_size_and_refuses_larger_images(run_dir, images, tmp_path):
    path = tmp_path / "detector64.onnx"
    export_onnx(run_dir, path, with_decode=True)
    onnx_predictor, predictor = OnnxPredictor(path), Predictor(run_dir, device="cpu", amp="off")
    assert_same_detections(onnx_predictor([images[0]])[0], predictor([images[0]])[0])
    with pytest.raises(FcoslabError, match="larger than the fixed 64x64 input"):
        onnx_predictor([images[1]])


def test_model_without_centerness_and_class_agnostic_nms(shapes_dir, tmp_path, images):
    """An untrained run saved by hand, with a spread classifier so that it detects."""
    from fcoslab.model import build_model
    from fcoslab.runfolder import RunFolder

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **RUN_OVERRIDES, **{
        "model.centerness": False, "decode.class_agnostic_nms": True, "decode.score_thresh": 0.2}))
    torch.manual_seed(0)
    model = build_model(cfg, 4)
    torch.nn.init.normal_(model.head.cls_logits.weight, std=0.3)
    folder = RunFolder(tmp_path / "run")
    folder.check_writable()
    folder.start(cfg.to_dict(), [])
    folder.save({"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": 4, "cat_ids": [1, 2, 3, 5],
                 "class_names": ["a", "b", "c", "d"], "epoch": 0, "history": []})
    net = export_onnx(folder.path, tmp_path / "net.onnx", dynamic=True)
    assert net["outputs"] == ["cls_logits", "bbox_ltrb", "points"]
    export_onnx(folder.path, tmp_path / "det.onnx", dynamic=True, with_decode=True)
    onnx_predictor, predictor = OnnxPredictor(tmp_path / "det.onnx"), Predictor(folder.path, device="cpu", amp="off")
    for image in images[:3]:
        want = predictor([image])[0]
        assert len(want["scores"]) > 1
        assert_same_detections(onnx_predictor([image])[0], want)


def test_cli_predict_onnx_writes_the_torch_detections(run_dir, shapes_dir, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(path), "--dynamic", "--with-decode"]) == 0
    assert "largest differences" in capsys.readouterr().out
    inputs = [str(shapes_dir / "val" / "000001.png"), str(shapes_dir / "val")]
    assert main(["predict", "--onnx", str(path), *inputs, "--score", "0.0", "--out", str(tmp_path / "o")]) == 0
    assert main(["predict", str(run_dir), *inputs, "--score", "0.0", "--out", str(tmp_path / "t")]) == 0
    got = json.loads((tmp_path / "o" / "detections.json").read_text())
    want = json.loads((tmp_path / "t" / "detections.json").read_text())
    assert [r["file"] for r in got] == [r["file"] for r in want] and len(got) == 9
    assert sum(len(r["detections"]) for r in want) > 0
    for g, w in zip(got, want):
        assert [d["label"] for d in g["detections"]] == [d["label"] for d in w["detections"]]
        for a, b in zip(g["detections"], w["detections"]):  # json rounds boxes to 0.01, scores to 1e-4
            assert np.allclose(a["box_xyxy"], b["box_xyxy"], atol=0.0101, rtol=0)
            assert abs(a["score"] - b["score"]) <= 1.01e-4 and a["category_id"] == b["category_id"]
    drawings = [sorted(p.name for p in (tmp_path / d).glob("*.png")) for d in ("o", "t")]
    assert drawings[0] == drawings[1] and len(drawings[0]) == 8  # 000001.png is given twice


@pytest.mark.parametrize("args, message", [
    (["export", "{tmp}/missing", "--out", "{tmp}/m.onnx"], "checkpoint {tmp}/missing does not exist"),
    (["export", "{run}", "--out", "{tmp}/m.onnx", "--opset", "13"], "--opset 13: fcoslab exports opsets 17 to 20"),
    (["export", "{run}", "--out", "{tmp}/m.onnx", "--image-size", "1", "2", "3"], "image size [1, 2, 3]"),
    (["predict", "--onnx", "{tmp}/m.onnx", "x.png"], "ONNX file {tmp}/m.onnx does not exist"),
    (["predict", "x.png"], "predict needs CHECKPOINT"),
])
def test_user_errors_exit_2_and_write_no_file(run_dir, tmp_path, args, message, capsys):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run_dir)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcoslab: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert list(tmp_path.iterdir()) == []


def test_network_file_is_refused_by_predict_onnx(run_dir, tmp_path, capsys):
    export_onnx(run_dir, tmp_path / "net.onnx")
    assert main(["predict", "--onnx", str(tmp_path / "net.onnx"), "x.png"]) == 2
    assert "holds the network alone" in capsys.readouterr().err


def test_a_failed_check_leaves_no_file_and_keeps_the_old_one(run_dir, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    monkeypatch.setattr(export, "HEAD_ATOL", -1.0)  # no difference is small enough
    with pytest.raises(FcoslabError, match="onnxruntime does not reproduce fcoslab.*cls_logits"):
        export_onnx(run_dir, path)
    assert list(tmp_path.iterdir()) == []
    path.write_text("previous")
    with pytest.raises(FcoslabError):
        export_onnx(run_dir, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"] and path.read_text() == "previous"
