"""COCOeval's IoU, matching and 101-point AP at one IoU (fcoslab.evaluation.coco_ap) against pycocotools itself: the
same IoU floats, the same per-class AP50 on random cases with crowd boxes, tied scores and more than 100
detections in an image, and hand cases for the rules that decide ties."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from fcoslab.evaluation.coco_ap import (COCO_RECALLS, DROPPED, coco_average_precision, coco_class_aps, coco_iou, coco_match,
                             coco_positives)
from fcoslab.evaluation.coco import coco_evaluate
from fcoslab.evaluation.voc import FP, IGNORED, TP, mean_ignoring_nan, read_coco

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "bird"}]


def coco_gt(boxes, images=(1, 2, 3)):
    """boxes: (image_id, category_id, xywh[, iscrowd]) -> a COCO ground-truth dict."""
    anns = [{"id": i + 1, "image_id": image, "category_id": cat, "bbox": list(box), "area": box[2] * box[3],
             "iscrowd": int(crowd[0]) if crowd else 0} for i, (image, cat, box, *crowd) in enumerate(boxes)]
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": 300, "height": 300} for i in images],
            "annotations": anns, "categories": CATS}


def det(image, cat, box, score):
    return {"image_id": image, "category_id": cat, "bbox": list(box), "score": score}


def random_box(rng):
    return [*rng.uniform(0, 200, 2).round(1).tolist(), *rng.uniform(4, 60, 2).round(1).tolist()]


def test_iou_is_pycocotools_to_the_bit():
    rng = np.random.default_rng(0)
    dets = np.array([random_box(rng) for _ in range(40)] + [[0.1, 0.2, 0.0, 5.0], [3.0, 3.0, 1e-9, 1e-9]])
    boxes = np.array([random_box(rng) for _ in range(30)] + [[0.1, 0.2, 0.3, 5.0]])
    crowd = rng.random(len(boxes)) < 0.3
    theirs = mask_utils.iou(dets.tolist(), boxes.tolist(), crowd.astype(np.uint8).tolist())
    ours = coco_iou(dets, boxes, crowd)
    assert ours.shape == (42, 31) and np.array_equal(ours, theirs) and (ours > 0).sum() > 20


def test_matching_ties_crowd_and_the_cap_by_hand():
    a, b = [0, 0, 10, 10], [0, 0, 10, 10]  # two equal boxes: COCOeval's >= gives the detection the later one
    gt = coco_gt([(1, 1, a), (1, 1, b), (1, 1, [50, 50, 40, 40], 1), (2, 1, [0, 0, 10, 10])])
    results = [det(1, 1, a, .9), det(1, 1, [60, 60, 10, 10], .8),  # inside the crowd box: ignored
               det(1, 1, [150, 150, 10, 10], .7)]  # nothing: FP
    results += [det(2, 1, [0, 0, 10, 10], .5 - k / 1000) for k in range(101)]  # 101 in image 2: the last dropped
    truth, dets = read_coco(gt, results)
    outcome, gt_index = coco_match(truth, dets, 0.5, max_dets=100)
    assert outcome[:3].tolist() == [TP, IGNORED, FP] and gt_index[0] == 1  # the second of the equal boxes
    assert outcome[3] == TP and (outcome[4:103] == FP).all() and outcome[103] == DROPPED
    assert coco_positives(truth) == {1: 3, 2: 0, 5: 0}


def test_ap_is_cocoeval_at_recall_points_off_the_decimals():
    # 10 positives, TP x7 then FP then TP: recall lands on exactly 0.7, below COCOeval's point
    # 0.7000000000000001, which therefore takes the envelope at recall 0.8 (8/9), not 1
    tp = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1], bool)
    assert COCO_RECALLS[70] == 0.7000000000000001
    # points 0 .. 0.69 (70) at 1, 0.70 .. 0.80 (11) at 8/9, the rest 0; a grid of exact decimals (tidecv's
    # i / 100) would count 0.70 at 1: (71 + 10 * 8 / 9) / 101
    ap = coco_average_precision(tp, ~tp, 10)
    assert ap == pytest.approx((70 + 11 * 8 / 9) / 101, abs=1e-14) and ap != pytest.approx((71 + 10 * 8 / 9) / 101)
    assert coco_average_precision(tp[:0], tp[:0], 3) == 0.0 and np.isnan(coco_average_precision(tp, ~tp, 0))


@pytest.mark.parametrize("seed", range(6))
def test_ap50_equals_pycocotools_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    boxes = [(int(rng.integers(1, 4)), int(rng.choice([1, 2, 5])), random_box(rng), int(rng.random() < 0.15))
             for _ in range(40)]
    results = []
    for image, cat, box, _ in boxes:
        for _ in range(int(rng.integers(0, 3))):
            noisy = (np.array(box) + rng.normal(0, 3, 4)).clip(1).round(2).tolist()
            results.append(det(image, cat if rng.random() < 0.8 else int(rng.choice([1, 2, 5])), noisy, 0.0))
    results += [det(int(rng.integers(1, 4)), int(rng.choice([1, 2, 5])), random_box(rng), 0.0) for _ in range(30)]
    results += [det(1, 1, random_box(rng), 0.0) for _ in range(110 if seed % 2 else 0)]  # past the cap of 100
    for r in results:  # scores on a coarse grid, so that many tie
        r["score"] = float(rng.integers(1, 20) / 20)
    gt = coco_gt(boxes)
    stats, evaluator = coco_evaluate(gt, results)
    truth, dets = read_coco(gt, results)
    outcome, _ = coco_match(truth, dets, 0.5)
    aps = coco_class_aps(dets, dets.labels, outcome, coco_positives(truth))
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # (101, K) at IoU .5, area all, 100 detections
    for k, cat in enumerate(truth.cat_ids):
        theirs = precision[:, k].mean() if (precision[:, k] > -1).all() else float("nan")
        assert aps[cat] == pytest.approx(theirs, abs=1e-12, nan_ok=True)
    assert mean_ignoring_nan(aps.values()) == pytest.approx(stats["AP50"], abs=1e-12)
    assert (outcome == IGNORED).any() and (outcome == TP).any() and ((outcome == DROPPED).any() == bool(seed % 2))
