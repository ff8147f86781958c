"""Confusion matrix and TIDE error breakdown on hand cases: one per error type, TIDE's order of checks and
oracles, difficult boxes, and a case whose fixes add up to AP50 = 1."""

import json

import numpy as np
import pytest

from fcoslab.error_analysis import ERROR_TYPES, confusion_matrix, error_breakdown
from fcoslab.voc_metrics import voc_evaluate

CATS = [{"id": i, "name": n} for i, n in enumerate(("cat", "dog", "bird", "horse", "sheep"), start=1)]
CAT, DOG, BIRD, HORSE, SHEEP = 1, 2, 3, 4, 5
A, B = [0, 0, 10, 10], [20, 0, 10, 10]  # xywh
NEAR_A = [0, 0, 4, 10]  # IoU 0.4 with A
FAR = [150, 150, 10, 10]


def coco_gt(boxes, images=(1, 2)):
    """boxes: (image_id, category_id, xywh[, extra fields]) -> a COCO ground-truth dict."""
    anns = [dict({"id": i + 1, "image_id": image, "category_id": cat, "bbox": list(bbox), "iscrowd": 0},
                 **(extra[0] if extra else {})) for i, (image, cat, bbox, *extra) in enumerate(boxes)]
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in images]
    return {"images": images, "annotations": anns, "categories": CATS}


def det(image, cat, bbox, score):
    return {"image_id": image, "category_id": cat, "bbox": list(bbox), "score": score}


def counts(**nonzero):
    return {name: nonzero.get(name, 0) for name in ERROR_TYPES}


@pytest.mark.parametrize("boxes, results, expected", [
    ([(1, CAT, A)], [det(1, DOG, A, .9)], counts(Cls=1)),  # right place, wrong class: its box is not missed
    ([(1, CAT, A)], [det(1, CAT, NEAR_A, .9)], counts(Loc=1)),  # right class, IoU .4
    ([(1, CAT, A)], [det(1, DOG, NEAR_A, .9)], counts(Both=1, Missed=1)),  # wrong class, IoU .4
    ([(1, CAT, A)], [det(1, CAT, A, .9), det(1, CAT, A, .8)], counts(Dupe=1)),
    ([(1, CAT, A)], [det(1, CAT, FAR, .9), det(1, DOG, [0, 0, 0.5, 10], .8)], counts(Bkg=2, Missed=1)),  # IoU .05
    ([(1, CAT, A), (1, CAT, B)], [det(1, CAT, A, .9)], counts(Missed=1)),
    ([], [det(2, CAT, A, .9)], counts(Bkg=1)),  # an image without ground truth
    # TIDE's order: Loc (IoU .43 with its class's box A) is checked before Cls (IoU 1 with the dog box)
    ([(1, CAT, A), (1, DOG, [4, 0, 10, 10])], [det(1, CAT, [4, 0, 10, 10], .9)], counts(Loc=1, Missed=1)),
    # difficult boxes: detections on them are ignored, and they are never missed
    ([(1, CAT, A, {"difficult": 1}), (1, DOG, B, {"iscrowd": 1})], [det(1, CAT, A, .9), det(1, DOG, B, .8)],
     counts()),
])
def test_each_error_type_by_hand(boxes, results, expected):
    assert error_breakdown(coco_gt(boxes), results)["counts"] == expected


def test_oracles_by_hand():
    # Cls: relabelled onto the cat box -> cat AP 0 -> 1 (dog has no ground truth: left out)
    out = error_breakdown(coco_gt([(1, CAT, A)]), [det(1, DOG, A, .9)])
    assert out["AP50"] == 0.0 and out["dAP"]["Cls"] == 1.0 and out["dAP"]["Loc"] == 0.0
    # Loc on an unmatched box: moved onto it -> cat: FP .9 TP .8 of 2 -> TP TP -> AP .25 -> 1
    out = error_breakdown(coco_gt([(1, CAT, A), (1, CAT, B)]), [det(1, CAT, NEAR_A, .9), det(1, CAT, B, .8)])
    assert out["AP50"] == pytest.approx(0.25) and out["dAP"]["Loc"] == pytest.approx(0.75)
    # Loc on a box already matched (by a lower score here): suppressed -> FP .9 TP .8 of 1 -> AP .5 -> 1
    out = error_breakdown(coco_gt([(1, CAT, A)]), [det(1, CAT, NEAR_A, .9), det(1, CAT, A, .8)])
    assert out["counts"] == counts(Loc=1) and out["dAP"]["Loc"] == pytest.approx(0.5)
    # two Cls errors and a better-scored Loc error on one unmatched cat box: the Loc error is the fixer,
    # so fixing Cls only suppresses the dog detections (dog has no ground truth: no change)
    out = error_breakdown(coco_gt([(1, CAT, A)]), [det(1, CAT, NEAR_A, .95), det(1, DOG, A, .9), det(1, DOG, A, .8)])
    assert out["counts"] == counts(Loc=1, Cls=2) and out["dAP"]["Cls"] == 0.0 and out["dAP"]["Loc"] == 1.0
    # Missed: cat 1 of 2 found at precision 1 -> AP .5; without the missed box -> 1
    out = error_breakdown(coco_gt([(1, CAT, A), (1, CAT, B)]), [det(1, CAT, A, .9)])
    assert out["AP50"] == 0.5 and out["dAP"] == dict(counts(), Missed=0.5)


