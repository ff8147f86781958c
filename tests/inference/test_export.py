"""ONNX export: onnxruntime reproduces fcoslab's head outputs and detections, static and dynamic, from a padded
input or (``with_preprocess``) from any uint8 image, through the library and the command line; every file
carries its deployment contract, a dynamic file pads a short input itself, the deployer's script of
docs/deploy.md reproduces ``fcoslab predict`` without torch; a failed export leaves no file."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT, tiny_overrides


from fcoslab.inference.onnx import export  # noqa: E402
from fcoslab.inference.onnx import check as onnx_check  # noqa: E402
from fcoslab.apps.cli import main  # noqa: E402
from fcoslab.config import load_config  # noqa: E402
from fcoslab.errors import FcoslabError  # noqa: E402
from fcoslab.inference.onnx.export import OnnxPredictor, export_onnx, sample_input, traceable_decode  # noqa: E402
from fcoslab.inference.predictor import Predictor, training_layout  # noqa: E402

# Padding to 32 and a longer side up to 128 px: images of other aspects get inputs of other sizes.
RUN_OVERRIDES = {"model.pad_multiple": 32, "data.max_size": 128}


@pytest.fixture(scope="module")
def run_dir(shapes_dir, tmp_path_factory):
    """A tiny shapes run trained one epoch (a few seconds): real detections of spread scores."""
    from fcoslab.engine.trainer import train

    out = tmp_path_factory.mktemp("export") / "run"
    train(load_config("shapes", tiny_overrides(shapes_dir, **RUN_OVERRIDES)), out, progress=False)
    return out


@pytest.fixture(scope="module")
def images(shapes_dir):
    """Images whose inputs differ in size: 64x64, 64x128, 107x64 (resized), 61x45 (cropped), greyscale."""
    base = Image.open(shapes_dir / "val" / "000000.png").convert("RGB")
    other = Image.open(shapes_dir / "val" / "000003.png")
    return [base, base.resize((128, 64)), base.resize((60, 100)), base.crop((5, 3, 50, 64)), other.convert("L")]


@pytest.fixture(scope="module")
def dynamic_files(run_dir, tmp_path_factory):
    """A dynamic file of the network alone and a dynamic one with decoding."""
    out = tmp_path_factory.mktemp("dynamic")
    export_onnx(run_dir, out / "network.onnx", dynamic=True)
    export_onnx(run_dir, out / "detector.onnx", dynamic=True, with_decode=True)
    return {"network": out / "network.onnx", "with_decode": out / "detector.onnx"}


@pytest.fixture(scope="module")
def preprocess_file(run_dir, tmp_path_factory):
    """A --with-preprocess file, exported through the command line."""
    path = tmp_path_factory.mktemp("preprocess") / "image_detector.onnx"
    assert main(["export", str(run_dir), "--out", str(path), "--with-preprocess"]) == 0
    return path


def save_untrained_run(shapes_dir, path, **overrides):
    """An untrained run saved by hand, with a spread classifier so that it detects."""
    from fcoslab.modeling.model import build_model
    from fcoslab.runfolder import RunFolder

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **RUN_OVERRIDES, **overrides))
    torch.manual_seed(0)
    model = build_model(cfg.model, 4)
    torch.nn.init.normal_(model.head.cls_logits.weight, std=0.3)
    folder = RunFolder(path)
    folder.check_writable()
    folder.start(cfg.to_dict(), [])
    folder.save({"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": 4, "cat_ids": [1, 2, 3, 5],
                 "class_names": ["a", "b", "c", "d"], "epoch": 0, "history": []})
    return folder.path


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
    contract = meta["contract"]
    assert contract["kind"] == "network" and contract["image_size"] == [64, 64] and not contract["dynamic"]
    assert contract["inputs"] == [{"name": "images", "dtype": "float32", "shape": [1, 3, 64, 64],
                                   "meaning": contract["inputs"][0]["meaning"]}]
    assert contract["preprocess"]["in_graph"] == ["normalize"] and "exactly image_size" in contract["preprocess"]["pad"]["note"]


def test_dynamic_export_takes_any_batch_and_size(run_dir, dynamic_files):
    from fcoslab.modeling.points import level_sizes, make_points

    session = ort_session(dynamic_files["network"])
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
    from fcoslab.modeling.decode import decode

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
    torch.onnx.export(export._Detector(model, cfg).eval(), args, str(tmp_path / "d.onnx"), dynamo=False,
                      opset_version=17, input_names=["images", "image_sizes", "orig_sizes"],
                      output_names=["boxes", "scores", "labels"])
    boxes, scores, labels = ort_session(tmp_path / "d.onnx").run(None, {k: v.numpy() for k, v in sample.items()})
    assert (boxes.shape, scores.shape, labels.shape) == ((0, 4), (0,), (0,)) and labels.dtype == np.int64


def test_with_decode_dynamic_equals_predictor_on_images_of_several_sizes(run_dir, images, dynamic_files):
    onnx_predictor, predictor = OnnxPredictor(dynamic_files["with_decode"]), Predictor(run_dir, device="cpu", amp="off")
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
    run = save_untrained_run(shapes_dir, tmp_path / "run", **{
        "model.centerness": False, "decode.class_agnostic_nms": True, "decode.score_thresh": 0.2})
    net = export_onnx(run, tmp_path / "net.onnx", dynamic=True)
    assert net["outputs"] == ["cls_logits", "bbox_ltrb", "points"]
    contract = export.read_metadata(ort_session(tmp_path / "net.onnx"))["contract"]
    assert [o["name"] for o in contract["outputs"]] == net["outputs"] and "centerness" not in contract["decode"]["recipe"][0]
    export_onnx(run, tmp_path / "det.onnx", dynamic=True, with_decode=True)
    onnx_predictor, predictor = OnnxPredictor(tmp_path / "det.onnx"), Predictor(run, device="cpu", amp="off")
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
    (["export", "{run}", "--out", "{tmp}/m.onnx", "--with-preprocess", "--opset", "17"],
     "--opset 17: --with-preprocess resizes with antialiasing (data.resize=antialias), which ONNX Resize has from "
     "opset 18"),
    (["export", "{run}", "--out", "{tmp}/m.onnx", "--with-preprocess", "--image-size", "64"],
     "--image-size: a --with-preprocess file takes images of any size"),
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
    monkeypatch.setattr(onnx_check, "HEAD_ATOL", -1.0)  # no difference is small enough
    with pytest.raises(FcoslabError, match="onnxruntime does not reproduce fcoslab.*cls_logits"):
        export_onnx(run_dir, path)
    assert list(tmp_path.iterdir()) == []
    path.write_text("previous")
    with pytest.raises(FcoslabError):
        export_onnx(run_dir, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"] and path.read_text() == "previous"


def test_every_file_carries_the_deployment_contract(run_dir, dynamic_files, preprocess_file):
    """What the issue found missing: the padding multiple and value (dynamic files too), the resize rule and
    sizes, the [0, 1] scale, RGB, the layout, and the 0-based labels with their names and COCO ids."""
    contracts = {kind: export.read_metadata(ort_session(path))["contract"]
                 for kind, path in [*dynamic_files.items(), ("with_preprocess", preprocess_file)]}
    classes = [{"label": 0, "name": "ellipse", "category_id": 1}, {"label": 1, "name": "rectangle", "category_id": 2},
               {"label": 2, "name": "triangle", "category_id": 3}, {"label": 3, "name": "cross", "category_id": 5}]
    for kind, c in contracts.items():
        pre = c["preprocess"]
        assert c["kind"] == kind and c["dynamic"] and c["image_size"] is None and c["contract_version"] == 1
        assert pre["pad"]["multiple"] == 32 and pre["pad"]["value"] == [0.0, 0.0, 0.0]
        assert pre["pad"]["sides"] == "bottom and right"
        assert {k: pre["resize"][k] for k in ("rule", "min_size", "max_size", "interpolation", "antialias")} == {
            "rule": "shortest_side", "min_size": 64, "max_size": 128, "interpolation": "bilinear", "antialias": True}
        assert pre["pixel_scale"]["multiply_by"] == 1 / 255 and pre["pixel_scale"]["range"] == [0.0, 1.0]
        assert pre["channel_order"] == "RGB" and c["labels"] == {"first": 0, "classes": classes}
        assert pre["normalize"]["mean"] == [0.485, 0.456, 0.406]
    assert contracts["network"]["preprocess"]["in_graph"] == ["pad", "normalize"]
    assert [o["name"] for o in contracts["network"]["outputs"]] == ["cls_logits", "bbox_ltrb", "centerness", "points"]
    assert contracts["network"]["decode"]["in_graph"] is False and contracts["network"]["decode"]["strides"]
    assert [i["name"] for i in contracts["with_decode"]["inputs"]] == ["images", "image_sizes", "orig_sizes"]
    assert contracts["with_preprocess"]["inputs"] == [{"name": "image", "dtype": "uint8", "shape": ["height", "width", 3],
                                                      "meaning": contracts["with_preprocess"]["inputs"][0]["meaning"]}]
    assert contracts["with_preprocess"]["preprocess"]["in_graph"] == ["resize", "pixel_scale", "pad", "normalize"]
    assert [o["name"] for o in contracts["with_preprocess"]["outputs"]] == ["boxes", "scores", "labels"]
    assert contracts["with_preprocess"]["decode"]["max_detections"] == 50


def test_dynamic_file_pads_a_short_input_itself(run_dir, dynamic_files):
    """The issue's case: a 56x128 input (the image as resized, unpadded) and a 60x128 one give the outputs of
    their padding to 64x128, which alone gives fcoslab's scores (the network sees the padding)."""
    from fcoslab.modeling.decode import decode

    model, cfg = torch_model(run_dir)
    padded = sample_input(64, 128, cfg, seed=3)  # blobs on the top 56 rows, zeros below
    network, detector = ort_session(dynamic_files["network"]), ort_session(dynamic_files["with_decode"])
    want = network.run(None, {"images": padded["images"].numpy()})
    want_det = detector.run(None, {k: v.numpy() for k, v in padded.items()})
    for rows in (56, 60):
        short = padded["images"][:, :, :rows]
        for got, expected in zip(network.run(None, {"images": short.numpy()}), want):
            np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        got_det = detector.run(None, {**{k: v.numpy() for k, v in padded.items()}, "images": short.numpy()})
        assert len(got_det[1]) == len(want_det[1]) > 0 and np.array_equal(got_det[2], want_det[2])
        np.testing.assert_allclose(got_det[1], want_det[1], atol=1e-6, rtol=0)
    with torch.no_grad():  # what the file would give without its padding: other scores
        unpadded = decode(model(padded["images"][:, :, :56]), padded["image_sizes"], padded["orig_sizes"], cfg.decode)[0]
    assert abs(float(unpadded["scores"][0]) - float(want_det[1][0])) > 1e-3


