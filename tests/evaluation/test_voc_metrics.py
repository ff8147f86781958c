"""Pascal VOC AP: hand-computed cases (ties, duplicates, difficult boxes, classes without ground truth,
11-point vs all-point, empty results, image restriction) and pycocotools where the definitions coincide."""

import json

import numpy as np
import pytest

from fcoslab.errors import FcoslabError
from fcoslab.evaluation.coco import coco_evaluate
from fcoslab.evaluation.voc import (FP, IGNORED, TP, VOC07_RECALLS, average_precision, class_tp_fp, iou_matrix,
                                 voc_match, precision_recall, read_coco, voc_evaluate)

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 7, "name": "bird"}]
CAT, DOG, BIRD = 1, 2, 7
A, B, C, D = [0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10], [60, 0, 10, 10]  # xywh, far apart
FAR, FAR2 = [100, 100, 10, 10], [120, 100, 10, 10]  # overlap nothing


def coco_gt(boxes, images=(1, 2)):
    """boxes: (image_id, category_id, xywh[, extra fields]) -> a COCO ground-truth dict."""
    anns = []
    for i, (image, cat, bbox, *extra) in enumerate(boxes):
        ann = {"id": i + 1, "image_id": image, "category_id": cat, "bbox": list(bbox), "area": bbox[2] * bbox[3],
               "iscrowd": 0}
        anns.append(dict(ann, **(extra[0] if extra else {})))
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in images]
    return {"images": images, "annotations": anns, "categories": CATS}


def det(image, cat, bbox, score):
    return {"image_id": image, "category_id": cat, "bbox": list(bbox), "score": score}


def test_iou_is_continuous_and_empty_union_is_zero():
    boxes = np.array([[0.0, 0, 10, 10], [5, 0, 15, 10], [3, 3, 3, 3]])
    iou = iou_matrix(boxes, boxes)
    assert iou[0, 1] == pytest.approx(50 / 150)  # no +1: widths are 10, overlap 5
    assert iou[2, 2] == 0.0 and iou[0, 0] == 1.0


def test_average_precision_all_point_and_11_point_by_hand():
    # 4 positives, detections by score: TP FP TP FP TP
    # recall    .25 .25  .5  .5  .75
    # precision  1  1/2 2/3 1/2 3/5
    # envelope: 1 up to recall .25, 2/3 up to .5, 3/5 up to .75, 0 beyond.
    # all-point: .25 * 1 + .25 * 2/3 + .25 * 3/5 = 0.566667
    # 11-point: recall >= 0, .1, .2 -> 1; .3, .4, .5 -> 2/3; .6, .7 -> 3/5; .8, .9, 1 -> 0
    #           (3 + 3 * 2/3 + 2 * 3/5) / 11 = 6.2 / 11 = 0.563636
    recall, precision = [.25, .25, .5, .5, .75], [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5]
    assert average_precision(recall, precision, "all") == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 0.6)
    assert average_precision(recall, precision, "11pt") == pytest.approx(6.2 / 11)
    assert average_precision([], [], "all") == 0.0 and average_precision([], [], "11pt") == 0.0
    # a recall of exactly 3/10 does not reach the devkit's point 0.3 (0.30000000000000004): 3 of 11 points
    assert average_precision([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], "11pt") == pytest.approx(3 / 11)
    with pytest.raises(FcoslabError, match="'101pt'"):
        average_precision(recall, precision, "101pt")


