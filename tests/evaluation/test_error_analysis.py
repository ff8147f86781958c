"""Confusion matrix and TIDE error breakdown: hand cases (one per error type, tidecv's order of checks and
oracles, crowd boxes, a case whose fixes add up to AP50 = 1), the TIDE authors' package tidecv as the
oracle on those and on random cases, pycocotools for the base AP50, and the cases where fcoslab knowingly
differs from tidecv (docs/error_analysis.md)."""

import json

import numpy as np
import pytest
import tidecv

from fcoslab.evaluation.errors import ERROR_TYPES, SPECIAL_ERRORS, confusion_matrix, error_breakdown
from fcoslab.evaluation.coco import coco_evaluate

CATS = [{"id": i, "name": n} for i, n in enumerate(("cat", "dog", "bird", "horse", "sheep"), start=1)]
CAT, DOG, BIRD, HORSE, SHEEP = 1, 2, 3, 4, 5
A, B = [0, 0, 10, 10], [20, 0, 10, 10]  # xywh
NEAR_A = [0, 0, 4, 10]  # IoU 0.4 with A
FAR = [150, 150, 10, 10]


def coco_gt(boxes, images=(1, 2)):
    """boxes: (image_id, category_id, xywh[, extra fields]) -> a COCO ground-truth dict."""
    anns = [dict({"id": i + 1, "image_id": image, "category_id": cat, "bbox": list(bbox), "area": bbox[2] * bbox[3],
                  "iscrowd": 0}, **(extra[0] if extra else {})) for i, (image, cat, bbox, *extra) in enumerate(boxes)]
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in images]
    return {"images": images, "annotations": anns, "categories": CATS}


def det(image, cat, bbox, score):
    return {"image_id": image, "category_id": cat, "bbox": list(bbox), "score": score}


def counts(**nonzero):
    return {name: nonzero.get(name, 0) for name in ERROR_TYPES}


def tidecv_breakdown(gt: dict, results: list[dict]) -> dict:
    """tidecv 1.0.1 on a COCO ground-truth dict and results, loaded as its COCO readers do (crowd boxes
    become ignore regions, 100 detections an image), keyed and scaled as :func:`error_breakdown`."""
    truth, dets = tidecv.Data("gt", max_dets=100), tidecv.Data("dets")
    for im in gt["images"]:
        truth.add_image(im["id"], im["file_name"])
    for c in gt["categories"]:
        truth.add_class(c["id"], c["name"])
    for a in gt["annotations"]:
        add = truth.add_ignore_region if a.get("iscrowd") else truth.add_ground_truth
        add(a["image_id"], a["category_id"], a["bbox"])
    for r in results:
        dets.add_detection(r["image_id"], r["category_id"], r["score"], r["bbox"])
    tide = tidecv.TIDE()
    run = tide.evaluate(truth, dets, mode=tidecv.TIDE.BOX, name="dets")
    names = {"Miss": "Missed"}
    return {"AP50": run.ap / 100, "counts": {names.get(t.short_name, t.short_name): n for t, n in run.count_errors().items()},
            "dAP": {names.get(k, k): v / 100 for k, v in tide.get_main_errors()["dets"].items()},
            "special": {k: v / 100 for k, v in tide.get_special_errors()["dets"].items()}}


def differences(ours: dict, theirs: dict) -> dict:
    """AP50 points (x100) between fcoslab's and tidecv's breakdowns, per error type and summary."""
    out = {k: abs(ours["dAP"][k] - theirs["dAP"][k]) * 100 for k in ERROR_TYPES}
    out.update({k: abs(ours["special"][k] - theirs["special"][k]) * 100 for k in SPECIAL_ERRORS})
    return dict(out, AP50=abs(ours["AP50"] - theirs["AP50"]) * 100)


