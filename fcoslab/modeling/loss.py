"""FCOS losses: focal (or quality focal) loss for classes, IoU or GIoU for boxes, BCE for center-ness."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops
from ..boxes import ltrb_iou
from ..config import AssignConfig, LossConfig
from .targets import assign_targets


def loss_counts(targets: dict, cfg: LossConfig, centerness: bool = True) -> Tensor:
    """The raw normalisers of a batch's loss, float (2,): the number of positive points, and the box loss's
    (the sum of the positives' center-ness targets where the box loss is center-ness weighted, else the
    positives again). Summed over batches (and averaged over processes) they normalise a larger batch."""
    positive = targets["labels"] >= 0
    num_pos = positive.sum().float()
    weighted = cfg.centerness_weighted_box and centerness  # centerness: the model predicts center-ness
    box = targets["centerness"][positive].sum().float() if weighted else num_pos
    return torch.stack([num_pos, box.detach()])


def reduce_counts(counts: Tensor, cfg: LossConfig, all_reduce: Optional[Callable[[Tensor], Tensor]]) -> Tensor:
    """Counts averaged over processes by ``all_reduce`` (unless ``loss.num_pos_per_process`` or one process)."""
    return counts if all_reduce is None or cfg.num_pos_per_process else all_reduce(counts)


def fcos_loss(outputs: dict, targets: dict, cfg: LossConfig, all_reduce: Optional[Callable[[Tensor], Tensor]] = None,
              counts: Optional[Tensor] = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Loss of one batch, each part normalised by the number of positive points (at least 1).

    Args:
        outputs: the model's output dict (``cls_logits`` (B, P, K), ``bbox_ltrb`` (B, P, 4),
            ``centerness`` (B, P) or None).
        targets: :func:`fcoslab.modeling.targets.assign_targets` (or ``fcos_targets``) of the same batch.
        all_reduce: averages a tensor over processes under distributed training, so that every rank
            normalises by the same count of positives (None: single process; unused with
            ``cfg.num_pos_per_process``, where each rank divides by its own count as torchvision's FCOS does).
        counts: float (2,) normalisers (:func:`loss_counts`) to use instead of this batch's, already
            reduced: those of a whole accumulated batch (``train.accumulate``), or ones for plain sums.
    Returns:
        (terms, stats): ``terms`` has ``loss`` (the total to backpropagate) and the detached ``cls``,
        ``box`` and ``centerness`` scalars; ``stats`` has ``num_pos`` (float, the normaliser: the mean
        over processes, or this process's count).
    """
    logits, ltrb_pred, ctr_pred = outputs["cls_logits"], outputs["bbox_ltrb"], outputs["centerness"]
    labels, ltrb_t, ctr_t = targets["labels"], targets["ltrb"], targets["centerness"]
    K = logits.shape[-1]
    positive = labels >= 0  # (B, P)
    if counts is None:
        counts = reduce_counts(loss_counts(targets, cfg, ctr_pred is not None), cfg, all_reduce)
    num_pos, box_norm = counts[0].clamp(min=1.0), counts[1].clamp(min=1e-6)

    iou, giou = ltrb_iou(ltrb_pred[positive].float(), ltrb_t[positive])  # (num_pos_local,)
    per_box = -torch.log(iou.clamp(min=1e-6)) if cfg.box == "iou" else 1.0 - giou
    if cfg.cls == "quality_focal":
        cls = quality_focal_loss(logits.reshape(-1, K).float(), labels.reshape(-1),
                                 _positive_values(positive, iou.detach()).reshape(-1), cfg.quality_beta)
    else:
        cls = ops.sigmoid_focal_loss(logits.reshape(-1, K).float(), labels.reshape(-1), cfg.focal_alpha,
                                     cfg.focal_gamma, reduction="sum")
    parts = {"cls": cls / num_pos}
    if ctr_pred is not None:
        ctr_target = ctr_t[positive] if cfg.quality == "centerness" else iou.detach().clamp(0.0, 1.0)
        if cfg.centerness_weighted_box:
            parts["box"] = (per_box * ctr_target).sum() / box_norm
        else:
            parts["box"] = per_box.sum() / num_pos
        parts["centerness"] = F.binary_cross_entropy_with_logits(
            ctr_pred[positive].float(), ctr_target, reduction="sum") / num_pos
    else:
        parts["box"] = per_box.sum() / num_pos
        parts["centerness"] = torch.zeros((), device=logits.device)
    total = parts["cls"] + cfg.box_weight * parts["box"] + parts["centerness"]
    return {"loss": total, **{k: v.detach() for k, v in parts.items()}}, {"num_pos": num_pos.detach()}


