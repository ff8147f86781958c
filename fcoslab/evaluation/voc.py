"""Pascal VOC detection AP from the inputs of the COCO evaluation: a COCO ground-truth dict and a COCO
results list. numpy only; the error analysis (:mod:`fcoslab.evaluation.errors`) reuses the matching and AP.

Rules, as in the VOC devkit (``VOCevaldet.m``), with continuous boxes (IoU without the devkit's +1):

* **Difficult** ground truth: an annotation with ``iscrowd`` or ``difficult`` truthy. It is not counted
  in the positives, and a detection whose max-IoU box is difficult is ignored (neither TP nor FP).
* **Matching**, per class and image: detections in descending score (ties keep the input order). Each
  takes the box of its class and image with the highest IoU over *all* of them, matched or not (ties:
  the first annotation). If that IoU >= the threshold: a difficult box -> ignored; a box not yet matched
  -> TP, and the box is now matched; a box already matched -> FP (duplicate). Below the threshold -> FP.
  (COCOeval differs: it takes the best *unmatched* box, so a duplicate can still match a second object.)
* **AP** per class: ``"all"`` = area under the precision envelope at every recall (VOC2010+),
  ``"11pt"`` = the devkit's VOC2007 rule, the sum over its 11 recall points t of max(precision at
  recall >= t) / 11, with the points of the Python devkit ports (``np.arange(0, 1.1, 0.1)``,
  :data:`VOC07_RECALLS`). A class without (non-difficult) ground truth has AP nan and is left out of every
  mean.

Arrays: M ground-truth boxes and N detections of the evaluated images, K categories sorted by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from ..boxes import xywh_to_xyxy
from ..errors import FcoslabError

TP, FP, IGNORED = 1, 0, -1  # detection outcomes of voc_match
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2).tolist())  # 0.50:0.95, exact decimals
# The 11 recall points of VOC2007's AP as the Python devkit ports take them (py-faster-rcnn's voc_eval.py,
# ``for t in np.arange(0., 1.1, 0.1)``): 0.3, 0.6 and 0.7 are 0.30000000000000004, 0.6000000000000001 and
# 0.7000000000000001, so a recall of exactly 3/10, 6/10 or 7/10 does not reach its point.
VOC07_RECALLS = tuple(np.arange(0.0, 1.1, 0.1).tolist())


@dataclass(frozen=True)
class GroundTruth:
    """The ground truth of the evaluated images and the categories, sorted by id."""

    boxes: np.ndarray  # float64 (M, 4) xyxy pixels
    labels: np.ndarray  # int64 (M,) category ids
    image_ids: np.ndarray  # int64 (M,)
    difficult: np.ndarray  # bool (M,): iscrowd or difficult
    cat_ids: list[int]  # (K,)
    names: list[str]  # (K,)
    xywh: np.ndarray  # float64 (M, 4) the boxes as the file writes them (COCOeval's IoU reads these)
    crowd: np.ndarray  # bool (M,): iscrowd alone (COCOeval's ignore flag; it reads no 'difficult')

    def num_positives(self) -> dict[int, int]:
        """Category id -> number of non-difficult boxes (every category, zeros included)."""
        counts = dict.fromkeys(self.cat_ids, 0)
        for label in self.labels[~self.difficult].tolist():
            counts[label] += 1
        return counts


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # float64 (N, 4) xyxy pixels
    labels: np.ndarray  # int64 (N,) category ids
    image_ids: np.ndarray  # int64 (N,)
    scores: np.ndarray  # float64 (N,)
    xywh: np.ndarray  # float64 (N, 4) the boxes as the results write them


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of a (N, 4) and b (M, 4) xyxy boxes -> float64 (N, M); 0 where the union is empty."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def group_rows(*columns: np.ndarray) -> dict[tuple, np.ndarray]:
    """Row indices (int64, in row order) of each distinct tuple of values of the equally long columns."""
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*(c.tolist() for c in columns))):
        groups.setdefault(key, []).append(i)
    return {key: np.array(rows, dtype=np.int64) for key, rows in groups.items()}


def score_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting ``scores`` (N,) descending; equal scores keep their input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def read_coco(gt: dict, results: list[dict], image_ids: Optional[Iterable[int]] = None):
    """A COCO ground-truth dict and results list -> (:class:`GroundTruth`, :class:`Detections`).

    ``image_ids`` restricts both to those images (detections elsewhere are dropped, as in COCOeval);
    without it every image of ``gt`` counts. Raises :class:`FcoslabError` for an image id not in
    ``gt["images"]`` (in ``image_ids`` or in a result). Results of a category the ground truth does not
    have are not scored, as COCOeval does (a 91-way COCO model on a dataset of some of its classes).
    """
    known = {im["id"] for im in gt["images"]}
    selected = known if image_ids is None else set(image_ids)
    if selected - known:
        raise FcoslabError(f"image_ids {sorted(selected - known)[:10]} are not in the ground truth's 'images'")
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    cat_ids = [c["id"] for c in cats]
    cat_set = set(cat_ids)
    anns = [a for a in gt["annotations"] if a["image_id"] in selected]
    crowd = np.array([bool(a.get("iscrowd")) for a in anns], bool)
    truth = GroundTruth(xywh_to_xyxy([a["bbox"] for a in anns]), np.array([a["category_id"] for a in anns], np.int64),
                        np.array([a["image_id"] for a in anns], np.int64),
                        crowd | np.array([bool(a.get("difficult")) for a in anns], bool),
                        cat_ids, [c["name"] for c in cats], _xywh([a["bbox"] for a in anns]), crowd)
    for i, r in enumerate(results):
        if r["image_id"] not in known:
            raise FcoslabError(f"results[{i}] has image_id {r['image_id']!r}, which is not in the ground truth's 'images'")
    kept = [r for r in results if r["image_id"] in selected and r["category_id"] in cat_set]
    dets = Detections(xywh_to_xyxy([r["bbox"] for r in kept]), np.array([r["category_id"] for r in kept], np.int64),
                      np.array([r["image_id"] for r in kept], np.int64),
                      np.array([r["score"] for r in kept], np.float64), _xywh([r["bbox"] for r in kept]))
    return truth, dets


def _xywh(boxes) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes as float64 (N, 4), unchanged."""
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def voc_match(truth: GroundTruth, dets: Detections, iou_threshold: float = 0.5):
    """The devkit matching (module docstring) of every detection with the ground truth of its class.

    Returns:
        outcome: int8 (N,) per detection in input order, :data:`TP`, :data:`FP` or :data:`IGNORED`.
        gt_index: int64 (N,) row in ``truth`` of the detection's max-IoU box when that IoU >= the
            threshold (the box it matched, the box it duplicates, or the difficult box), else -1.
    """
    outcome = np.full(len(dets.scores), FP, np.int8)
    gt_index = np.full(len(dets.scores), -1, np.int64)
    order = score_order(dets.scores)
    gt_groups = group_rows(truth.image_ids, truth.labels)
    for key, ranks in group_rows(dets.image_ids[order], dets.labels[order]).items():
        rows, boxes = order[ranks], gt_groups.get(key)  # detections (n,) by score; boxes (m,)
        if boxes is None:
            continue
        iou = iou_matrix(dets.boxes[rows], truth.boxes[boxes])  # (n, m)
        best = iou.argmax(axis=1)  # (n,)
        taken = np.zeros(len(boxes), bool)
        for row, j, overlap in zip(rows, best, iou[np.arange(len(rows)), best]):
            if overlap < iou_threshold:
                continue
            gt_index[row] = boxes[j]
            if truth.difficult[boxes[j]]:
                outcome[row] = IGNORED
            elif not taken[j]:
                outcome[row], taken[j] = TP, True
    return outcome, gt_index