def coco_ap50(gt: dict, results: list[dict]) -> float:
    return coco_evaluate(gt, results)[0]["AP50"]


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
    # crowd boxes: detections on them are ignored, and they are never missed; "difficult" alone is a
    # normal box, as in COCOeval (fcoslab's VOC converter writes difficult objects with iscrowd 1)
    ([(1, CAT, A, {"difficult": 1}), (1, DOG, B, {"iscrowd": 1})], [det(1, CAT, A, .9), det(1, DOG, B, .8)],
     counts()),
    ([(1, CAT, A, {"difficult": 1})], [], counts(Missed=1)),
])
def test_each_error_type_by_hand(boxes, results, expected):
    assert error_breakdown(coco_gt(boxes), results)["counts"] == expected
    if boxes and results and not any(len(b) > 3 for b in boxes):  # the cases tidecv can take (see below)
        assert tidecv_breakdown(coco_gt(boxes), results)["counts"] == expected


def test_oracles_by_hand():
    # COCO's AP: a class with 2 positives found at precision 1 up to recall .5 has 51 of 101 points at 1
    # Cls: relabelled onto the cat box -> cat AP 0 -> 1 (dog has no ground truth: left out)
    out = error_breakdown(coco_gt([(1, CAT, A)]), [det(1, DOG, A, .9)])
    assert out["AP50"] == 0.0 and out["dAP"]["Cls"] == pytest.approx(1.0) and out["dAP"]["Loc"] == 0.0
    # Loc on an unmatched box: moved onto it -> cat: FP .9 TP .8 of 2 -> TP TP -> AP 51 * .5 / 101 -> 1
    out = error_breakdown(coco_gt([(1, CAT, A), (1, CAT, B)]), [det(1, CAT, NEAR_A, .9), det(1, CAT, B, .8)])
    assert out["AP50"] == pytest.approx(25.5 / 101) and out["dAP"]["Loc"] == pytest.approx(75.5 / 101)
    # Loc on a box already matched (by a lower score here): suppressed -> FP .9 TP .8 of 1 -> AP .5 -> 1
    out = error_breakdown(coco_gt([(1, CAT, A)]), [det(1, CAT, NEAR_A, .9), det(1, CAT, A, .8)])
    assert out["counts"] == counts(Loc=1) and out["dAP"]["Loc"] == pytest.approx(0.5)
    # two Cls errors and a better-scored Loc error on one unmatched cat box: the Loc error is the fixer,
    # so fixing Cls only suppresses the dog detections (dog has no ground truth: no change)
    out = error_breakdown(coco_gt([(1, CAT, A)]), [det(1, CAT, NEAR_A, .95), det(1, DOG, A, .9), det(1, DOG, A, .8)])
    assert out["counts"] == counts(Loc=1, Cls=2) and out["dAP"]["Cls"] == 0.0 and out["dAP"]["Loc"] == pytest.approx(1.0)
    # Missed: cat 1 of 2 found at precision 1 -> AP 51 / 101; without the missed box -> 1
    out = error_breakdown(coco_gt([(1, CAT, A), (1, CAT, B)]), [det(1, CAT, A, .9)])
    assert out["AP50"] == pytest.approx(51 / 101) and out["dAP"] == pytest.approx(dict(counts(), Missed=50 / 101))
    assert out["special"] == pytest.approx({"FalsePos": 0.0, "FalseNeg": 50 / 101})


