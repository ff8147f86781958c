"""COCO evaluation: detections -> COCO results json -> the 12 COCOeval numbers, computed by pycocotools or
by faster-coco-eval (``eval.backend``), which gives the same numbers and ``eval["precision"]`` sooner."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

from ..boxes import xyxy_to_xywh
from ..config import COCO_STATS, Config, key_choices
from ..data.formats.coco import CocoIndex, coco_api
from ..errors import FcoslabError
from ..inference.predictor import Precision, Predictor, predict_batches
from ..inference.tta import merge_views, tta_views, view_config, view_dataset

STAT_NAMES = COCO_STATS  # COCO's 12 summary numbers, the history keys of a COCO evaluation
_SUMMARY_ROWS = [  # (metric, iou, area, maxDets) in the order pycocotools prints them
    ("Average Precision", "0.50:0.95", "all", 100), ("Average Precision", "0.50", "all", 100),
    ("Average Precision", "0.75", "all", 100), ("Average Precision", "0.50:0.95", "small", 100),
    ("Average Precision", "0.50:0.95", "medium", 100), ("Average Precision", "0.50:0.95", "large", 100),
    ("Average Recall", "0.50:0.95", "all", 1), ("Average Recall", "0.50:0.95", "all", 10),
    ("Average Recall", "0.50:0.95", "all", 100), ("Average Recall", "0.50:0.95", "small", 100),
    ("Average Recall", "0.50:0.95", "medium", 100), ("Average Recall", "0.50:0.95", "large", 100)]


def summary_text(stats: dict[str, float]) -> str:
    """The 12 summary lines in pycocotools' layout."""
    lines = []
    for (metric, iou, area, dets), name in zip(_SUMMARY_ROWS, STAT_NAMES):
        short = "(AP)" if metric.startswith("Average Precision") else "(AR)"
        lines.append(f" {metric:<18} {short} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = "
                     f"{stats[name]:0.3f}")
    return "\n".join(lines)


def to_coco_results(detections: Iterable[tuple[int, dict]], cat_ids: CocoIndex | list[int]) -> list[dict]:
    """``[(image_id, {"boxes", "scores", "labels"}), ...]`` -> COCO results (xywh, category ids), label ``k``
    being category ``cat_ids[k]`` (a :class:`CocoIndex` gives its own)."""
    cat_ids = cat_ids.cat_ids if isinstance(cat_ids, CocoIndex) else cat_ids
    results = []
    for image_id, det in detections:
        boxes = xyxy_to_xywh(det["boxes"].float().cpu()).tolist()
        for box, score, label in zip(boxes, det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": int(image_id), "category_id": cat_ids[int(label)],
                            "bbox": [round(v, 2) for v in box], "score": round(float(score), 5)})
    return results


def check_categories(dataset_index: CocoIndex, cat_ids: list[int], class_names: list[str], ann_file) -> None:
    """A model may be scored on a dataset whose categories (id and name) are all among its own: the same
    set, or COCO's 80 for torchvision's 91-way head. Detections of other categories are not scored."""
    model = dict(zip(cat_ids, class_names))
    wrong = [(c, n) for c, n in zip(dataset_index.cat_ids, dataset_index.names) if model.get(c) != n]
    if wrong:
        c, n = wrong[0]
        found = f"the model's category {c} is '{model[c]}'" if c in model else f"the model has no category {c}"
        raise FcoslabError(f"{ann_file} has category {c} '{n}', but {found} ({len(wrong)} categories differ; "
                           f"the model's: {', '.join(f'{i} {m}' for i, m in list(model.items())[:6])}, ...)")


def coco_backend(backend: str = "pycocotools"):
    """``(make_coco, COCOeval)`` of an ``eval.backend``: a function from a ground-truth dict to its ``COCO``
    object, and the evaluator class. Both backends' evaluators expose the same ``params`` (``iouThrs`` (T,),
    ``recThrs`` (R,)), ``eval["precision"]`` (T, R, K, A, M) and ``stats`` (12,); faster-coco-eval fills
    ``eval`` in ``evaluate()`` already and keeps no ``evalImgs``. Neither prints."""
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        return coco_api, COCOeval
    if backend == "faster":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as e:
            raise FcoslabError("eval.backend=faster needs faster-coco-eval: pip install faster-coco-eval") from e

        def quiet(*args, **kwargs):  # faster-coco-eval logs through print_function instead of printing
            pass

        return partial(COCO, print_function=quiet), partial(COCOeval_faster, print_function=quiet)
    raise FcoslabError(f"config key 'eval.backend': '{backend}' is not one of {', '.join(key_choices('eval.backend'))}")