def devkit_11pt(rec: np.ndarray, prec: np.ndarray) -> float:
    """The VOC2007 rule as py-faster-rcnn's voc_eval.py (voc_ap, use_07_metric=True) computes it."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = 0.0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
        ap = ap + p / 11.0
    return ap


def curve(outcomes: str, num_pos: int):
    """Recall and precision (as voc_eval computes them) after detections 'T' (TP) and 'F' (FP) by score."""
    tp = np.array([c == "T" for c in outcomes])
    return precision_recall(tp, ~tp, num_pos)


def test_11_point_ap_takes_the_devkit_recall_points():
    assert VOC07_RECALLS == tuple(np.arange(0.0, 1.1, 0.1).tolist())
    assert VOC07_RECALLS[3] == 0.30000000000000004 and VOC07_RECALLS[6:8] == (0.6000000000000001, 0.7000000000000001)
    # 10 positives, TP TP TP FP TP: recall .1 .2 .3 .3 .4, precision 1 1 1 .75 .8. Recall lands exactly on
    # 0.3, which is below the point 0.30000000000000004: that point takes max(precision at recall .4) = .8.
    # points 0, .1, .2 -> 1; .3, .4 -> .8; .5 ... 1 -> 0: (3 + 1.6) / 11 (exact decimals: (4 + .8) / 11)
    recall, precision = curve("TTTFT", 10)
    assert recall[2] == recall[3] == 0.3
    ap = average_precision(recall, precision, "11pt")
    assert abs(ap - devkit_11pt(recall, precision)) < 1e-12 and ap == pytest.approx(4.6 / 11)
    assert ap != pytest.approx(4.8 / 11)
    # six TPs, an FP, a TP of 10: recall ends at exactly .7, below 0.7000000000000001; the recall .6
    # of the first six is below 0.6000000000000001, so that point takes 7/8 from recall .7
    recall, precision = curve("TTTTTTFT", 10)
    ap = average_precision(recall, precision, "11pt")
    assert abs(ap - devkit_11pt(recall, precision)) < 1e-12 and ap == pytest.approx((6 + 7 / 8) / 11)


def test_11_point_ap_equals_the_devkit_rule_on_random_curves():
    rng = np.random.default_rng(11)
    for _ in range(300):
        num_pos = int(rng.choice([5, 10, 20, 30, 7, 100]))
        n = int(rng.integers(0, 2 * num_pos))
        tp = rng.random(n) < rng.random()
        tp[np.flatnonzero(tp)[num_pos:]] = False  # at most num_pos true positives
        recall, precision = precision_recall(tp, ~tp, num_pos)
        assert abs(average_precision(recall, precision, "11pt") - devkit_11pt(recall, precision)) < 1e-12


def test_11_point_ap_end_to_end_on_a_recall_of_exactly_three_tenths():
    boxes = [[20 * k, 0, 10, 10] for k in range(10)]
    gt = coco_gt([(1, CAT, box) for box in boxes])
    results = [det(1, CAT, boxes[k], 0.9 - 0.1 * k) for k in range(3)] + [det(1, CAT, FAR, 0.55),
                                                                           det(1, CAT, boxes[3], 0.5)]
    recall, precision = curve("TTTFT", 10)
    ours = voc_evaluate(gt, results)["mAP50_11pt"]
    assert abs(ours - devkit_11pt(recall, precision)) < 1e-12 and ours == pytest.approx(4.6 / 11)


def test_same_case_end_to_end_and_classes_without_gt_left_out():
    gt = coco_gt([(1, CAT, box) for box in (A, B, C, D)])
    results = [det(1, CAT, A, .9), det(1, CAT, FAR, .8), det(1, CAT, B, .7), det(1, CAT, FAR2, .6),
               det(1, CAT, C, .5), det(1, BIRD, FAR, .95)]  # bird has no ground truth
    out = voc_evaluate(gt, results)
    assert out["mAP50"] == pytest.approx(0.566667, abs=1e-6)
    assert out["mAP50_11pt"] == pytest.approx(0.563636, abs=1e-6)
    assert out["mAP75"] == out["mAP"] == pytest.approx(0.566667, abs=1e-6)  # exact boxes: same at every IoU
    assert out["per_class"]["cat"]["AP50_11pt"] == out["mAP50_11pt"]
    assert out["per_class"]["bird"] == {"AP50": None, "AP50_11pt": None, "AP75": None, "AP": None}
    assert out["per_class"]["dog"]["AP50"] is None
    json.dumps(out, allow_nan=False)


def test_equal_scores_keep_input_order():
    gt = coco_gt([(1, CAT, A)])
    fp_first = voc_evaluate(gt, [det(1, CAT, FAR, .9), det(1, CAT, A, .9)])
    tp_first = voc_evaluate(gt, [det(1, CAT, A, .9), det(1, CAT, FAR, .9)])
    assert fp_first["mAP50"] == pytest.approx(0.5) and tp_first["mAP50"] == pytest.approx(1.0)
    # two equal-score detections of the same box: the first in the input is the TP
    truth, dets = read_coco(gt, [det(1, CAT, [0, 0, 10, 9], .9), det(1, CAT, A, .9)])
    outcome, gt_index = voc_match(truth, dets, 0.5)
    assert outcome.tolist() == [TP, FP] and gt_index.tolist() == [0, 0]


def test_duplicates_are_false_positives():
    gt = coco_gt([(1, CAT, A), (1, CAT, B)])
    results = [det(1, CAT, A, .9), det(1, CAT, A, .8), det(1, CAT, B, .7)]
    truth, dets = read_coco(gt, results)
    c = class_tp_fp(truth, dets, 0.5)[CAT]
    assert c["num_pos"] == 2 and c["scores"].tolist() == [.9, .8, .7]
    assert c["tp"].tolist() == [True, False, True] and c["fp"].tolist() == [False, True, False]
    # recall .5 at precision 1, then recall 1 at precision 2/3: .5 + .5 * 2/3
    assert voc_evaluate(gt, results)["mAP50"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a duplicate after full recall costs nothing
    assert voc_evaluate(gt, results + [det(1, CAT, B, .1)])["mAP50"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_devkit_duplicate_takes_the_max_iou_box_even_when_matched_unlike_coco():
    gt = coco_gt([(1, CAT, A), (1, CAT, [2, 0, 10, 10])])
    # second detection: IoU 95/105 = .905 with A (taken) and 85/115 = .739 with the other box
    results = [det(1, CAT, A, .9), det(1, CAT, [0.5, 0, 10, 10], .8)]
    truth, dets = read_coco(gt, results)
    assert voc_match(truth, dets, 0.5)[0].tolist() == [TP, FP]
    assert voc_evaluate(gt, results)["mAP50"] == pytest.approx(0.5)  # recall .5 at precision 1
    assert coco_evaluate(gt, results)[0]["AP50"] == pytest.approx(1.0)  # COCO takes the unmatched box


def test_difficult_and_crowd_boxes_are_ignored_and_not_counted():
    gt = coco_gt([(1, CAT, A), (1, CAT, B, {"difficult": 1}), (1, CAT, C, {"iscrowd": 1})])
    results = [det(1, CAT, B, .95), det(1, CAT, C, .93), det(1, CAT, B, .92), det(1, CAT, A, .9),
               det(1, CAT, FAR, .5)]
    truth, dets = read_coco(gt, results)
    outcome, gt_index = voc_match(truth, dets, 0.5)
    assert outcome.tolist() == [IGNORED, IGNORED, IGNORED, TP, FP]
    assert gt_index.tolist() == [1, 2, 1, 0, -1]
    c = class_tp_fp(truth, dets, 0.5)[CAT]
    assert c["num_pos"] == 1 and c["scores"].tolist() == [.9, .5] and c["tp"].tolist() == [True, False]
    assert voc_evaluate(gt, results)["mAP50"] == pytest.approx(1.0)
    # only difficult ground truth: the class has none, so it is left out
    only_difficult = voc_evaluate(coco_gt([(1, CAT, B, {"difficult": True})]), results)
    assert only_difficult["mAP50"] is None and only_difficult["per_class"]["cat"]["AP"] is None


def test_empty_results_score_zero_for_classes_with_gt():
    out = voc_evaluate(coco_gt([(1, CAT, A), (2, DOG, B)]), [])
    assert out["mAP50"] == out["mAP50_11pt"] == out["mAP75"] == out["mAP"] == 0.0
    assert out["per_class"]["cat"]["AP"] == 0.0 and out["per_class"]["bird"]["AP"] is None


def test_image_ids_restrict_ground_truth_and_detections():
    gt = coco_gt([(1, CAT, A), (2, CAT, A)])
    results = [det(2, CAT, FAR, .95), det(1, CAT, A, .9)]
    # all images: FP then TP of 2 positives -> recall .5 at precision .5 -> .25
    assert voc_evaluate(gt, results)["mAP50"] == pytest.approx(0.25)
    assert voc_evaluate(gt, results, image_ids=[1])["mAP50"] == pytest.approx(1.0)
    assert voc_evaluate(gt, results, image_ids=[2])["mAP50"] == pytest.approx(0.0)
    with pytest.raises(FcoslabError, match=r"image_ids \[9\]"):
        voc_evaluate(gt, results, image_ids=[1, 9])


def test_unknown_image_is_an_error_and_unknown_categories_are_not_scored():
    gt = coco_gt([(1, CAT, A)])
    with pytest.raises(FcoslabError, match=r"results\[0\] has image_id 5"):
        voc_evaluate(gt, [det(5, CAT, A, .9)])
    # a category the ground truth lacks (a 91-way COCO model on some of its classes) is left out, as in COCOeval
    assert voc_evaluate(gt, [det(1, 3, A, .95), det(1, CAT, A, .9)])["mAP50"] == pytest.approx(1.0)


def test_map_averages_the_iou_thresholds():
    gt = coco_gt([(1, CAT, A)])
    out = voc_evaluate(gt, [det(1, CAT, [0, 0, 6, 10], .9)])  # IoU 60/100 = 0.6 exactly
    assert out["mAP50"] == 1.0 and out["mAP75"] == 0.0
    assert out["mAP"] == pytest.approx(0.3)  # TP at 0.50, 0.55, 0.60 of the 10 thresholds
    assert voc_evaluate(gt, [det(1, CAT, [0, 0, 6, 10], .9)], iou_thresholds=[0.5, 0.7])["mAP"] == 0.5


def test_perfect_detections_give_one_like_pycocotools():
    rng = np.random.default_rng(0)
    boxes, results = [], []
    for image in (1, 2):
        for k, cat in enumerate((CAT, DOG, DOG)):
            xywh = [float(30 * k + rng.integers(0, 5)), float(rng.integers(0, 50)), 20.0, float(rng.integers(8, 30))]
            boxes.append((image, cat, xywh))
            results.append(det(image, cat, xywh, float(rng.random())))
    gt = coco_gt(boxes)
    ours, coco = voc_evaluate(gt, results), coco_evaluate(gt, results)[0]
    assert ours["mAP"] == ours["mAP50"] == ours["mAP75"] == ours["mAP50_11pt"] == 1.0
    assert coco["AP"] == pytest.approx(1.0) and coco["AP50"] == pytest.approx(1.0)


def test_constant_precision_all_point_ap_equals_coco_ap():
    # cat: 2 positives, FP TP FP TP -> precision 0, 1/2, 1/3, 1/2, envelope 1/2 at every recall: AP .5 in
    # both the all-point and COCO's 101-point rule. dog: one perfect detection, AP 1. A detection exactly on
    # a crowd box is ignored in both. Exact boxes: the same at every IoU threshold, so mAP == COCO AP.
    gt = coco_gt([(1, CAT, A), (2, CAT, B), (1, DOG, C), (2, CAT, D, {"iscrowd": 1})])
    results = [det(2, CAT, D, .99), det(1, CAT, FAR, .9), det(1, CAT, A, .8), det(2, CAT, FAR, .7),
               det(2, CAT, B, .6), det(1, DOG, C, .5)]
    ours, coco = voc_evaluate(gt, results), coco_evaluate(gt, results)[0]
    assert ours["per_class"]["cat"]["AP50"] == pytest.approx(0.5)
    assert ours["mAP50"] == pytest.approx(0.75) and coco["AP50"] == pytest.approx(0.75)
    assert ours["mAP75"] == pytest.approx(coco["AP75"]) and ours["mAP"] == pytest.approx(coco["AP"])
