"""Viewer callbacks without a browser: setting a widget's value redraws the image and the table."""

import hashlib

import pytest
import torch
from PIL import Image
import io

from helpers import tiny_overrides
from fcoslab.config import load_config
from fcoslab.data import CocoDetection
from fcoslab.inference.predict import Predictor
from fcoslab.engine.trainer import train
from fcoslab.inference.predict import images_to_show
from fcoslab.viz.viewer import PredictionViewer, match_detections


@pytest.fixture(scope="module")
def viewer(shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer_run")
    train(load_config("shapes", tiny_overrides(shapes_dir)), out, progress=False)
    predictor = Predictor(out)
    dataset = CocoDetection(shapes_dir / "val.json", shapes_dir / "val")
    return PredictionViewer(predictor, dataset, score=0.0)


def test_my_images_reach_the_viewer_even_with_a_validation_set(shapes_dir, tmp_path):
    from types import SimpleNamespace

    names = ["ellipse", "rectangle", "triangle", "cross"]
    predictor = SimpleNamespace(cfg=load_config("shapes", tiny_overrides(shapes_dir)), cat_ids=[1, 2, 3, 4],
                                class_names=names)  # what images_to_show reads of a Predictor
    assert len(images_to_show(predictor)) == 8  # no images of one's own: the run's validation set
    (tmp_path / "mine").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "mine" / "a.png")
    Image.new("L", (20, 10)).save(tmp_path / "mine" / "b.jpg")
    for given in ([str(tmp_path / "mine")], [tmp_path / "mine" / "a.png", tmp_path / "mine" / "b.jpg"]):
        mine = images_to_show(predictor, given)
        assert [(im["file_name"], im["width"], im["height"]) for im in mine.images] == [("a.png", 40, 30), ("b.jpg", 20, 10)]
        assert mine.data["annotations"] == [] and list(mine.index.names) == names
        assert tuple(mine.load_image(1).size) == (20, 10)


def digest(v):
    return hashlib.sha1(v.image.value).hexdigest()


def test_match_detections_hand_case():
    det = {"boxes": torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60.0], [0, 0, 10, 10]]),
           "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([0, 0, 0, 1])}
    gt = {"boxes": torch.tensor([[0, 0, 10, 11], [20, 20, 30, 30.0]]), "labels": torch.tensor([0, 0])}
    is_tp, found = match_detections(det, gt)
    assert is_tp.tolist() == [True, False, False, False]  # duplicate, wrong place, wrong class
    assert found.tolist() == [True, False]


def test_viewer_renders_png(viewer):
    image = Image.open(io.BytesIO(viewer.image.value))
    assert image.format == "PNG" and image.width >= 320
    assert "<table>" in viewer.table.value


def test_threshold_changes_picture_and_table(viewer):
    viewer.score.value = 0.0
    before, rows_before = digest(viewer), viewer.table.value.count("<tr>")
    viewer.score.value = 1.0
    assert digest(viewer) != before
    assert viewer.table.value.count("<tr>") < rows_before or "TP" not in viewer.table.value
    assert "FP" not in viewer.table.value  # nothing scores 1.0


def test_image_and_class_filter_change_the_picture(viewer):
    viewer.score.value = 0.0
    viewer.index.value = 0
    first = digest(viewer)
    viewer.next_button.click()
    assert viewer.index.value == 1 and digest(viewer) != first
    viewer.prev_button.click()
    assert viewer.index.value == 0 and digest(viewer) == first  # cached prediction, same drawing
    viewer.classes.value = (viewer.names[0],)
    assert digest(viewer) != first
    viewer.classes.value = tuple(viewer.names)
    viewer.show_gt.value = False
    assert "missed" not in viewer.table.value and digest(viewer) != first
    viewer.show_gt.value = True


def test_uploaded_image_is_predicted(viewer):
    n = viewer.index.max
    index = viewer.add_image(Image.new("RGB", (90, 60), (10, 200, 10)), "mine.png")
    assert index == n + 1 and viewer.index.value == index
    assert "mine.png" in viewer.table.value and "missed" not in viewer.table.value


def test_one_class_per_object_hand_case():
    from fcoslab.modeling.decode import one_class_per_object

    det = {"boxes": torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60.0], [1, 1, 10, 10]]),
           "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([0, 1, 1, 2])}
    kept = one_class_per_object(det, 0.6)
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.7]) and kept["labels"].tolist() == [0, 1]
    assert one_class_per_object({k: v[:0] for k, v in det.items()}, 0.6)["boxes"].shape == (0, 4)


def test_one_class_checkbox_removes_overlapping_classes(viewer):
    from fcoslab.boxes import box_iou

    viewer.score.value = 0.0
    viewer.show_gt.value = False
    counts = {}
    for one_class in (False, True):
        viewer.one_class.value = one_class
        _, rows = viewer.render(viewer.index.value, 0.0, viewer.names, False, one_class)
        counts[one_class] = len(rows)
        if one_class:
            boxes = torch.tensor([r["box"] for r in rows]).reshape(-1, 4)
            iou = box_iou(boxes, boxes).nan_to_num(0.0).fill_diagonal_(0)  # nan: zero-area boxes
            assert iou.max() <= viewer.predictor.cfg.decode.nms_thresh + 1e-2, iou.max()
    assert counts[True] < counts[False]  # the barely trained model hedges between classes
    viewer.show_gt.value = True