def test_fixing_every_error_type_brings_ap50_to_one():
    # one image, five classes, boxes 10 px wide along y = 0:
    #   cat   A  matched by .5, a background detection at .9 above it      AP .5  (Bkg +.5)
    #   sheep S  matched by .5, a sheep detection at .9 with IoU .4 on A    AP .5  (Both +.5)
    #   dog   G1 matched by .9, duplicate .8; G2 missed                    AP 51/101 (Dupe 0, Missed +50/101)
    #   bird  E  only a bird detection with IoU .4 (.9)                    AP 0   (Loc +1)
    #   horse H  only a bird detection exactly on it (.8)                  AP 0   (Cls +1)
    # base = (1 + 51/101) / 5; dAP over the 5 classes: Cls .2, Loc .2, Both .1, Dupe 0, Bkg .1, Missed 10/101
    s, g1, g2, e, h = ([x, 0, 10, 10] for x in (20, 40, 60, 80, 100))
    gt = coco_gt([(1, CAT, A), (1, SHEEP, s), (1, DOG, g1), (1, DOG, g2), (1, BIRD, e), (1, HORSE, h)])
    results = [det(1, CAT, FAR, .9), det(1, CAT, A, .5), det(1, SHEEP, NEAR_A, .91), det(1, SHEEP, s, .51),
               det(1, DOG, g1, .92), det(1, DOG, g1, .8), det(1, BIRD, [80, 0, 4, 10], .93), det(1, BIRD, h, .81)]
    out, theirs = error_breakdown(gt, results), tidecv_breakdown(gt, results)
    assert out["counts"] == counts(Cls=1, Loc=1, Both=1, Dupe=1, Bkg=1, Missed=1) == theirs["counts"]
    assert out["AP50"] == pytest.approx((1 + 51 / 101) / 5) == coco_ap50(gt, results)
    expected = {"Cls": .2, "Loc": .2, "Both": .1, "Dupe": 0.0, "Bkg": .1, "Missed": 10 / 101}
    assert out["dAP"] == pytest.approx(expected)
    assert out["AP50"] + sum(out["dAP"].values()) == pytest.approx(1.0) == out["AP50_all_fixed"]
    assert max(differences(out, theirs).values()) < 1e-9
    assert out["iou_fg"] == 0.5 and out["iou_bg"] == 0.1 and out["max_dets"] == 100
    json.dumps(out, allow_nan=False)


def random_case(rng, images=3, per_image=6, noise=0.25):
    """A COCO ground truth of ``per_image`` boxes an image over 3 classes in turn (so each class has at most
    9 boxes: no recall lands on COCOeval's off-decimal points, which need a multiple of 10 positives), and
    results near the boxes (80% of their class), plus background detections, all scores distinct."""
    boxes, results = [], []
    for image in range(1, images + 1):
        for k in range(per_image):
            box = [*rng.uniform(0, 150, 2).tolist(), *rng.uniform(8, 50, 2).tolist()]
            boxes.append((image, 1 + (k + image) % 3, box))
            for _ in range(int(rng.integers(0, 4))):
                near = (np.array(box) + rng.normal(0, noise, 4) * box[2]).tolist()
                near[2:] = [abs(v) + 1 for v in near[2:]]
                cat = 1 + (k + image) % 3 if rng.random() < 0.8 else int(rng.integers(1, 4))
                results.append(det(image, cat, near, float(rng.random())))
        results += [det(image, int(rng.integers(1, 4)), [*rng.uniform(0, 150, 2).tolist(), *rng.uniform(8, 50, 2).tolist()],
                        float(rng.random())) for _ in range(int(rng.integers(2, 8)))]
    return coco_gt(boxes, images=range(1, images + 1)), results


def test_breakdown_equals_tidecv_on_random_cases():
    rng = np.random.default_rng(40)
    worst, seen = dict.fromkeys([*ERROR_TYPES, *SPECIAL_ERRORS, "AP50"], 0.0), counts()
    for _ in range(30):
        gt, results = random_case(rng)
        out, theirs = error_breakdown(gt, results), tidecv_breakdown(gt, results)
        assert out["counts"] == theirs["counts"]
        assert out["AP50"] == pytest.approx(coco_ap50(gt, results), abs=1e-12)
        worst = {k: max(v, worst[k]) for k, v in differences(out, theirs).items()}
        seen = {k: seen[k] + n for k, n in out["counts"].items()}
    assert min(seen.values()) >= 5, seen  # every error type occurred
    assert max(worst.values()) < 0.01, worst  # AP50 points; measured: below 1e-12 on every type


