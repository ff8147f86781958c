"""Why AP is low: a class confusion matrix and the TIDE error breakdown (Bolya et al., ECCV 2020, "TIDE: A
General Toolbox for Identifying Object Detection Errors"), from a COCO ground-truth dict and a COCO results
list. numpy only.

The breakdown stands on COCOeval's matching and 101-point AP at one IoU (:mod:`fcoslab.evaluation.coco_ap`), so its
base AP50 is COCO's AP50, and it follows the TIDE authors' package (``tidecv`` 1.0.1) in its error types,
thresholds and oracles: the counts are tidecv's and every dAP is within 0.01 AP points of tidecv's
(tests/evaluation/test_error_analysis.py, with tidecv as the oracle) wherever tidecv computes COCO's AP. Where it
does not (its detection cap, crowd boxes, classes without ground truth, its recall grid, tied scores),
fcoslab keeps COCOeval's rule: docs/error_analysis.md. The confusion matrix keeps the VOC devkit's matching (:mod:`fcoslab.evaluation.voc`).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from .coco_ap import MAX_DETS, coco_class_aps, coco_iou, coco_match, coco_positives
from .voc import (FP, IGNORED, TP, Detections, GroundTruth, group_rows, iou_matrix, json_float,
                          mean_ignoring_nan, read_coco, score_order)

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Missed")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
CLS, LOC, BOTH, DUPE, BKG = range(5)  # codes of the false-positive types in ERROR_TYPES


def confusion_matrix(gt: dict, results: list[dict], iou: float = 0.5, score: float = 0.3,
                     image_ids: Optional[Iterable[int]] = None) -> tuple[np.ndarray, list[str]]:
    """Counts of ground-truth class (rows) against predicted class (columns), K categories sorted by id.

    Matching, per image and regardless of class: the detections with score >= ``score``, in descending
    score (ties keep the input order), each take the box of highest IoU among the image's unmatched boxes
    and its difficult boxes (which never become matched). IoU >= ``iou`` with a normal box -> counted at
    (box class, detection class) and the box is matched; with a difficult box -> ignored; else the
    detection is counted in the last row (background: a detection of nothing). Unmatched normal boxes
    are counted in the last column (background: missed); unmatched difficult boxes are not counted.

    Returns:
        (int64 (K + 1, K + 1) matrix with ``[K, K] == 0``, the K category names then ``"background"``).
    """
    truth, dets = read_coco(gt, results, image_ids)
    k = len(truth.cat_ids)
    index = {cat: i for i, cat in enumerate(truth.cat_ids)}
    matrix = np.zeros((k + 1, k + 1), np.int64)
    kept = np.flatnonzero(dets.scores >= score)
    kept = kept[score_order(dets.scores[kept])]  # (n,) by descending score
    gt_groups = group_rows(truth.image_ids)
    det_groups = {key: kept[ranks] for key, ranks in group_rows(dets.image_ids[kept]).items()}
    for image in set(gt_groups) | set(det_groups):
        boxes = gt_groups.get(image, np.zeros(0, np.int64))  # (m,)
        rows = det_groups.get(image, np.zeros(0, np.int64))  # (n,)
        overlaps = iou_matrix(dets.boxes[rows], truth.boxes[boxes])  # (n, m)
        free = np.ones(len(boxes), bool)
        for det, overlap in zip(rows, overlaps):
            candidates = np.where(free, overlap, -1.0)  # (m,)
            j = int(candidates.argmax()) if len(boxes) else -1
            if j < 0 or candidates[j] < iou:
                matrix[k, index[dets.labels[det]]] += 1
            elif not truth.difficult[boxes[j]]:
                free[j] = False
                matrix[index[truth.labels[boxes[j]]], index[dets.labels[det]]] += 1
        for j in np.flatnonzero(free & ~truth.difficult[boxes]):
            matrix[index[truth.labels[boxes[j]]], k] += 1
    return matrix, list(truth.names) + ["background"]


def classify_false_positives(truth: GroundTruth, dets: Detections, outcome: np.ndarray, gt_index: np.ndarray,
                             iou_fg: float, iou_bg: float) -> tuple[np.ndarray, np.ndarray]:
    """The TIDE type of each false positive of ``outcome`` (int8 (N,), from :func:`fcoslab.evaluation.coco_ap.coco_match`
    at ``iou_fg``; ``gt_index`` (N,) its matched boxes). Ignored and dropped detections get no type.

    Against the normal (not crowd) boxes of the detection's image, with "same" the max IoU with those of
    its class, "other" the max with those of other classes, "used" the max with those of its class that a
    TP matched, checked in tidecv's order: no box in the image -> Bkg; iou_bg <= same <= iou_fg -> Loc
    (target: that box, matched or not); other >= iou_fg -> Cls (target: that box); used >= iou_fg -> Dupe
    (target: that box); the max IoU with every box <= iou_bg -> Bkg; else Both.

    Returns:
        kind: int8 (N,) a code of :data:`CLS`, :data:`LOC`, :data:`BOTH`, :data:`DUPE`, :data:`BKG`,
            -1 for detections that are not false positives.
        target: int64 (N,) row in ``truth`` of the box a Loc, Cls or Dupe error points at, else -1.
    """
    kind = np.full(len(outcome), -1, np.int8)
    target = np.full(len(outcome), -1, np.int64)
    normal = np.flatnonzero(~truth.crowd)
    used = np.zeros(len(truth.labels), bool)
    used[gt_index[outcome == TP]] = True
    gt_groups = group_rows(truth.image_ids[normal])
    false_pos = np.flatnonzero(outcome == FP)
    for (image,), ranks in group_rows(dets.image_ids[false_pos]).items():
        rows = false_pos[ranks]  # (n,)
        boxes = normal[gt_groups.get((image,), np.zeros(0, np.int64))]  # (m,)
        if len(boxes) == 0:
            kind[rows] = BKG
            continue
        iou = coco_iou(dets.xywh[rows], truth.xywh[boxes], np.zeros(len(boxes), bool))  # (n, m)
        same_class = dets.labels[rows][:, None] == truth.labels[boxes][None, :]  # (n, m)
        same, other = np.where(same_class, iou, -1.0), np.where(same_class, -1.0, iou)  # (n, m)
        on_used = np.where(same_class & used[boxes][None, :], iou, -1.0)  # (n, m)
        s, o, u = same.max(axis=1), other.max(axis=1), on_used.max(axis=1)  # (n,)
        loc = (s >= iou_bg) & (s <= iou_fg)
        cls = ~loc & (o >= iou_fg)
        dupe = ~loc & ~cls & (u >= iou_fg)
        bkg = ~loc & ~cls & ~dupe & (iou.max(axis=1) <= iou_bg)
        kind[rows] = np.select([loc, cls, dupe, bkg], [LOC, CLS, DUPE, BKG], BOTH)
        pointed = np.select([loc, cls, dupe], [same.argmax(axis=1), other.argmax(axis=1), on_used.argmax(axis=1)], -1)
        target[rows] = np.where(pointed >= 0, boxes[pointed], -1)
    return kind, target


def _fixes(truth: GroundTruth, dets: Detections, outcome, gt_index, kind, target):
    """tidecv's bookkeeping (its BestGTMatch): of the Cls and Loc errors pointing at a box no TP matched,
    the highest-scored (the first in input order on a tie) will become its TP (bool (N,)); the normal boxes
    that no TP matched and no such error points at are Missed (bool (M,))."""
    matched = np.zeros(len(truth.labels), bool)
    matched[gt_index[outcome == TP]] = True
    fixer = np.zeros(len(outcome), bool)
    claimed = np.zeros(len(truth.labels), bool)
    for det in score_order(dets.scores):
        if kind[det] in (CLS, LOC) and not matched[target[det]] and not claimed[target[det]]:
            fixer[det] = claimed[target[det]] = True
    return fixer, ~truth.crowd & ~matched & ~claimed


def _ap50_after_fixing(types: set[str], truth: GroundTruth, dets: Detections, outcome, kind, target, fixer,
                       missed) -> float:
    """Mean COCO AP50 after tidecv's oracle for each of ``types``: Cls/Loc errors that are the fixer of
    their box become its TP (in the box's class), the other Cls/Loc errors and all Both, Dupe and Bkg
    errors are suppressed, and Missed boxes leave the positives."""
    outcome, labels = outcome.copy(), dets.labels.copy()
    for name in types - {"Missed"}:
        rows = kind == ERROR_TYPES.index(name)
        outcome[rows] = IGNORED
        if name in ("Cls", "Loc"):
            outcome[rows & fixer] = TP
            labels[rows & fixer] = truth.labels[target[rows & fixer]]
    num_pos = coco_positives(truth)
    if "Missed" in types:
        for cat in truth.labels[missed].tolist():
            num_pos[cat] -= 1
    return _mean_ap50(truth, dets, labels, outcome, num_pos)


def _mean_ap50(truth: GroundTruth, dets: Detections, labels: np.ndarray, outcome: np.ndarray,
               num_pos: dict[int, int]) -> float:
    """The mean COCO AP over the classes with normal boxes in ``truth`` (COCO's classes, fixed for every
    oracle), with ``labels`` and ``outcome`` (N,) and ``num_pos`` after a fix. A class that the fix left
    without positives scores 0 while it keeps a TP or FP, and leaves the mean when it keeps none (tidecv's
    rule, whose AP of a class without positives is 0 unless it has no detection either)."""
    aps = coco_class_aps(dets, labels, outcome, num_pos)
    scored = labels[(outcome == TP) | (outcome == FP)]
    values = [aps[cat] if num_pos[cat] > 0 else (0.0 if np.any(scored == cat) else float("nan"))
              for cat, n in coco_positives(truth).items() if n > 0]
    return mean_ignoring_nan(values)


def _special_errors(truth: GroundTruth, dets: Detections, outcome, gt_index, base: float) -> dict:
    """tidecv's two summaries: FalsePos = AP50 with every false positive gone (tidecv scores them 0 and the
    TPs 1: the same AP) minus the base; FalseNeg = AP50 with the positives cut to the TPs (every box no TP
    matched leaves them) minus the base."""
    no_fp = np.where(outcome == FP, IGNORED, outcome).astype(np.int8)
    false_pos = _mean_ap50(truth, dets, dets.labels, no_fp, coco_positives(truth))
    found = {cat: 0 for cat in truth.cat_ids}
    for cat in truth.labels[gt_index[outcome == TP]].tolist():
        found[cat] += 1
    false_neg = _mean_ap50(truth, dets, dets.labels, outcome, found)
    return {"FalsePos": json_float(false_pos - base), "FalseNeg": json_float(false_neg - base)}


def error_breakdown(gt: dict, results: list[dict], iou_fg: float = 0.5, iou_bg: float = 0.1,
                    image_ids: Optional[Iterable[int]] = None, max_dets: int = MAX_DETS) -> dict:
    """TIDE's six error types, what fixing each alone would add to AP50, and its two summaries.

    Base: COCOeval's matching at ``iou_fg`` with its ``max_dets`` per image and category
    (:func:`fcoslab.evaluation.coco_ap.coco_match`), AP50 = COCO's 101-point AP50 (the mean over the classes with
    normal boxes). Each false positive gets one type (:func:`classify_false_positives`, tidecv's
    definitions and order: Cls = IoU >= iou_fg with a box of another class, Loc = iou_bg <= IoU <= iou_fg
    with a box of its class, Dupe = IoU >= iou_fg with a box of its class a TP matched, Bkg = IoU <= iou_bg
    with every box, Both = the rest). Missed = normal boxes neither matched nor pointed at by a Cls or Loc
    error (tidecv's "usable" boxes).

    Oracles, as tidecv's, each applied alone to the base: of the Cls and Loc errors pointing at a box no
    TP matched, the highest-scored one (of either type) is its fixer; fixing Cls relabels a fixer Cls error
    to its box's class as a TP, fixing Loc makes a fixer Loc error a TP of its box, and every other error
    of the fixed type is suppressed; Both, Dupe and Bkg: suppressed; Missed: the missed boxes leave the
    positives. The mean stays over the base's classes; one that a fix leaves without positives scores 0
    while it keeps detections and leaves the mean when it keeps none (:func:`_mean_ap50`, tidecv's rule).
    dAP = AP50 after the fix minus the base; it is never negative here, so tidecv's clamp at 0 is not
    needed. Special: ``FalsePos``
    (perfect precision at the same recall), ``FalseNeg`` (perfect recall at the same precision).

    Where this knowingly differs from tidecv (ignored detections, the 100-detection cap, classes without
    ground truth, COCO's recall thresholds, score ties): docs/error_analysis.md.

    Returns a JSON-able dict: ``AP50`` (base; None without ground truth), ``AP50_all_fixed`` (all six
    fixes at once: 1.0 whenever some class keeps ground truth), ``counts`` and ``dAP`` (dicts keyed by
    :data:`ERROR_TYPES`; counts are detections, or boxes for Missed), ``special`` (keyed by
    :data:`SPECIAL_ERRORS`), ``iou_fg``, ``iou_bg``, ``max_dets``. AP values are fractions (tidecv prints
    points: 100 times these).
    """
    truth, dets = read_coco(gt, results, image_ids)
    outcome, gt_index = coco_match(truth, dets, iou_fg, max_dets)
    kind, target = classify_false_positives(truth, dets, outcome, gt_index, iou_fg, iou_bg)
    fixer, missed = _fixes(truth, dets, outcome, gt_index, kind, target)

    def ap50(types: set[str]) -> float:
        return _ap50_after_fixing(types, truth, dets, outcome, kind, target, fixer, missed)

    base = ap50(set())
    counts = {name: int(np.sum(kind == code)) for code, name in enumerate(ERROR_TYPES[:5])}
    counts["Missed"] = int(missed.sum())
    return {"AP50": json_float(base), "AP50_all_fixed": json_float(ap50(set(ERROR_TYPES))), "counts": counts,
            "dAP": {name: json_float(ap50({name}) - base) for name in ERROR_TYPES},
            "special": _special_errors(truth, dets, outcome, gt_index, base),
            "iou_fg": float(iou_fg), "iou_bg": float(iou_bg), "max_dets": int(max_dets)}
