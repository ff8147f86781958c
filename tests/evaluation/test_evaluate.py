import copy
import json
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fcoslab.config import config_from_dict, load_config
from fcoslab.data import CocoIndex, check_coco_dict
from fcoslab.errors import FcoslabError
from fcoslab.evaluation.coco import STAT_NAMES, coco_evaluate, per_class_ap, score_results, summary_text, to_coco_results


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


def test_evaluation_stats_is_the_documented_dict():
    from fcoslab.evaluation.coco import Evaluation

    evaluation = score_results(gt_dict(), perfect_detections(), ["a", "b"], "coco")
    assert isinstance(evaluation.stats, dict) and list(evaluation.stats) == list(STAT_NAMES)
    assert evaluation.stats["APl"] == -1 and evaluation.stats["APs"] == pytest.approx(1.0)  # no large boxes here
    assert score_results(gt_dict(), perfect_detections(), ["a", "b"], "voc").stats == {}
    doc = Evaluation.__doc__
    assert "dict" in doc and all(f"``{name}``" in doc for name in STAT_NAMES) and "-1 where" in doc


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


# eval.backend: faster-coco-eval against pycocotools on generated COCO-like data

CAT_IDS = (1, 3, 4, 7, 12, 90)  # non-contiguous, like COCO's


def random_ground_truth(seed: int, images: int = 40, objects: int = 6, crowd: float = 0.06) -> dict:
    """``images`` 640x480 images with 0 to 2 * ``objects`` boxes each, sides from 3 to 400 px (small, medium
    and large objects), a fraction ``crowd`` of them crowd boxes; category 7 never appears (no ground truth)."""
    g = np.random.default_rng(seed)
    anns = []
    for image_id in range(1, images + 1):
        for _ in range(g.integers(0, 2 * objects + 1)):
            side, aspect = np.exp(g.uniform(np.log(3), np.log(400))), np.exp(g.uniform(-1, 1))
            w, h = min(side * aspect ** 0.5, 639.0), min(side / aspect ** 0.5, 479.0)
            anns.append({"image_id": image_id, "category_id": int(g.choice([c for c in CAT_IDS if c != 7])),
                         "bbox": [g.uniform(0, 640 - w), g.uniform(0, 480 - h), w, h],
                         "iscrowd": int(g.random() < crowd)})
    images_ = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in range(1, images + 1)]
    categories = [{"id": c, "name": f"c{c}"} for c in CAT_IDS]
    return check_coco_dict({"images": images_, "annotations": anns, "categories": categories}, "gt")


def random_detections(gt: dict, seed: int, extra: int = 8) -> list[dict]:
    """Noisy copies of the ground truth (some with the wrong category, some twice), ``extra`` random boxes
    per image, and 150 on image 1 (past maxDets=100); scores rounded as :func:`to_coco_results` rounds them."""
    g = np.random.default_rng(seed)
    results = []

    def add(image_id, category_id, box):
        results.append({"image_id": image_id, "category_id": int(category_id),
                        "bbox": [round(float(v), 2) for v in box], "score": round(float(g.random()), 5)})

    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(g.integers(0, 3)):
            jitter = g.normal(0, 0.1, 4) * [w, h, w, h]
            category = a["category_id"] if g.random() < 0.9 else g.choice(CAT_IDS)
            add(a["image_id"], category, [x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)])
    for image in gt["images"]:
        for _ in range(150 if image["id"] == 1 else extra):
            w, h = g.uniform(2, 300, 2)
            add(image["id"], g.choice(CAT_IDS), [g.uniform(0, 640 - w), g.uniform(0, 480 - h), w, h])
    return results


def both_backends(gt: dict, results: list[dict], image_ids=None):
    """``coco_evaluate`` with each backend, each on its own copy (COCO objects annotate the dicts)."""
    return [coco_evaluate(copy.deepcopy(gt), copy.deepcopy(results), image_ids, backend=b)
            for b in ("pycocotools", "faster")]