def assert_close_after_resize(got, want, cfg):
    """Detections of a resized image: the pairs of onnx_check (a resize may round a pixel the other way)."""
    problem, diffs = onnx_check._match_resized({k: v.numpy() for k, v in got.items()},
                                               {k: v.numpy() for k, v in want.items()}, cfg)
    assert problem is None
    assert diffs["resized boxes"] <= 0.05 and diffs["resized scores"] <= 1e-3
    return diffs


def assert_predictor_equals(onnx_predictor, predictor, images):
    """Same detections as fcoslab (one image at a time, as ``fcoslab predict``): to 1e-3 px and 1e-5 for images
    that evaluation does not resize, paired up (:func:`assert_close_after_resize`) for resized ones.
    Returns the (h, w) of the inputs seen and the resized ones' largest differences."""
    from fcoslab.inference.onnx.preprocess import eval_input_size

    sizes, worst = set(), {"resized boxes": 0.0, "resized scores": 0.0}
    for image in images:
        want, got = predictor([image])[0], onnx_predictor([image])[0]
        assert len(want["scores"]) > 1
        size = (image.height, image.width)
        if tuple(eval_input_size(torch.tensor(size), predictor.cfg.data).tolist()) == size:
            assert_same_detections(got, want)
        else:
            diffs = assert_close_after_resize(got, want, predictor.cfg)
            worst = {k: max(v, diffs[k]) for k, v in worst.items()}
        sizes.add(tuple(predictor._prepare(image)[0].shape[-2:]))
    return sizes, worst


