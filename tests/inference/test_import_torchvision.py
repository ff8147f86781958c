"""torchvision's FCOS imported into fcoslab gives torchvision's detections (random weights, no download)."""

import numpy as np
import pytest
import torch
from PIL import Image

from fcoslab.errors import FcoslabError
from fcoslab.inference.torchvision_import import coco_category_names, import_torchvision
from fcoslab.inference.predictor import Predictor
from helpers import torchvision_fcos

SIZES = {"data.test_min_size": 320, "data.max_size": 512}  # both pipelines at the same, smaller size


def images(seed: int = 0) -> list[Image.Image]:
    """Smooth random pictures of several sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in [(240, 320), (300, 200), (257, 411)]:
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        out.append(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tv = torchvision_fcos(min_size=320, max_size=512)
    path = tmp_path_factory.mktemp("tv") / "fcos_random.pth"
    torch.save(tv.state_dict(), path)
    run = import_torchvision(path, tmp_path_factory.mktemp("run") / "tv_fcos", overrides=SIZES)
    return tv, run.path


def test_imported_model_gives_torchvision_detections(imported):
    from torchvision.transforms.v2 import functional as F

    tv, run = imported
    pictures = images()
    with torch.inference_mode():  # one image at a time, as torchvision's reference evaluation runs
        expected = [tv([F.to_dtype(F.pil_to_tensor(p), torch.float32, scale=True)])[0] for p in pictures]
    predictor = Predictor(run, device="cpu", amp="off")
    for batch in (len(pictures), 1):  # images of different padded sizes never share a batch
        got = predictor(pictures, batch_size=batch)
        for want, have in zip(expected, got):
            assert len(have["boxes"]) == len(want["boxes"]) > 0
            want, have = in_canonical_order(want), in_canonical_order(have)
            assert torch.equal(have["labels"], want["labels"])  # the COCO category ids, as torchvision's labels
            torch.testing.assert_close(have["scores"], want["scores"], atol=1e-5, rtol=0)
            torch.testing.assert_close(have["boxes"], want["boxes"], atol=1e-3, rtol=0)


def in_canonical_order(det: dict) -> dict:
    """Detections by score (to 1e-4), then label and box: equal scores may come in either order (they do
    with one thread, where float rounding makes ties that two threads do not)."""
    columns = [det["boxes"][:, 3], det["boxes"][:, 2], det["boxes"][:, 1], det["boxes"][:, 0],
               det["labels"].double(), -torch.round(det["scores"].double() * 1e4)]
    order = torch.from_numpy(np.lexsort([c.round(decimals=1).numpy() for c in columns]))
    return {k: det[k][order] for k in ("boxes", "labels", "scores")}


def test_imported_run_names_coco_categories(imported):
    _, run = imported
    predictor = Predictor(run, device="cpu")
    names = coco_category_names()
    assert predictor.class_names == names and predictor.cat_ids == list(range(91))
    assert names[1] == "person" and names[90] == "toothbrush" and sum(n != "N/A" for n in names[1:]) == 80


def test_a_foreign_file_is_refused_by_name(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(FcoslabError, match="not a torchvision FCOS state_dict"):
        import_torchvision(path, tmp_path / "run")
    tv = torchvision_fcos().state_dict()
    tv["head.extra.weight"] = torch.zeros(1)
    torch.save(tv, path)
    with pytest.raises(FcoslabError, match="head.extra.weight"):
        import_torchvision(path, tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_command_line_import_then_predict_and_a_foreign_dataset(imported, shapes_dir, tmp_path, capsys):
    import json

    from fcoslab.apps.cli import main

    tv, _ = imported
    weights = tmp_path / "fcos.pth"
    torch.save(tv.state_dict(), weights)
    run = tmp_path / "run"
    assert main(["import-torchvision", str(weights), "--out", str(run), "--set", "data.test_min_size=96",
                 "data.max_size=128"]) == 0
    assert main(["predict", str(run), str(shapes_dir / "val"), "--out", str(tmp_path / "pred"), "--score", "0.2"]) == 0
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    dets = [d for r in records for d in r["detections"]]
    assert dets and all(d["label"] == coco_category_names()[d["category_id"]] for d in dets)
    capsys.readouterr()
    assert main(["import-torchvision", str(weights), "--out", str(run)]) == 2  # never over a run by accident
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds imported weights" in err and "model.init_from" in err
    assert main(["evaluate", str(run), "--ann", str(shapes_dir / "val.json"), "--images", str(shapes_dir / "val")]) == 2
    assert "val.json has category 1 'ellipse', but the model's category 1 is 'person'" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_05_opens_an_imported_run(imported, shapes_dir, tmp_path, notebook_kernel):
    import json

    from fcoslab.apps.notebooks import execute_notebook, notebook_paths

    _, run = imported  # its validation set is COCO's, not on this machine: the notebook shows MY_IMAGES
    files = [str(p) for p in sorted((shapes_dir / "val").glob("*.png"))[:3]]
    executed = execute_notebook(notebook_paths(["05"])[0], tmp_path, {"RUN_DIR": str(run), "MY_IMAGES": files,
                                                                     "N_SHOW": 2, "SCORE": 0.2},
                                kernel=notebook_kernel)
    nb = json.loads(executed.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert list((tmp_path / "figures").glob("05_*.png"))