def coco_evaluate(gt: dict, results: list[dict], image_ids: Optional[list[int]] = None,
                  backend: str = "pycocotools"):
    """Score COCO results against a ground-truth dict (as :func:`read_coco_json` returns it), with
    pycocotools or faster-coco-eval (``backend``, see :func:`coco_backend`).

    An empty result list scores 0 everywhere (pycocotools' ``loadRes([])`` would raise IndexError).

    Returns:
        (stats dict keyed by :data:`STAT_NAMES`, the ``COCOeval`` object or None when there were no results).
    """
    make_coco, COCOeval = coco_backend(backend)  # first, so a missing package fails even without results
    if not results:
        return {name: 0.0 for name in STAT_NAMES}, None
    coco_gt = make_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}, evaluator


def planned_batches(dataset, cfg: Config, positions: Optional[list[int]] = None) -> list[list[int]]:
    """Batches of at most ``eval.batch_size`` positions of ``dataset`` (all, or those of ``positions``) whose
    images pad to one size under ``cfg``'s evaluation transforms, planned from the images' stored sizes
    (:func:`fcoslab.data.size_grouped_batches`), ordered by their first image."""
    from ..data import planned_padded_shapes, size_grouped_batches

    shapes = planned_padded_shapes(dataset, cfg)
    if positions is None:
        return size_grouped_batches(shapes, cfg.eval.batch_size)
    return [[positions[j] for j in batch]
            for batch in size_grouped_batches([shapes[i] for i in positions], cfg.eval.batch_size)]


def evaluation_loader(dataset, cfg: Config, rank: int = 0, world: int = 1,
                      positions: Optional[list[int]] = None) -> torch.utils.data.DataLoader:
    """Batches of at most ``eval.batch_size`` images of one padded size, planned from the images'
    sizes (:func:`planned_batches`), ordered by their first image; process ``rank`` takes batches rank,
    rank + world, ... (or, given ``positions``, the batches of those images alone). Each item the loader
    yields is a list of collated batches (one, unless a file's size differed from its json:
    :func:`fcoslab.data.collate_by_padded_size`).

    Every image is padded to its own multiple of the size divisibility, as it would be alone, so its
    detections depend neither on ``eval.batch_size`` nor on the number of processes (nor on the
    dataset's order); a set of one padded size gets the consecutive batches of before.
    """
    from ..data import collate_by_padded_size_fn, make_loader

    batches = planned_batches(dataset, cfg, positions)
    batches = [[(i, 0) for i in batch] for batch in (batches if positions is not None else batches[rank::world])]
    return make_loader(dataset, batches, cfg.data, collate_by_padded_size_fn(cfg.data, cfg.model.size_divisibility))


def _loader_detections(model, loader, cfg: Config, device, precision: Precision, flip: bool = False,
                       on_outputs=None):
    """:func:`predict_batches` over an :func:`evaluation_loader` (whose items are lists of batches)."""
    return predict_batches(model, (batch for batches in loader for batch in batches), cfg, device, precision, flip,
                           on_outputs)


def predict_dataset(model, dataset, cfg: Config, device: torch.device, precision: Precision, rank: int = 0,
                    world: int = 1, on_outputs=None) -> list[tuple[int, dict]]:
    """``(image_id, detections)`` of this process's share of ``dataset`` (:func:`evaluation_loader`), in
    dataset order; the shares of ``world`` processes together are every image once.

    With ``eval.tta`` a process takes the same images, and runs each test-time view over them as an
    evaluation of that view's size (:mod:`fcoslab.inference.tta`); an image's views are then merged.
    ``on_outputs`` (see :func:`fcoslab.inference.predictor.predict_batches`) sees the plain view's outputs.
    """
    position = {info["id"]: k for k, info in enumerate(dataset.images)}
    views = tta_views(cfg)
    if len(views) == 1:
        detections = _loader_detections(model, evaluation_loader(dataset, cfg, rank, world), cfg, device, precision,
                                        on_outputs=on_outputs)
        return sorted(detections, key=lambda item: position[item[0]])
    mine = [i for batch in planned_batches(dataset, cfg)[rank::world] for i in batch]
    per_view = []
    for k, view in enumerate(views):
        seen, view_cfg = view_dataset(dataset, view, plain=k == 0), view_config(cfg, view)
        loader = evaluation_loader(seen, view_cfg, positions=mine)
        per_view.append(dict(_loader_detections(model, loader, view_cfg, device, precision, view.flip,
                                                on_outputs if k == 0 else None)))
    merged = [(image_id, merge_views([dets[image_id] for dets in per_view], cfg.decode)) for image_id in per_view[0]]
    return sorted(merged, key=lambda item: position[item[0]])