def test_with_preprocess_file_equals_predictor_on_images_of_several_sizes(run_dir, images, preprocess_file):
    """A uint8 image of any size in, boxes in its own pixels out: enlarged, shrunk, wide, tall, greyscale, RGBA."""
    session = ort_session(preprocess_file)
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [("image", "tensor(uint8)", ["height", "width", 3])]
    onnx_predictor, predictor = OnnxPredictor(preprocess_file), Predictor(run_dir, device="cpu", amp="off")
    assert onnx_predictor.with_preprocess and onnx_predictor.cfg == predictor.cfg
    more = [images[0].resize((300, 200)), images[0].resize((37, 91)).convert("RGBA"), images[0].resize((250, 33))]
    sizes, worst = assert_predictor_equals(onnx_predictor, predictor, images + more)
    assert len(sizes) >= 6 and worst["resized scores"] <= 1e-3


@pytest.mark.parametrize("overrides", [{"data.resize": "interpolate", "data.pad_with_mean": True},
                                       {"data.square_size": 96}])
def test_with_preprocess_follows_other_evaluation_transforms(run_dir, tmp_path, images, overrides):
    """torchvision's detection resize (float, no antialiasing; opset 17 suffices) padded with the mean, and the
    square resize: the trained weights under another evaluation config."""
    from fcoslab.config import config_from_dict
    from fcoslab.runfolder import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    ckpt["config"] = config_from_dict(ckpt["config"]).replace(**overrides).to_dict()
    torch.save(ckpt, tmp_path / "run.pt")
    result = export_onnx(tmp_path / "run.pt", tmp_path / "m.onnx", with_preprocess=True)
    assert result["opset"] == (17 if "data.resize" in overrides else 18)
    contract = export.read_metadata(ort_session(tmp_path / "m.onnx"))["contract"]["preprocess"]
    if "data.square_size" in overrides:
        assert contract["resize"]["rule"] == "square" and contract["resize"]["size"] == [96, 96]
    else:
        assert not contract["resize"]["antialias"] and contract["pad"]["value"] == [0.485, 0.456, 0.406]
    assert_predictor_equals(OnnxPredictor(tmp_path / "m.onnx"), Predictor(tmp_path / "run.pt", device="cpu", amp="off"),
                            images[:4])