def test_fixing_every_error_type_brings_ap50_to_one():
    # one image, five classes, boxes 10 px wide along y = 0:
    #   cat   A  matched by .5, a background detection at .9 above it      AP .5  (Bkg +.5)
    #   sheep S  matched by .5, a sheep detection at .9 with IoU .4 on A    AP .5  (Both +.5)
    #   dog   G1 matched by .9, duplicate .8; G2 missed                    AP .5  (Dupe 0, Missed +.5)
    #   bird  E  only a bird detection with IoU .4 (.9)                    AP 0   (Loc +1)
    #   horse H  only a bird detection exactly on it (.8)                  AP 0   (Cls +1)
    # base = 1.5 / 5 = .3; dAP over the 5 classes: Cls .2, Loc .2, Both .1, Dupe 0, Bkg .1, Missed .1
    s, g1, g2, e, h = ([x, 0, 10, 10] for x in (20, 40, 60, 80, 100))
    gt = coco_gt([(1, CAT, A), (1, SHEEP, s), (1, DOG, g1), (1, DOG, g2), (1, BIRD, e), (1, HORSE, h)])
    results = [det(1, CAT, FAR, .9), det(1, CAT, A, .5), det(1, SHEEP, NEAR_A, .9), det(1, SHEEP, s, .5),
               det(1, DOG, g1, .9), det(1, DOG, g1, .8), det(1, BIRD, [80, 0, 4, 10], .9), det(1, BIRD, h, .8)]
    out = error_breakdown(gt, results)
    assert out["counts"] == counts(Cls=1, Loc=1, Both=1, Dupe=1, Bkg=1, Missed=1)
    assert out["AP50"] == pytest.approx(0.3) == voc_evaluate(gt, results)["mAP50"]
    expected = {"Cls": .2, "Loc": .2, "Both": .1, "Dupe": 0.0, "Bkg": .1, "Missed": .1}
    assert out["dAP"] == pytest.approx(expected)
    assert out["AP50"] + sum(out["dAP"].values()) == pytest.approx(1.0) == out["AP50_all_fixed"]
    assert out["iou_fg"] == 0.5 and out["iou_bg"] == 0.1
    json.dumps(out, allow_nan=False)


def test_all_fixed_is_one_on_random_cases():
    rng = np.random.default_rng(3)
    for _ in range(20):
        boxes = [(int(rng.integers(1, 3)), int(rng.integers(1, 4)), [*rng.uniform(0, 60, 2), *rng.uniform(5, 30, 2)],
                  {"difficult": int(rng.random() < 0.1)}) for _ in range(8)]
        results = [det(int(rng.integers(1, 3)), int(rng.integers(1, 4)),
                       [*rng.uniform(0, 60, 2), *rng.uniform(5, 30, 2)], float(rng.random())) for _ in range(15)]
        results += [det(im, cat, np.add(box, rng.normal(0, 2, 4)).tolist(), float(rng.random()))
                    for im, cat, box, _ in boxes if rng.random() < 0.6]
        out = error_breakdown(coco_gt(boxes), results)
        assert out["AP50_all_fixed"] in (None, pytest.approx(1.0))
        assert all(v is None or v >= -1e-12 for v in out["dAP"].values())
        assert out["AP50"] == voc_evaluate(coco_gt(boxes), results, iou_thresholds=[0.5])["mAP50"]


def test_confusion_matrix_by_hand():
    d, c, x = [40, 0, 10, 10], [60, 0, 10, 10], [80, 0, 10, 10]
    gt = coco_gt([(1, CAT, A), (1, DOG, d), (1, CAT, c), (1, CAT, x, {"difficult": 1}), (2, DOG, A)])
    results = [det(1, CAT, A, .9),  # cat as cat
               det(1, CAT, d, .8),  # dog taken for a cat
               det(1, DOG, FAR, .7),  # dog on nothing: background row
               det(1, DOG, x, .6),  # on the difficult box: ignored
               det(1, CAT, A, .5),  # A already matched: background row
               det(1, DOG, c, .2),  # below the score threshold: as if absent, so cat c is missed
               det(2, DOG, A, .9)]  # dog as dog, on image 2
    matrix, names = confusion_matrix(gt, results)
    assert names == ["cat", "dog", "bird", "horse", "sheep", "background"]
    expected = np.zeros((6, 6), np.int64)
    expected[0, 0] = expected[1, 0] = expected[1, 1] = 1  # (true, predicted)
    expected[5, 1] = expected[5, 0] = 1  # detections of nothing
    expected[0, 5] = 1  # missed cat c (the difficult box is not missed)
    assert matrix.dtype == np.int64 and np.array_equal(matrix, expected)
    low = confusion_matrix(gt, results, score=0.1)[0]
    assert low[0, 1] == 1 and low[0, 5] == 0  # with the .2 detection, cat c is taken for a dog, not missed
    only_2 = confusion_matrix(gt, results, image_ids=[2])[0]
    assert only_2.sum() == 1 and only_2[1, 1] == 1
    assert confusion_matrix(gt, [])[0][:, 5].tolist() == [2, 2, 0, 0, 0, 0]
