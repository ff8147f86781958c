"""COCO AP with weights on images, and the bootstrap over images built on it: confidence intervals of a
run's AP and paired tests of two runs on the same images.

A bootstrap resample draws the validation images with replacement; an image drawn ``w`` times counts
``w`` times. :func:`match_tables` takes pycocotools' per-image matching once (``COCOeval.evaluate()``:
which detection matched which ground truth at each IoU, which are ignored), and :func:`weighted_ap`
redoes COCOeval's ``accumulate`` for any image weights ``W``: each detection adds its image's weight to
the cumulative true or false positives, each image its weight times its ground-truth count to the
positives. With every weight 1 this is COCOeval's own computation (101-point interpolated precision,
averaged over IoUs .50:.95 and over the categories that have ground truth), so the point estimate is
pycocotools' number; an image of weight 2 gives what a dataset holding that image twice gives
(``tests/evaluation/test_bootstrap.py`` checks both against pycocotools).

Intervals are percentile intervals over ``n`` resamples (default 1000, seeded). A paired difference uses
the same resamples for both runs; its two-sided p-value is ``2 min(P(d <= 0), P(d >= 0))`` over the
resamples (at least ``1 / n``): the probability, under resampling of images, that the sign of the gain
would flip.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_AREA = {"AP": 0, "AP50": 0, "AP75": 0, "APs": 1, "APm": 2, "APl": 3}  # pycocotools' area ranges
_IOU = {"AP50": [0], "AP75": [5]}  # index into iouThrs .50:.05:.95; the others use all ten


@dataclass
class MatchTable:
    """Detections of one (category, area range), sorted as COCOeval's accumulate sorts them.

    Attributes:
        image: int64 (D,) index of each detection's image in ``0..I-1``.
        tp, fp: bool (T, D) true / false positive at each IoU threshold (ignored detections: neither).
        num_gt: float64 (I,) non-ignored ground-truth boxes of each image.
    """

    image: torch.Tensor
    tp: torch.Tensor
    fp: torch.Tensor
    num_gt: torch.Tensor


def match_tables(gt: dict, results: list[dict]) -> tuple[list[int], dict[tuple[int, int], MatchTable]]:
    """pycocotools' per-image matching of COCO ``results`` against the ground-truth dict ``gt``.

    Returns:
        the image ids (sorted; index i of the tables), and ``{(k, a): MatchTable}`` for category index
        ``k`` (categories sorted by id) and area range ``a`` (0 all, 1 small, 2 medium, 3 large),
        100 detections an image.
    """
    from pycocotools.cocoeval import COCOeval

    from ..data.formats.coco import coco_api

    coco_gt = coco_api(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results) if results else None
        ev = COCOeval(coco_gt, coco_dt if coco_dt is not None else coco_api({**gt, "annotations": []}), "bbox")
        ev.evaluate()
    p = ev.params
    image_ids, n_img, n_area, max_det = list(p.imgIds), len(p.imgIds), len(p.areaRng), p.maxDets[-1]
    tables = {}
    for k in range(len(p.catIds)):
        for a in range(n_area):
            entries = [(i, e) for i, e in enumerate(ev.evalImgs[k * n_area * n_img + a * n_img:
                                                               (k * n_area + a + 1) * n_img]) if e is not None]
            num_gt = np.zeros(n_img)
            for i, e in entries:
                num_gt[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            scores = np.concatenate([e["dtScores"][:max_det] for _, e in entries]) if entries else np.zeros(0)
            order = np.argsort(-scores, kind="mergesort")  # as accumulate: stable, image order among ties
            image = np.concatenate([[i] * len(e["dtScores"][:max_det]) for i, e in entries]) if entries else []
            T = len(p.iouThrs)
            matched = (np.concatenate([e["dtMatches"][:, :max_det] for _, e in entries], 1) if entries
                       else np.zeros((T, 0)))[:, order]
            ignored = (np.concatenate([e["dtIgnore"][:, :max_det] for _, e in entries], 1) if entries
                       else np.zeros((T, 0), bool))[:, order]
            tables[(k, a)] = MatchTable(torch.as_tensor(np.asarray(image, np.int64)[order]),
                                        torch.as_tensor((matched > 0) & ~ignored),
                                        torch.as_tensor((matched == 0) & ~ignored), torch.as_tensor(num_gt))
    return image_ids, tables


def _category_precision(table: MatchTable, weights: torch.Tensor, recall_thresholds: torch.Tensor) -> torch.Tensor:
    """Interpolated precision (B, T, R) of one category and area for image ``weights`` (B, I); nan where
    the weighted ground truth is empty (COCOeval's -1)."""
    B, (T, D) = weights.shape[0], table.tp.shape
    positives = weights @ table.num_gt  # (B,)
    if D == 0:
        q = torch.zeros(B, T, len(recall_thresholds), dtype=torch.float64)
    else:
        w = weights[:, table.image][:, None, :]  # (B, 1, D)
        tp = torch.cumsum(w * table.tp, dim=-1)
        fp = torch.cumsum(w * table.fp, dim=-1)
        recall = tp / positives.clamp(min=1e-300)[:, None, None]
        precision = tp / (fp + tp + np.spacing(1))
        envelope = torch.flip(torch.cummax(torch.flip(precision, [-1]), dim=-1).values, [-1])
        idx = torch.searchsorted(recall.contiguous(), recall_thresholds.expand(B, T, -1).contiguous(), side="left")
        padded = torch.cat([envelope, torch.zeros(B, T, 1, dtype=envelope.dtype)], dim=-1)
        q = torch.gather(padded, -1, idx.clamp(max=D))
    q[positives <= 0] = float("nan")
    return q


def weighted_ap(tables: dict[tuple[int, int], MatchTable], weights: torch.Tensor,
                metrics: tuple[str, ...] = METRICS, chunk: int = 0) -> dict[str, torch.Tensor]:
    """COCO's AP metrics for each row of image ``weights`` float64 (B, I): ``{metric: (B,)}``, nan where no
    category has ground truth (pycocotools' -1). ``chunk``: rows at a time (0: sized to ~2e7 numbers)."""
    recall_thresholds = torch.as_tensor(np.linspace(0.0, 1.00, 101, endpoint=True))  # COCOeval's recThrs
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if not chunk:
        largest = max((t.tp.numel() for t in tables.values()), default=1)
        chunk = max(1, int(2e7 // max(largest * 101 // 10, 1)))
    num_categories = 1 + max(k for k, _ in tables)
    out = {m: [] for m in metrics}
    for start in range(0, weights.shape[0], chunk):
        w = weights[start:start + chunk]
        for m in metrics:
            a = _AREA[m]
            per_cat = torch.stack([_category_precision(tables[(k, a)], w, recall_thresholds)[:, _IOU.get(m, slice(None))]
                                   for k in range(num_categories)], dim=1)  # (b, K, T, R)
            out[m].append(torch.nanmean(per_cat.flatten(1), dim=1))
    return {m: torch.cat(v) for m, v in out.items()}


def resample_weights(num_images: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` bootstrap resamples of ``num_images`` images as counts float64 (n, I), seeded."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(num_images, (n, num_images), generator=g)
    return torch.zeros(n, num_images, dtype=torch.float64).scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))


def interval(samples: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap ``samples`` (nan ones left out)."""
    s = samples[~torch.isnan(samples)].numpy()
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paired_p_value(differences: torch.Tensor) -> float:
    """Two-sided bootstrap p-value of a paired difference: ``2 min(P(d <= 0), P(d >= 0))``, at least 1/n."""
    d = differences[~torch.isnan(differences)]
    if d.numel() == 0:
        return float("nan")
    if torch.all(d == 0):
        return 1.0
    p = 2 * min(float((d <= 0).double().mean()), float((d >= 0).double().mean()))
    return min(1.0, max(p, 1.0 / d.numel()))
