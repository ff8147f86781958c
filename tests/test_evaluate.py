import json

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fcoslab.datasets import CocoIndex, check_coco_dict
from fcoslab.evaluate import STAT_NAMES, coco_evaluate, summary_text, to_coco_results


def gt_dict():
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 80} for i in (3, 5)]
    anns = [{"image_id": 3, "category_id": 11, "bbox": [10, 10, 30, 20]},
            {"image_id": 3, "category_id": 2, "bbox": [50, 40, 20, 30]},
            {"image_id": 5, "category_id": 11, "bbox": [0, 0, 60, 60]}]
    return check_coco_dict({"images": images, "annotations": anns,
                            "categories": [{"id": 11, "name": "b"}, {"id": 2, "name": "a"}]}, "gt")


def perfect_detections():
    index = CocoIndex([2, 11], ["a", "b"])
    dets = [(3, {"boxes": torch.tensor([[10.0, 10, 40, 30], [50, 40, 70, 70]]), "scores": torch.tensor([0.9, 0.8]),
                 "labels": torch.tensor([1, 0])}),
            (5, {"boxes": torch.tensor([[0.0, 0, 60, 60]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])})]
    return to_coco_results(dets, index)


def test_results_use_category_ids_and_xywh():
    results = perfect_detections()
    assert results[0] == {"image_id": 3, "category_id": 11, "bbox": [10.0, 10.0, 30.0, 20.0], "score": 0.9}
    assert results[1]["category_id"] == 2


def test_perfect_detections_score_one_and_match_pycocotools(tmp_path):
    gt = gt_dict()
    stats, _ = coco_evaluate(gt, perfect_detections())
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(perfect_detections()))
    coco = COCO(str(tmp_path / "gt.json"))
    e = COCOeval(coco, coco.loadRes(str(tmp_path / "res.json")), "bbox")
    e.evaluate(), e.accumulate(), e.summarize()
    assert [stats[k] for k in STAT_NAMES] == pytest.approx(list(e.stats))


def test_half_wrong_detections_score_lower():
    results = perfect_detections()
    results[0]["bbox"] = [60.0, 0.0, 30.0, 20.0]  # misses its object
    stats, _ = coco_evaluate(gt_dict(), results)
    assert 0.2 < stats["AP"] < 0.9


def test_no_detections_scores_zero_instead_of_crashing():
    stats, evaluator = coco_evaluate(gt_dict(), [])
    assert evaluator is None and all(v == 0.0 for v in stats.values())
    text = summary_text(stats)
    assert len(text.splitlines()) == 12 and "maxDets=100 ] = 0.000" in text


def test_ground_truth_without_iscrowd_or_area():
    gt = gt_dict()  # check_coco_dict filled them; raw pycocotools would raise KeyError without
    assert all("iscrowd" in a and "area" in a for a in gt["annotations"])
    stats, _ = coco_evaluate(gt, perfect_detections())
    assert stats["AP"] == pytest.approx(1.0)