@pytest.mark.parametrize("case", ["random", "random_subset", "perfect"])
def test_faster_backend_gives_pycocotools_numbers(case, capsys):
    gt = random_ground_truth(seed=3)
    if case == "perfect":
        results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                   for a in gt["annotations"] if not a["iscrowd"]]
    else:
        results = random_detections(gt, seed=4)
    image_ids = list(range(1, 41, 3)) if case == "random_subset" else None
    (stats, reference), (fast_stats, fast) = both_backends(gt, results, image_ids)
    assert capsys.readouterr().out == ""
    assert type(fast).__module__.startswith("faster_coco_eval")
    assert [fast_stats[k] for k in STAT_NAMES] == pytest.approx([stats[k] for k in STAT_NAMES], abs=1e-4)
    assert 0.05 < stats["AP"] < 0.9 or (case == "perfect" and stats["AP"] == pytest.approx(1.0))
    assert stats["APs"] > -1 and stats["APm"] > -1 and stats["APl"] > -1  # every size range has objects
    assert fast.eval["precision"].shape == reference.eval["precision"].shape  # (T, R, K, A, M)
    np.testing.assert_array_equal(fast.params.recThrs, reference.params.recThrs)
    for iou in (None, 0.5):
        ap, fast_ap = per_class_ap(reference, iou), per_class_ap(fast, iou)
        assert np.isnan(ap[CAT_IDS.index(7)]) and np.isnan(fast_ap[CAT_IDS.index(7)])  # no ground truth
        np.testing.assert_allclose(fast_ap, ap, atol=1e-4, rtol=0)


def test_faster_backend_without_results_scores_zero():
    (stats, evaluator), (fast_stats, fast) = both_backends(random_ground_truth(seed=5), [])
    assert evaluator is None and fast is None and fast_stats == stats == {k: 0.0 for k in STAT_NAMES}


def test_score_results_threads_the_backend():
    gt = random_ground_truth(seed=6, images=12)
    results = random_detections(gt, seed=7)
    names = [f"c{c}" for c in CAT_IDS]
    plain = score_results(copy.deepcopy(gt), copy.deepcopy(results), names, "both")
    fast = score_results(copy.deepcopy(gt), copy.deepcopy(results), names, "both", backend="faster")
    assert type(fast.evaluator).__module__.startswith("faster_coco_eval")
    record, fast_record = plain.record(), fast.record()
    assert fast_record.pop("voc_per_class") == record.pop("voc_per_class")  # fcoslab's own VOC metrics
    assert fast_record.pop("per_class_AP") == pytest.approx(record.pop("per_class_AP"), abs=2e-5)  # 5 digits
    assert record["AP"] > 0.05 and fast_record == pytest.approx(record, abs=2e-5)


def test_backend_config_key_round_trips_and_is_checked():
    cfg = load_config("shapes", ["eval.backend=faster"])
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))).eval.backend == "faster"
    assert load_config("shapes").eval.backend == "pycocotools"
    with pytest.raises(FcoslabError, match="'eval.backend': 'fast' is not one of pycocotools, faster"):
        load_config("shapes", ["eval.backend=fast"])
    with pytest.raises(FcoslabError, match="'eval.backend': 'fast' is not one of pycocotools, faster"):
        coco_evaluate(gt_dict(), perfect_detections(), backend="fast")


def test_faster_backend_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import faster_coco_eval -> ImportError
    message = r"eval.backend=faster needs faster-coco-eval: pip install faster-coco-eval"
    for results in (perfect_detections(), []):
        with pytest.raises(FcoslabError, match=message):
            coco_evaluate(gt_dict(), results, backend="faster")
    with pytest.raises(FcoslabError, match=message):
        score_results(gt_dict(), perfect_detections(), ["a", "b"], backend="faster")
    assert coco_evaluate(gt_dict(), perfect_detections())[0]["AP"] == pytest.approx(1.0)  # pycocotools still works


def test_per_class_table_without_detections_is_zero_where_there_is_ground_truth():
    from fcoslab.evaluation.reports import per_class_table
    from fcoslab.evaluation.coco import score_results

    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    table = per_class_table(score_results(gt, [], ["a", "b"], "both"))
    assert table["b"]["AP"] == 0.0 and table["a"]["AP"] is None and table["a"]["voc_AP50"] is None