def split_by_class(labels: np.ndarray, scores: np.ndarray, outcome: np.ndarray,
                   num_pos: dict[int, int]) -> dict[int, dict]:
    """Per category id of ``num_pos``: ``{"scores", "tp", "fp", "num_pos"}`` with the scores float64 (n,)
    descending (ties in input order), ``tp`` and ``fp`` bool (n,), of the class's non-ignored detections."""
    out = {}
    for cat, n in num_pos.items():
        rows = np.flatnonzero((labels == cat) & (outcome != IGNORED))
        rows = rows[score_order(scores[rows])]
        out[cat] = {"scores": scores[rows], "tp": outcome[rows] == TP, "fp": outcome[rows] == FP, "num_pos": n}
    return out


def class_tp_fp(truth: GroundTruth, dets: Detections, iou_threshold: float = 0.5) -> dict[int, dict]:
    """Per category id, the score-sorted TP/FP arrays and positives at one IoU (see :func:`split_by_class`)."""
    outcome, _ = voc_match(truth, dets, iou_threshold)
    return split_by_class(dets.labels, dets.scores, outcome, truth.num_positives())


def precision_recall(tp: np.ndarray, fp: np.ndarray, num_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision (float64 (n,)) after each of n score-sorted detections (bool (n,) tp, fp)."""
    tp_sum, fp_sum = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = tp_sum / num_pos if num_pos > 0 else np.full(len(tp_sum), np.nan)
    return recall, tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).tiny)


def average_precision(recall: np.ndarray, precision: np.ndarray, rule: str = "all") -> float:
    """AP of one class from recall and precision (float (n,), in score order; n = 0 gives 0).

    ``rule="all"``: sum over recall steps of the step width times the precision envelope (the max
    precision at that recall or higher), VOC2010+. ``rule="11pt"``: VOC2007's rule as the devkit's Python
    ports compute it (py-faster-rcnn's ``voc_eval.py``): ``ap += max(precision[recall >= t]) / 11`` (0 where
    no recall reaches t) for t in ``np.arange(0., 1.1, 0.1)`` (:data:`VOC07_RECALLS`), whose 0.3, 0.6 and
    0.7 lie a hair above the decimals, so a recall of exactly 0.3 does not count for the point 0.3.
    The MATLAB devkit (``VOCevaldet.m``, ``for t=0:0.1:1``) shares 0.30000000000000004; MATLAB's colon
    builds its upper half from the end point, so its 0.6 and 0.7 may be the plain decimals (not checked:
    no MATLAB here). The 11 values are summed before dividing, so perfect detections give exactly 1.0
    (the devkit's running sum of p / 11 gives 1.0000000000000002); otherwise the two agree within 1e-15
    (tests/evaluation/test_voc_metrics.py).
    """
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if rule == "11pt":
        points = [precision[recall >= t].max(initial=0.0) for t in VOC07_RECALLS]
        return float(np.sum(points) / 11.0)
    if rule != "all":
        raise FcoslabError(f"average_precision rule {rule!r} is unknown; use 'all' or '11pt'")
    r = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    return float(np.sum(np.diff(r) * envelope[1:]))


def class_average_precisions(labels: np.ndarray, scores: np.ndarray, outcome: np.ndarray,
                             num_pos: dict[int, int], rule: str = "all") -> dict[int, float]:
    """Category id -> AP (nan without positives) from per-detection labels, scores and outcomes (N,)."""
    aps = {}
    for cat, c in split_by_class(labels, scores, outcome, num_pos).items():
        aps[cat] = (average_precision(*precision_recall(c["tp"], c["fp"], c["num_pos"]), rule)
                    if c["num_pos"] > 0 else float("nan"))
    return aps


def mean_ignoring_nan(values: Iterable[float]) -> float:
    """Mean of the non-nan values; nan when there are none."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def json_float(value: float) -> Optional[float]:
    """A float for JSON: nan -> None."""
    return None if np.isnan(value) else float(value)


def voc_evaluate(gt: dict, results: list[dict], image_ids: Optional[Iterable[int]] = None,
                 iou_thresholds: Iterable[float] = IOU_THRESHOLDS) -> dict:
    """Pascal VOC AP of COCO ``results`` (dicts with image_id, category_id, bbox xywh, score) against a
    COCO ground-truth dict (annotations may carry ``difficult``), optionally on ``image_ids`` only.

    Returns a JSON-able dict:
        ``mAP50`` (all-point, IoU 0.5), ``mAP50_11pt`` (11-point, IoU 0.5), ``mAP75`` (all-point, IoU 0.75),
        ``mAP`` (the mean over ``iou_thresholds``, default 0.50:0.95, of the all-point mAP),
        ``iou_thresholds`` (list), ``per_class``: category name (sorted by id) -> ``{"AP50", "AP50_11pt",
        "AP75", "AP"}``. Means are over the classes with ground truth; a class without any has None
        (nan) in ``per_class``, and a mean over no class is None.
    """
    truth, dets = read_coco(gt, results, image_ids)
    thresholds = [float(t) for t in iou_thresholds]
    num_pos = truth.num_positives()
    outcomes = {t: voc_match(truth, dets, t)[0] for t in {0.5, 0.75, *thresholds}}

    def aps(t: float, rule: str = "all") -> dict[int, float]:
        return class_average_precisions(dets.labels, dets.scores, outcomes[t], num_pos, rule)

    table = {"AP50": aps(0.5), "AP50_11pt": aps(0.5, "11pt"), "AP75": aps(0.75)}
    per_threshold = [aps(t) for t in thresholds]
    table["AP"] = {c: float(np.mean([a[c] for a in per_threshold])) if thresholds else float("nan")
                   for c in truth.cat_ids}
    out = {"mAP50": table["AP50"], "mAP50_11pt": table["AP50_11pt"], "mAP75": table["AP75"], "mAP": table["AP"]}
    out = {key: json_float(mean_ignoring_nan(v.values())) for key, v in out.items()}
    out["iou_thresholds"] = thresholds
    out["per_class"] = {name: {key: json_float(v[cat]) for key, v in table.items()}
                        for cat, name in zip(truth.cat_ids, truth.names)}
    return out
