"""COCOeval's AP at one IoU threshold in numpy: pycocotools' box IoU, its matching and its 101-point AP, on
the :class:`~fcoslab.evaluation.voc.GroundTruth` and :class:`~fcoslab.evaluation.voc.Detections` of
:func:`fcoslab.evaluation.voc.read_coco`. The TIDE error breakdown (:mod:`fcoslab.evaluation.errors`) stands on
it, so that its base AP50 is COCO's AP50.

Rules, as ``pycocotools.cocoeval.COCOeval`` (``computeIoU``, ``evaluateImg``, ``accumulate``) at area "all":

* **IoU** from the xywh boxes as written: intersection ``min(x + w) - max(x)`` times the same in y (0 when
  either is <= 0), union ``w1 * h1 + w2 * h2 - intersection``; against a **crowd** box (``iscrowd``) the
  union is the detection's own area. ``difficult`` is not read (COCOeval does not).
* **Matching**, per image and category: detections by descending score (ties: results order), only the
  first ``max_dets`` (100); each takes, among the normal boxes not yet matched with IoU >= t, the one of
  highest IoU (ties: the later annotation, as COCOeval's ``>=`` replaces) -> TP; without one, a crowd box
  with IoU >= t makes it ignored; else FP. The detections past ``max_dets`` are dropped.
* **AP** per category: its kept detections of every image by descending score (ties: smaller image id,
  then results order), cumulative TP and FP counts, recall ``tp / positives``, precision
  ``tp / (tp + fp + np.spacing(1))``, the envelope (max precision at that rank or later), then the mean of
  the envelope at the first rank whose recall reaches each of ``np.linspace(0, 1, 101)`` (0 where none
  does). A category without normal boxes has AP nan and is left out of the mean.

Arrays: M ground-truth boxes, N detections, in the order of ``read_coco``.
"""

from __future__ import annotations

import numpy as np

from .voc import FP, IGNORED, TP, Detections, GroundTruth, group_rows, score_order

DROPPED = -2  # a detection outcome of coco_match: past max_dets in its image and category
COCO_RECALLS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs; 0.35, 0.41, ... lie a hair above the decimals
MAX_DETS = 100


def coco_iou(dets: np.ndarray, boxes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' box IoU (``maskUtils.iou``) of dets (N, 4) and boxes (M, 4), both float64 xywh as
    written, with crowd bool (M,): -> float64 (N, M), the same floats as pycocotools."""
    x1 = np.maximum(dets[:, None, 0], boxes[None, :, 0])  # (N, M)
    y1 = np.maximum(dets[:, None, 1], boxes[None, :, 1])
    w = np.minimum(dets[:, None, 2] + dets[:, None, 0], boxes[None, :, 2] + boxes[None, :, 0]) - x1
    h = np.minimum(dets[:, None, 3] + dets[:, None, 1], boxes[None, :, 3] + boxes[None, :, 1]) - y1
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)  # (N, M)
    det_area = (dets[:, 2] * dets[:, 3])[:, None]  # (N, 1)
    union = np.where(crowd[None, :], det_area, det_area + (boxes[:, 2] * boxes[:, 3])[None, :] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def coco_match(truth: GroundTruth, dets: Detections, iou_threshold: float = 0.5, max_dets: int = MAX_DETS):
    """COCOeval's matching (module docstring) of every detection with the boxes of its image and class.

    Returns:
        outcome: int8 (N,) per detection in input order: :data:`~fcoslab.evaluation.voc.TP`,
            :data:`~fcoslab.evaluation.voc.FP`, :data:`~fcoslab.evaluation.voc.IGNORED` (on a crowd box) or
            :data:`DROPPED` (past ``max_dets`` in its image and category).
        gt_index: int64 (N,) row in ``truth`` of the box a TP matched, else -1.
    """
    outcome = np.full(len(dets.scores), DROPPED, np.int8)
    gt_index = np.full(len(dets.scores), -1, np.int64)
    threshold = min(iou_threshold, 1 - 1e-10)  # as COCOeval, so that IoU 1 matches at a threshold of 1
    order = score_order(dets.scores)
    gt_groups = group_rows(truth.image_ids, truth.labels)
    for key, ranks in group_rows(dets.image_ids[order], dets.labels[order]).items():
        rows = order[ranks][:max_dets]  # (n,) by descending score
        outcome[rows] = FP
        boxes = gt_groups.get(key, np.zeros(0, np.int64))
        normal, crowd = boxes[~truth.crowd[boxes]], boxes[truth.crowd[boxes]]  # (m,), (c,)
        iou = coco_iou(dets.xywh[rows], truth.xywh[normal], np.zeros(len(normal), bool))  # (n, m)
        on_crowd = (coco_iou(dets.xywh[rows], truth.xywh[crowd], np.ones(len(crowd), bool))
                    >= threshold).any(axis=1)  # (n,)
        free = np.ones(len(normal), bool)
        for i, row in enumerate(rows):
            candidates = np.where(free & (iou[i] >= threshold), iou[i], -1.0)  # (m,)
            if len(normal) and candidates.max() >= 0:
                j = len(normal) - 1 - int(np.argmax(candidates[::-1]))  # the last of the best
                outcome[row], gt_index[row], free[j] = TP, normal[j], False
            elif on_crowd[i]:
                outcome[row] = IGNORED
    return outcome, gt_index


def coco_order(dets: Detections) -> np.ndarray:
    """The order in which COCOeval accumulates detections (int64 (N,)): by descending score, then image
    id, then input order."""
    return np.lexsort((np.arange(len(dets.scores)), dets.image_ids, -dets.scores))


def coco_average_precision(tp: np.ndarray, fp: np.ndarray, num_pos: int) -> float:
    """COCOeval's 101-point AP of one class from bool (n,) tp and fp in accumulation order (module
    docstring); nan when ``num_pos`` is 0."""
    if num_pos <= 0:
        return float("nan")
    tp_sum, fp_sum = np.cumsum(tp).astype(np.float64), np.cumsum(fp).astype(np.float64)  # (n,)
    recall = tp_sum / num_pos
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    ranks = np.searchsorted(recall, COCO_RECALLS, side="left")  # (101,)
    reached = ranks < len(recall)
    values = np.zeros(len(COCO_RECALLS))
    values[reached] = envelope[ranks[reached]]
    return float(np.mean(values))


def coco_class_aps(dets: Detections, labels: np.ndarray, outcome: np.ndarray,
                   num_pos: dict[int, int]) -> dict[int, float]:
    """Category id -> COCO AP (nan without positives) of the detections with ``labels`` (N,, which may
    differ from ``dets.labels`` after a fix) and ``outcome`` (N,, TP and FP count, the rest does not)."""
    order = coco_order(dets)
    aps = {}
    for cat, n in num_pos.items():
        rows = order[(labels[order] == cat) & ((outcome[order] == TP) | (outcome[order] == FP))]
        aps[cat] = coco_average_precision(outcome[rows] == TP, outcome[rows] == FP, n)
    return aps


def coco_positives(truth: GroundTruth) -> dict[int, int]:
    """Category id -> number of normal (not crowd) boxes, every category (zeros included): COCOeval's npig."""
    counts = dict.fromkeys(truth.cat_ids, 0)
    for label in truth.labels[~truth.crowd].tolist():
        counts[label] += 1
    return counts