def test_a_wrong_resize_in_the_graph_fails_the_export(run_dir, tmp_path, monkeypatch):
    """The check compares the graph's preprocessing with fcoslab's: ONNX Resize without exclude_outside (its
    default) is off by more than one level at the borders, and nothing is written."""
    from fcoslab.inference.onnx.preprocess import _Resize

    def without_exclude_outside(g, pixels, size, antialias):
        sizes = g.op("Concat", g.op("Constant", value_t=torch.tensor([1, 3])), size, axis_i=0)
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return g.op("Resize", pixels, empty, empty, sizes, mode_s="linear", antialias_i=1)

    monkeypatch.setattr(_Resize, "symbolic", staticmethod(without_exclude_outside))
    with pytest.raises(FcoslabError, match="preprocessing differs from fcoslab's on a .* image: pixels"):
        export_onnx(run_dir, tmp_path / "m.onnx", with_preprocess=True)
    assert list(tmp_path.iterdir()) == []


# Runs a script with torch, torchvision and fcoslab unimportable, and checks at its end that none was imported.
WITHOUT_TORCH = """
import importlib.abc, runpy, sys
BLOCKED = ("torch", "torchvision", "fcoslab")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
"""


def run_without_torch(script, *args, cwd):
    done = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def as_arrays(record):
    dets = record["detections"]
    return {"boxes": np.array([d["box_xyxy"] for d in dets], np.float32).reshape(-1, 4),
            "scores": np.array([d["score"] for d in dets], np.float32),
            "labels": np.array([d["category_id"] for d in dets], np.int64)}


def test_deploy_script_without_torch_reproduces_predict(run_dir, images, preprocess_file, dynamic_files, tmp_path):
    """docs/deploy_onnx.py (numpy, Pillow, onnxruntime) on a --with-preprocess and a --with-decode file, and the
    short script of docs/deploy.md, against ``fcoslab predict``'s detections.json on the same files."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images + [images[0].resize((300, 200)), images[0].resize((37, 91)).convert("RGBA")]):
        image.save(folder / f"{i}.png")
    files = sorted(str(p) for p in folder.iterdir())
    assert main(["predict", str(run_dir), str(folder), "--score", "0.2", "--out", str(tmp_path / "t")]) == 0
    want = json.loads((tmp_path / "t" / "detections.json").read_text())
    cfg = Predictor(run_dir, device="cpu", amp="off").cfg
    for path in (preprocess_file, dynamic_files["with_decode"]):
        out = tmp_path / f"{path.stem}.json"
        run_without_torch(ROOT / "docs" / "deploy_onnx.py", path, *files, "--score", "0.2", "--out", out, cwd=tmp_path)
        got = json.loads(out.read_text())
        assert [r["file"] for r in got] == [r["file"] for r in want] == files
        assert [(r["width"], r["height"]) for r in got] == [(r["width"], r["height"]) for r in want]
        for g, w in zip(got, want):
            assert len(w["detections"]) > 0
            assert onnx_check._match_resized(as_arrays(g), as_arrays(w), cfg.replace(**{"decode.score_thresh": 0.2}))[0] is None
        assert got[0] == want[0]  # 0.png, 64x64: not resized, the same to the json's rounding
    snippet = (ROOT / "docs" / "deploy.md").read_text().split("```python\n")[1].split("```")[0]
    (tmp_path / "snippet.py").write_text(snippet)
    lines = run_without_torch(tmp_path / "snippet.py", preprocess_file, files[0], cwd=tmp_path).splitlines()
    top = [d for d in want[0]["detections"] if d["score"] >= 0.3]
    assert [line.split()[0] for line in lines] == [d["label"] for d in top] and len(top) > 0