def quality_focal_loss(logits: Tensor, labels: Tensor, quality: Tensor, beta: float = 2.0) -> Tensor:
    """Quality focal loss (Li et al., Generalized Focal Loss, 2020), summed: BCE against soft class targets,
    weighted by ``|target - sigmoid(logit)|^beta``. A positive's target at its class is its ``quality``
    (the IoU of its predicted box with its box), every other target 0; so the class score learns to rank
    points by how well their boxes fit, and no center-ness is needed to do so.

    Args:
        logits: float (N, K); labels: int64 (N,), -1 = background; quality: float (N,) in [0, 1], read at
            the positives only.
    """
    K = logits.shape[-1]
    onehot = labels[:, None] == torch.arange(K, device=logits.device)  # (N, K)
    targets = torch.where(onehot, quality.clamp(0.0, 1.0)[:, None].to(logits.dtype), torch.zeros_like(logits))
    weight = (torch.sigmoid(logits) - targets).abs().pow(beta)
    return (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight).sum()


def _positive_values(positive: Tensor, values: Tensor) -> Tensor:
    """``values`` (num_pos,) scattered to the positions of ``positive`` (B, P), 0 elsewhere: float (B, P)."""
    out = torch.zeros(positive.shape, dtype=values.dtype, device=values.device)
    out[positive] = values
    return out


class FCOSCriterion:
    """The one wiring of outputs -> targets -> loss: ``criterion(outputs, gt_boxes, gt_labels)``.

    The assignment is ``assign.method``'s (:func:`fcoslab.modeling.targets.assign_targets`); TAL reads the
    outputs' scores and boxes detached, so no gradient flows through the assignment.

    Args (of the call):
        outputs: the model's output dict.
        gt_boxes (Tensor[B, M, 4]): float xyxy pixels, padded; gt_labels (Tensor[B, M]): int64, -1 = padding
            (as :func:`fcoslab.data.collate` returns them).
        image_sizes (Tensor[B, 2] or None): int (h, w) of each image before padding (``collate``'s
            ``image_sizes``): under ``assign.method=atss`` points in the padding are never candidates.
    Returns:
        (terms, stats) as :func:`fcos_loss`.
    """

    def __init__(self, assign: AssignConfig, loss: LossConfig,
                 all_reduce: Optional[Callable[[Tensor], Tensor]] = None):
        self.assign, self.loss, self.all_reduce = assign, loss, all_reduce

    @property
    def uses_predictions(self) -> bool:
        """Whether targets depend on the predictions (``assign.method=tal``), not only on points and boxes."""
        return self.assign.method == "tal"

    def targets(self, outputs: dict, gt_boxes: Tensor, gt_labels: Tensor,
                image_sizes: Optional[Tensor] = None) -> dict[str, Tensor]:
        """The targets of a batch by ``assign.method``: ``outputs`` needs ``points``, ``strides`` and
        ``level_sizes`` (and the predictions where :attr:`uses_predictions`); ``image_sizes`` (B, 2) keep
        the padding out of ATSS's candidates."""
        return assign_targets(outputs, gt_boxes, gt_labels, self.assign, image_sizes)

    def counts(self, targets: dict, centerness: bool) -> Tensor:
        """This process's raw loss normalisers of a batch (:func:`loss_counts`)."""
        return loss_counts(targets, self.loss, centerness)

    def reduce_counts(self, counts: Tensor) -> Tensor:
        """Counts averaged over processes (unless ``loss.num_pos_per_process``)."""
        return reduce_counts(counts, self.loss, self.all_reduce)

    def __call__(self, outputs: dict, gt_boxes: Tensor, gt_labels: Tensor, image_sizes: Optional[Tensor] = None,
                 targets: Optional[dict] = None, counts: Optional[Tensor] = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``targets`` (of :meth:`targets`) and ``counts`` (reduced normalisers) are computed when not given."""
        if targets is None:
            targets = self.targets(outputs, gt_boxes, gt_labels, image_sizes)
        return fcos_loss(outputs, targets, self.loss, self.all_reduce, counts)
