"""What a training run records at each evaluation beyond the metrics: the validation loss, the raw weights'
metrics beside the averaged ones (``train.ema``), and the early-stopping rule (``train.early_stop``)."""

from __future__ import annotations

from typing import Optional

import torch

from .. import distributed as dist
from ..config import Config, metric_keys
from ..evaluation.coco import Evaluation, evaluate_model
from ..inference.predictor import Precision, inference_layout, training_layout


def evaluate_weights(model: torch.nn.Module, val_set, cfg: Config, device: torch.device, precision: Precision,
                     rank: int = 0, world: int = 1, on_outputs=None) -> Optional[Evaluation]:
    """The metrics of ``eval.metrics`` on ``val_set`` for ``model`` (a training model, put back in training
    mode after), exactly as ``fcoslab evaluate`` computes them for a checkpoint; batches are shared out over
    processes, results gathered on rank 0 (other ranks get None)."""
    dist.broadcast_buffers(model)  # every process evaluates the model that rank 0 saves
    model.eval()
    changed = inference_layout(model, device)
    try:
        return evaluate_model(model, val_set, cfg, device, precision, rank, world, on_outputs=on_outputs)
    finally:
        if changed:
            training_layout(model)
        model.train()


def epoch_evaluations(saved: torch.nn.Module, raw: Optional[torch.nn.Module], val_set, cfg: Config, criterion,
                      device: torch.device, precision: Precision, rank: int, world: int) -> tuple[Optional[Evaluation], dict]:
    """The evaluation of the ``saved`` weights (the average with ``train.ema``), and what the history records
    beside it: the validation loss (``eval.loss``) and the ``raw`` weights' metrics as ``raw_AP``, ... (when
    they are not the saved ones)."""
    val_loss = ValidationLoss(criterion) if cfg.eval.loss else None
    evaluation = evaluate_weights(saved, val_set, cfg, device, precision, rank, world, on_outputs=val_loss)
    extra = {k: round(v, 5) for k, v in val_loss.result().items()} if val_loss is not None else {}
    if raw is not None:
        raw_evaluation = evaluate_weights(raw, val_set, cfg, device, precision, rank, world)
        if raw_evaluation is not None:
            extra.update({f"raw_{k}": v for k, v in raw_evaluation.record().items() if not isinstance(v, (list, dict))})
    return evaluation, extra


class ValidationLoss:
    """Sums the loss terms over an evaluation's batches (an ``on_outputs`` callback of
    :func:`fcoslab.evaluation.coco.evaluate_model`) and divides by the counts of the whole set, so the result
    is the training loss of the validation set taken as one batch: it does not depend on how the images are
    batched, nor on the number of processes."""

    def __init__(self, criterion):
        self.criterion, self.sums, self.counts = criterion, {}, None

    @torch.no_grad()
    def __call__(self, outputs: dict, batch: dict) -> None:
        device = outputs["cls_logits"].device
        boxes, labels = batch["gt_boxes"].to(device), batch["gt_labels"].to(device)
        targets = self.criterion.targets(outputs, boxes, labels, batch["image_sizes"].to(device))
        counts = self.criterion.counts(targets, outputs["centerness"] is not None)
        ones = torch.ones(2, device=device)
        losses, _ = self.criterion(outputs, boxes, labels, targets=targets, counts=ones)  # plain sums
        self.counts = counts if self.counts is None else self.counts + counts
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.double()

    def result(self) -> dict[str, float]:
        """``{"val_loss": ..., "val_loss_cls": ..., ...}`` summed over processes (every rank calls it)."""
        names = ["loss", "cls", "box", "centerness"]
        device = self.counts.device if self.counts is not None else torch.device("cpu")
        sums = torch.stack([self.sums.get(k, torch.zeros((), dtype=torch.float64, device=device)).to(device).double()
                            for k in names])
        counts = (self.counts if self.counts is not None else torch.zeros(2, device=device)).double()
        both = dist.all_reduce_mean(torch.cat([sums, counts])) * dist.world_size()  # sums over processes
        sums, num_pos, box_norm = both[:4], both[4].clamp(min=1.0), both[5].clamp(min=1e-6)
        box_weight = self.criterion.loss.box_weight
        cls, box, ctr = sums[1] / num_pos, sums[2] / box_norm, sums[3] / num_pos
        return {"val_loss": float(cls + box_weight * box + ctr), "val_loss_cls": float(cls),
                "val_loss_box": float(box), "val_loss_centerness": float(ctr)}


def early_stop_reason(history: list[dict], metric: str, patience: int) -> Optional[str]:
    """Why training should stop: ``patience`` evaluations in a row without a better ``metric`` than the best
    before them (None when it should go on, or when ``patience`` is 0)."""
    values = [h.get(metric) for h in history if h.get(metric) is not None]
    if not patience or len(values) <= patience:
        return None
    best_before = max(values[:-patience])
    if max(values[-patience:]) > best_before:
        return None
    best_at = next(h for h in history if h.get(metric) == best_before)
    return (f"early stop: {metric} did not improve on {best_before:.4f} (epoch {best_at['epoch']}) in {patience} "
            f"evaluations (train.early_stop={patience})")


def history_record(epoch: int, step: int, losses: dict, evaluation: Evaluation, extra: dict, seconds: float) -> dict:
    """One record of ``history.json``: where, the epoch's mean training losses, the metrics, ``extra``."""
    return {"epoch": epoch, "step": step,
            **{f"loss_{k}" if k != "loss" else "loss": round(v, 5) for k, v in losses.items() if k != "lr"},
            **evaluation.record(), **extra, "seconds": round(seconds, 2)}


def summary_line(record: dict, metrics: str) -> str:
    """``AP 0.512, AP50 0.801, AP75 0.553`` (and VOC's where measured) of a history record."""
    shown = ("AP", "AP50", "AP75", "voc_mAP50", "voc_mAP")
    return ", ".join(f"{k} {record[k]:.3f}" for k in metric_keys(metrics) if k in shown and record[k] is not None)