def test_all_fixed_is_one_on_random_cases():
    rng = np.random.default_rng(3)
    for _ in range(20):
        boxes = [(int(rng.integers(1, 3)), int(rng.integers(1, 4)), [*rng.uniform(0, 60, 2), *rng.uniform(5, 30, 2)],
                  {"iscrowd": int(rng.random() < 0.1)}) for _ in range(8)]
        results = [det(int(rng.integers(1, 3)), int(rng.integers(1, 4)),
                       [*rng.uniform(0, 60, 2), *rng.uniform(5, 30, 2)], float(rng.random())) for _ in range(15)]
        results += [det(im, cat, np.add(box, rng.normal(0, 2, 4)).tolist(), float(rng.random()))
                    for im, cat, box, _ in boxes if rng.random() < 0.6]
        out = error_breakdown(coco_gt(boxes), results)
        assert out["AP50_all_fixed"] in (None, pytest.approx(1.0))
        assert all(v is None or v >= -1e-12 for v in [*out["dAP"].values(), *out["special"].values()])
        if out["AP50"] is not None:
            assert out["AP50"] == pytest.approx(coco_ap50(coco_gt(boxes), results), abs=1e-12)


# ---------------------------------------------------------------- where tidecv is wrong (docs/error_analysis.md)


def test_ground_truth_as_predictions_has_no_errors():
    # dbolya/tide#40: the ground truth given as predictions still shows Missed errors. The cause: tidecv
    # keeps the 100 highest-scored detections of an image over all classes, COCOeval 100 per image and
    # class. 120 objects of 3 classes in one image: tidecv drops 20 detections and reports them Missed.
    boxes = [(1, 1 + k % 3, [20 * (k % 12), 20 * (k // 12), 10, 10]) for k in range(120)]
    gt = coco_gt(boxes, images=(1,))
    results = [det(image, cat, box, 1.0) for image, cat, box in boxes]
    out, theirs = error_breakdown(gt, results), tidecv_breakdown(gt, results)
    assert out["AP50"] == pytest.approx(1.0) == coco_ap50(gt, results)
    assert out["counts"] == counts() and out["dAP"] == counts() and out["special"] == {"FalsePos": 0.0, "FalseNeg": 0.0}
    assert theirs["counts"] == counts(Missed=20) and theirs["AP50"] == pytest.approx(84 / 101)
    assert theirs["dAP"]["Missed"] == pytest.approx(17 / 101)
    # with 101 objects of one class, COCOeval's cap drops one too: then fcoslab reports that box Missed
    one_class = coco_gt([(1, 1, [20 * (k % 12), 20 * (k // 12), 10, 10]) for k in range(101)], images=(1,))
    results = [det(1, 1, a["bbox"], 1.0) for a in one_class["annotations"]]
    assert error_breakdown(one_class, results)["counts"] == counts(Missed=1)


def test_tidecv_counts_detections_on_crowd_boxes_as_errors():
    # COCOeval ignores a detection on a crowd box (it is neither TP nor FP); tidecv gives it an error type
    # too: on an image whose only box is a crowd box it becomes a Bkg error (dAP 0, but counted) ...
    gt = coco_gt([(1, CAT, [0, 0, 50, 50], {"iscrowd": 1}), (2, CAT, A)])
    results = [det(1, CAT, [5, 5, 10, 10], .9), det(2, CAT, A, .8)]
    assert error_breakdown(gt, results)["counts"] == counts()
    assert tidecv_breakdown(gt, results)["counts"] == counts(Bkg=1)
    # ... and one on a crowd box with IoU .25 on an unmatched box becomes that box's Loc fixer, ahead of
    # the real Loc error (.5, IoU .4), so fixing Loc adds a TP at .9 where COCO counted nothing
    gt = coco_gt([(1, CAT, B), (1, CAT, [60, 0, 10, 10]), (1, CAT, [0, 0, 20, 10], {"iscrowd": 1})])
    results = [det(1, CAT, [10, 0, 15, 10], .9), det(1, CAT, [60, 0, 10, 10], .8), det(1, CAT, FAR, .7),
               det(1, CAT, [26, 0, 4, 10], .5)]
    out, theirs = error_breakdown(gt, results), tidecv_breakdown(gt, results)
    assert out["AP50"] == pytest.approx(theirs["AP50"]) == pytest.approx(coco_ap50(gt, results))
    assert out["counts"] == counts(Bkg=1, Loc=1) and theirs["counts"] == counts(Bkg=1, Loc=2)
    assert out["AP50"] + out["dAP"]["Loc"] == pytest.approx((51 + 50 * 2 / 3) / 101)  # TP .8, FP .7, TP .5
    assert theirs["AP50"] + theirs["dAP"]["Loc"] == pytest.approx(1.0)  # TP .9, TP .8, FP .7


def test_tidecv_recall_grid_is_not_cocoevals():
    # COCOeval's recall points are np.linspace(0, 1, 101), whose 0.35, 0.41, 0.47, 0.57, 0.69, 0.70, 0.82,
    # 0.83, 0.94 and 0.95 lie a hair above the decimals; tidecv's are i / 100. 7 of 10 cats found, then an
    # FP, then the 8th: at recall exactly .7 tidecv takes precision 1, COCOeval (and fcoslab) 8/9.
    boxes = [(1, CAT, [20 * k, 0, 10, 10]) for k in range(10)]
    results = [det(1, CAT, box, 1 - k / 20) for k, (_, _, box) in enumerate(boxes[:7])]
    results += [det(1, CAT, FAR, .6), det(1, CAT, boxes[7][2], .59)]
    gt = coco_gt(boxes, images=(1,))
    out, theirs = error_breakdown(gt, results), tidecv_breakdown(gt, results)
    assert out["AP50"] == pytest.approx(coco_ap50(gt, results), abs=1e-12) == pytest.approx((70 + 11 * 8 / 9) / 101)
    assert theirs["AP50"] == pytest.approx((71 + 10 * 8 / 9) / 101)


def test_tidecv_scores_a_class_without_ground_truth_as_zero():
    # a dog detection where no dog exists: COCOeval leaves the dog class out of the mean (it has no ground
    # truth); tidecv averages an AP of 0 for it, so its base is half of COCO's here, and fixing Bkg
    # (which removes the dog detection, hence the class) doubles it
    gt = coco_gt([(1, CAT, A)])
    results = [det(1, CAT, A, .9), det(1, DOG, FAR, .8)]
    out, theirs = error_breakdown(gt, results), tidecv_breakdown(gt, results)
    assert out["AP50"] == pytest.approx(1.0) == coco_ap50(gt, results) and out["dAP"]["Bkg"] == 0.0
    assert theirs["AP50"] == pytest.approx(0.5) and theirs["dAP"]["Bkg"] == pytest.approx(0.5)


def test_tidecv_reorders_tied_scores_after_a_fix():
    # tidecv rebuilds each fixed run with the errors first and the TPs after them, so among equal scores a
    # fix moves FPs ahead of TPs; here fixing Missed then lowers its AP, and its clamp at 0 hides it.
    # fcoslab keeps COCOeval's order (score, image id, input order) in every run.
    gt = coco_gt([(1, CAT, A), (1, CAT, B)])
    results = [det(1, CAT, A, .9), det(1, CAT, FAR, .9)]  # a TP and a Bkg error of the same score
    out, theirs = error_breakdown(gt, results), tidecv_breakdown(gt, results)
    assert out["AP50"] == pytest.approx(theirs["AP50"]) == pytest.approx(coco_ap50(gt, results))
    assert out["dAP"]["Missed"] == pytest.approx(1 - 51 / 101) and theirs["dAP"]["Missed"] == 0.0


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