@dataclass
class Evaluation:
    """What one evaluation produced (on rank 0).

    Attributes:
        stats: COCO's 12 summary numbers as a dict ``{name: float}`` keyed by :data:`STAT_NAMES`, in
            pycocotools' order: ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (small,
            medium, large objects), ``AR1``, ``AR10``, ``AR100`` (recall at 1, 10, 100 detections an image),
            ``ARs``, ``ARm``, ``ARl``. Values in [0, 1]; -1 where there is no ground truth of that size
            (pycocotools' convention); all 0 without detections; an empty dict with ``eval.metrics=voc``.
        results: the COCO results list (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        evaluator: the accumulated ``COCOeval`` (None without detections or COCO metrics).
        class_names: the names of the dataset's categories, sorted by id.
        gt: the ground truth, a COCO dict.
        voc: :func:`fcoslab.evaluation.voc.voc_evaluate`'s dict (None without VOC metrics).
    """

    stats: dict[str, float]
    results: list[dict]
    evaluator: Optional[object]
    class_names: list[str]
    gt: Optional[dict] = None
    voc: Optional[dict] = None

    def per_class(self) -> dict[str, Optional[float]]:
        """COCO AP@[.5:.95] of each class by name (None: no ground truth, or no COCO metrics)."""
        ap = per_class_ap(self.evaluator) if self.evaluator is not None else [np.nan] * len(self.class_names)
        return {name: None if np.isnan(v) else round(float(v), 5) for name, v in zip(self.class_names, ap)}

    def record(self) -> dict:
        """The numbers ``history.json`` keeps for this evaluation: COCO's 12 and ``per_class_AP``; VOC's
        ``voc_mAP`` (IoU .50:.95), ``voc_mAP50``, ``voc_mAP50_11pt``, ``voc_mAP75`` and ``voc_per_class``."""
        out: dict = {k: round(v, 5) for k, v in self.stats.items()}
        if self.stats:
            out["per_class_AP"] = self.per_class()
        if self.voc is not None:
            out.update({f"voc_{k}": None if self.voc[k] is None else round(self.voc[k], 5)
                        for k in ("mAP", "mAP50", "mAP50_11pt", "mAP75")})
            out["voc_per_class"] = self.voc["per_class"]
        return out


def score_results(gt: dict, results: list[dict], class_names: list[str], metrics: str = "coco",
                  backend: str = "pycocotools") -> Evaluation:
    """Score COCO ``results`` against ``gt`` with the metrics ``eval.metrics`` names, COCO's computed by
    ``eval.backend``."""
    from .voc import voc_evaluate

    coco = metrics in ("coco", "both")
    stats, evaluator = coco_evaluate(gt, results, backend=backend) if coco else ({}, None)
    voc = voc_evaluate(gt, results) if metrics in ("voc", "both") else None
    return Evaluation(stats, results, evaluator, class_names, gt, voc)


def merge_shards(parts: list[list[dict]], dataset) -> list[dict]:
    """The COCO results of every process (each in dataset order) as one list in dataset order, each
    image's results in their own order: what one process would have produced."""
    position = {info["id"]: k for k, info in enumerate(dataset.images)}
    return sorted((r for part in parts for r in part), key=lambda r: position[r["image_id"]])


def evaluate_model(model, dataset, cfg: Config, device: torch.device, precision: Precision, rank: int = 0,
                   world: int = 1, cat_ids: Optional[list[int]] = None, on_outputs=None) -> Optional[Evaluation]:
    """Detect on every image of ``dataset`` with ``model`` (in eval mode) and score with ``cfg.eval.metrics``.

    ``cat_ids`` maps the model's labels to category ids (default: the dataset's own). Under torchrun each
    process detects on its share of the batches and rank 0 scores the gathered results, put back in
    dataset order (:func:`merge_shards`); other ranks return None. The results are those of one process
    and of any ``eval.batch_size``, bit for bit on a CPU with the same number of threads per
    process (:class:`fcoslab.inference.predictor.BatchInvariantConv2d` says why the thread count matters).
    """
    from .. import distributed as dist

    detections = predict_dataset(model, dataset, cfg, device, precision, rank, world, on_outputs)
    results = to_coco_results(detections, cat_ids or dataset.index.cat_ids)
    if world > 1:
        parts = dist.gather_objects(results)
        if rank != 0:
            return None
        results = merge_shards(parts, dataset)
    return score_results(dataset.data, results, list(dataset.index.names), cfg.eval.metrics, cfg.eval.backend)


