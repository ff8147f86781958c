"""Why AP is low: a class confusion matrix and the TIDE error breakdown (Bolya et al., ECCV 2020, "TIDE: A
General Toolbox for Identifying Object Detection Errors"), from a COCO ground-truth dict and a COCO results
list, on top of the VOC matching and AP of :mod:`fcoslab.voc_metrics`. numpy only.

Difficult ground truth (``iscrowd`` or ``difficult``) plays the part of TIDE's ignore regions: detections
that match one are ignored, and it is never a target of an error nor counted as missed.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from .voc_metrics import (FP, IGNORED, TP, Detections, GroundTruth, class_average_precisions, group_rows,
                          iou_matrix, json_float, match_detections, mean_ignoring_nan, read_coco, score_order)

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Missed")
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


def classify_false_positives(truth: GroundTruth, dets: Detections, outcome: np.ndarray, iou_fg: float,
                             iou_bg: float) -> tuple[np.ndarray, np.ndarray]:
    """The TIDE type of each false positive of ``outcome`` (int8 (N,), from the matching at ``iou_fg``).

    With "same" the max IoU with the image's normal boxes of the detection's class and "other" the max
    with its normal boxes of other classes, checked in TIDE's order: Loc if iou_bg <= same < iou_fg
    (target: that box); else Cls if other >= iou_fg (target: that box); else Dupe if same >= iou_fg
    (target: that box, already matched by a higher-scored detection); else Bkg if same and other are
    < iou_bg; else Both (then same < iou_bg <= other < iou_fg).

    Returns:
        kind: int8 (N,) a code of :data:`CLS`, :data:`LOC`, :data:`BOTH`, :data:`DUPE`, :data:`BKG`,
            -1 for detections that are not false positives.
        target: int64 (N,) row in ``truth`` of the box a Loc, Cls or Dupe error points at, else -1.
    """
    kind = np.full(len(outcome), -1, np.int8)
    target = np.full(len(outcome), -1, np.int64)
    normal = np.flatnonzero(~truth.difficult)
    gt_groups = group_rows(truth.image_ids[normal])
    false_pos = np.flatnonzero(outcome == FP)
    for (image,), ranks in group_rows(dets.image_ids[false_pos]).items():
        rows = false_pos[ranks]  # (n,)
        boxes = normal[gt_groups.get((image,), np.zeros(0, np.int64))]  # (m,)
        if len(boxes) == 0:
            kind[rows] = BKG
            continue
        overlaps = iou_matrix(dets.boxes[rows], truth.boxes[boxes])  # (n, m)
        same_class = dets.labels[rows][:, None] == truth.labels[boxes][None, :]  # (n, m)
        same, other = np.where(same_class, overlaps, -1.0), np.where(same_class, -1.0, overlaps)
        j_same, j_other = same.argmax(axis=1), other.argmax(axis=1)  # (n,)
        s, o = same.max(axis=1), other.max(axis=1)  # (n,)
        loc = (s >= iou_bg) & (s < iou_fg)
        cls = ~loc & (o >= iou_fg)
        dupe = ~loc & ~cls & (s >= iou_fg)
        bkg = ~loc & ~cls & ~dupe & (np.maximum(s, o) < iou_bg)
        kind[rows] = np.select([loc, cls, dupe, bkg], [LOC, CLS, DUPE, BKG], BOTH)
        target[rows] = np.where(loc | dupe, boxes[j_same], np.where(cls, boxes[j_other], -1))
    return kind, target


def _fixes(truth: GroundTruth, dets: Detections, outcome, gt_index, kind, target):
    """TIDE's bookkeeping: which Cls/Loc error would become the TP of an unmatched box (the highest-scored
    of those pointing at it: bool (N,)), and which normal boxes are missed (bool (M,))."""
    matched = np.zeros(len(truth.labels), bool)
    matched[gt_index[outcome == TP]] = True
    fixer = np.zeros(len(outcome), bool)
    claimed = np.zeros(len(truth.labels), bool)
    for det in score_order(dets.scores):
        if kind[det] in (CLS, LOC) and not matched[target[det]] and not claimed[target[det]]:
            fixer[det] = claimed[target[det]] = True
    return fixer, ~truth.difficult & ~matched & ~claimed


def _ap50_after_fixing(types: set[str], truth: GroundTruth, dets: Detections, outcome, kind, target, fixer,
                       missed) -> float:
    """Mean all-point AP after TIDE's oracle for each of ``types``: Cls/Loc errors that are the fixer of
    their box become its TP (in the box's class, on the box), the other Cls/Loc errors and all Both, Dupe
    and Bkg errors are suppressed, and Missed boxes leave the positives."""
    outcome, labels = outcome.copy(), dets.labels.copy()
    for name in types - {"Missed"}:
        rows = kind == ERROR_TYPES.index(name)
        outcome[rows] = IGNORED
        if name in ("Cls", "Loc"):
            outcome[rows & fixer] = TP
            labels[rows & fixer] = truth.labels[target[rows & fixer]]
    num_pos = truth.num_positives()
    if "Missed" in types:
        for cat in truth.labels[missed].tolist():
            num_pos[cat] -= 1
    return mean_ignoring_nan(class_average_precisions(labels, dets.scores, outcome, num_pos).values())


def error_breakdown(gt: dict, results: list[dict], iou_fg: float = 0.5, iou_bg: float = 0.1,
                    image_ids: Optional[Iterable[int]] = None) -> dict:
    """TIDE's six error types and what fixing each alone would add to AP50.

    Base: the VOC matching at ``iou_fg`` (:func:`fcoslab.voc_metrics.match_detections`), AP50 = mean
    all-point AP over the classes with ground truth. Each false positive gets one type
    (:func:`classify_false_positives`; TIDE's definitions: Cls = IoU >= iou_fg with a box of another
    class, Loc = iou_bg <= IoU < iou_fg with a box of its class, Both = iou_bg <= IoU < iou_fg with a box of
    another class only, Dupe = IoU >= iou_fg with a box of its class already matched by a higher-scored
    detection, Bkg = IoU < iou_bg with every box). Missed = normal boxes neither matched nor pointed at by
    a Cls or Loc error whose box is unmatched (TIDE's "usable" boxes; Both, Dupe and Bkg point at none).

    Oracles, as in TIDE's code, each applied alone to the base: of the Cls and Loc errors pointing at an
    unmatched box, the highest-scored one (of either type) is its fixer; fixing Cls relabels a fixer
    Cls error to its box's class as a TP, fixing Loc moves a fixer Loc error onto its box as a TP, and
    every other error of the fixed type is suppressed (dropped); Both, Dupe and Bkg: suppressed; Missed:
    the missed boxes leave the positives (a class left without any leaves the mean). dAP = AP50 after
    the fix minus the base; it is never negative here, so TIDE's clamp at 0 is not needed.

    Simplified against TIDE: VOC devkit matching (a detection whose max-IoU box of its class is already
    matched is a duplicate even when another unmatched box overlaps it >= iou_fg; TIDE/COCO take the best
    unmatched box), all-point AP at one IoU instead of COCO's 101-point AP, no limit of 100 detections per
    image, half-open thresholds (TIDE's Loc test is ``<= iou_fg``, its Bkg test ``<= iou_bg``), difficult
    boxes are not error targets, and no "FalsePos"/"FalseNeg" special errors.

    Returns a JSON-able dict: ``AP50`` (base; None without ground truth), ``AP50_all_fixed`` (all six
    fixes at once: 1.0 whenever some class keeps ground truth), ``counts`` and ``dAP`` (dicts keyed by
    :data:`ERROR_TYPES`; counts are detections, or boxes for Missed), ``iou_fg``, ``iou_bg``.
    """
    truth, dets = read_coco(gt, results, image_ids)
    outcome, gt_index = match_detections(truth, dets, iou_fg)
    kind, target = classify_false_positives(truth, dets, outcome, iou_fg, iou_bg)
    fixer, missed = _fixes(truth, dets, outcome, gt_index, kind, target)

    def ap50(types: set[str]) -> float:
        return _ap50_after_fixing(types, truth, dets, outcome, kind, target, fixer, missed)

    base = ap50(set())
    counts = {name: int(np.sum(kind == code)) for code, name in enumerate(ERROR_TYPES[:5])}
    counts["Missed"] = int(missed.sum())
    return {"AP50": json_float(base), "AP50_all_fixed": json_float(ap50(set(ERROR_TYPES))), "counts": counts,
            "dAP": {name: json_float(ap50({name}) - base) for name in ERROR_TYPES},
            "iou_fg": float(iou_fg), "iou_bg": float(iou_bg)}