def precision_recall_curves(evaluator, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """COCO's interpolated precision-recall curves at one IoU, from an accumulated COCOeval (all areas,
    100 detections): recall float (R,) and precision float (R, K), -1 where a class has no ground truth."""
    t = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - iou)))
    return np.asarray(evaluator.params.recThrs), evaluator.eval["precision"][t, :, :, 0, -1]


def per_class_ap(evaluator, iou: Optional[float] = None) -> np.ndarray:
    """AP of each category (K,) from an accumulated COCOeval, at IoU .50:.95 (or at one ``iou``, e.g. 0.5);
    nan where a class has no ground truth."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area=all, maxDets=100
    if iou is not None:
        t = int(np.argmin(np.abs(evaluator.params.iouThrs - iou)))
        precision = precision[t: t + 1]
    out = np.full(precision.shape[2], np.nan)
    for k in range(precision.shape[2]):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        if valid.size:
            out[k] = valid.mean()
    return out


def evaluate(run: str | Path, ann_file: Optional[str | Path] = None, image_dir: Optional[str | Path] = None, *,
             metrics: Optional[str] = None, backend: Optional[str] = None, device: str = "auto",
             results_out: Optional[str | Path] = None, overrides: Optional[dict] = None) -> Evaluation:
    """Evaluate a trained run: ``run`` is a run folder (its ``last.pt``) or a checkpoint file (e.g. ``best.pt``).

    Args:
        run: the run folder or checkpoint.
        ann_file, image_dir: a COCO annotation file and its image folder, both or neither (default: the run's
            ``data.val_ann`` and ``data.val_images``).
        metrics: ``coco``, ``voc`` or ``both`` (default: the run's ``eval.metrics``).
        backend: ``pycocotools`` or ``faster`` (default: the run's ``eval.backend``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        results_out: also write the COCO results json there.
        overrides: test-time config keys, e.g. ``{"eval.tta": True, "eval.tta_sizes": [96, 160]}``
            (not ``model.*``).

    Returns:
        an :class:`Evaluation`; on the run's validation set its numbers equal those of ``history.json``.

    Example::

        import fcoslab
        evaluation = fcoslab.evaluate("runs/shapes", metrics="both")
        print(evaluation.stats["AP"], evaluation.record()["voc_mAP50"], evaluation.per_class())
    """
    return evaluate_checkpoint(run, None if ann_file is None else str(ann_file),
                               None if image_dir is None else str(image_dir), results_out=results_out, device=device,
                               metrics=metrics, backend=backend, overrides=overrides)


def evaluate_checkpoint(checkpoint: str | Path, ann_file: Optional[str] = None, image_dir: Optional[str] = None,
                        results_out: Optional[str | Path] = None, device: str = "auto",
                        metrics: Optional[str] = None, backend: Optional[str] = None,
                        overrides: Optional[dict] = None) -> Evaluation:
    """Evaluate a run folder or checkpoint on its validation set (or ``ann_file`` + ``image_dir``), with
    the run's precision rule, evaluation batch size, ``eval.metrics`` (or ``metrics``) and ``eval.backend``
    (or ``backend``; a run saved before ``eval.backend`` existed uses pycocotools): on the run's
    validation set and the same kind of device, the numbers equal those in its ``history.json``. Writes
    the results json when ``results_out``. ``overrides`` change test-time keys of the run's config
    (:func:`fcoslab.inference.predictor.test_time_config`), e.g. ``eval.tta`` or the validation paths.
    """
    from ..files import write_json
    from ..data import CocoDetection, build_transforms

    predictor = Predictor(checkpoint, device=device, overrides=overrides)
    cfg = predictor.cfg
    if (ann_file is None) != (image_dir is None):
        raise FcoslabError("give both --ann and --images, or neither (to use the run's validation set)")
    ann_file, image_dir = ann_file or cfg.data.val_ann, image_dir or cfg.data.val_images
    dataset = CocoDetection(ann_file, image_dir, build_transforms(cfg.data, train=False))
    check_categories(dataset.index, predictor.cat_ids, predictor.class_names, ann_file)
    overrides = {key: value for key, value in (("eval.metrics", metrics), ("eval.backend", backend)) if value}
    if overrides:
        cfg = cfg.replace(**overrides)
    evaluation = evaluate_model(predictor.model, dataset, cfg, predictor.device, predictor.precision,
                                cat_ids=predictor.cat_ids)
    if results_out is not None:
        write_json(Path(results_out), evaluation.results)
    return evaluation
