"""Scores that follow the box's IoU: the quality focal loss (``loss.cls=quality_focal``) and the IoU-quality
branch (``loss.quality=iou``)."""

import pytest
import torch

from fcoslab import ops
from fcoslab.boxes import ltrb_iou
from fcoslab.config import LossConfig
from fcoslab.modeling.loss import fcos_loss, quality_focal_loss


def batch(B=2, P=40, K=3, seed=0):
    """Outputs and targets of B images of P points, about a quarter of them positive (image 1: none)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (B, P), generator=g)
    labels[torch.rand(B, P, generator=g) > 0.25] = -1
    labels[1] = -1  # an image without objects
    ltrb_t = torch.rand(B, P, 4, generator=g) * 30 + 1
    outputs = {"cls_logits": torch.randn(B, P, K, generator=g), "centerness": torch.randn(B, P, generator=g),
               "bbox_ltrb": ltrb_t * (0.6 + 0.8 * torch.rand(B, P, 4, generator=g))}
    ctr_t = torch.rand(B, P, generator=g)
    return outputs, {"labels": labels, "ltrb": ltrb_t, "centerness": ctr_t}


def test_quality_focal_is_focal_without_alpha_when_targets_are_0_or_1():
    """With qualities of exactly 1, |y - p|^2 is focal loss's (1 - p_t)^2: the oracle is the focal loss op."""
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(200, 4, generator=g) * 3, torch.randint(-1, 4, (200,), generator=g)
    qfl = quality_focal_loss(logits, labels, torch.ones(200), beta=2.0)
    focal = ops.sigmoid_focal_loss(logits, labels, alpha=-1.0, gamma=2.0, reduction="sum", backend="torch")
    torch.testing.assert_close(qfl, focal)


def test_quality_focal_pulls_each_score_to_its_quality_from_both_sides():
    """At a positive's class the loss is least where the probability equals the quality (0.6 here), and its
    gradient pushes the logit towards it from above and below; focal loss would push every positive up."""
    quality, labels = torch.tensor([0.6]), torch.tensor([0])
    p = torch.tensor([0.3, 0.6, 0.9])
    logits = torch.log(p / (1 - p))[:, None].clone().requires_grad_(True)  # three points of class 0
    losses = [quality_focal_loss(logits[i:i + 1], labels, quality) for i in range(3)]
    torch.stack(losses).sum().backward()
    grad = logits.grad[:, 0]
    assert grad[0] < 0 < grad[2]  # below the quality: raised; above it: lowered
    low, mid, high = (float(x.detach()) for x in losses)
    assert abs(float(grad[1])) < 1e-6 and mid < low and mid < high


def test_quality_focal_targets_are_the_predicted_boxes_iou():
    """In ``fcos_loss`` a positive's target is the IoU of its predicted box with its box, so logits set to
    that IoU give a zero gradient at the positives' classes; background targets stay 0."""
    outputs, targets = batch()
    positive = targets["labels"] >= 0
    iou, _ = ltrb_iou(outputs["bbox_ltrb"][positive], targets["ltrb"][positive])
    logits = torch.full_like(outputs["cls_logits"], -30.0)
    logits[positive, targets["labels"][positive]] = torch.logit(iou)
    outputs["cls_logits"] = logits.requires_grad_(True)
    cfg = LossConfig(cls="quality_focal")
    terms, stats = fcos_loss(outputs, targets, cfg)
    terms["loss"].backward()
    assert float(logits.grad.abs().max()) < 1e-6
    assert 0 < float(terms["cls"]) < 1e-5 and float(stats["num_pos"]) == float(positive.sum())
    # focal loss on the same outputs still pushes every positive's score up, towards 1
    logits.grad = None
    fcos_loss(outputs, targets, LossConfig())[0]["loss"].backward()
    assert bool((logits.grad[positive, targets["labels"][positive]] < 0).all())


@pytest.mark.parametrize("quality", ["centerness", "iou"])
def test_quality_branch_learns_centerness_or_the_detached_iou(quality):
    """``loss.quality=iou``: the center-ness branch's BCE target is the predicted box's IoU, detached (no
    gradient reaches the boxes through it); ``centerness``: the geometric target, as before."""
    outputs, targets = batch(seed=2)
    outputs["bbox_ltrb"].requires_grad_(True)
    positive = targets["labels"] >= 0
    terms, stats = fcos_loss(outputs, targets, LossConfig(quality=quality, box_weight=0.0))
    iou, _ = ltrb_iou(outputs["bbox_ltrb"][positive].detach(), targets["ltrb"][positive])
    want = iou if quality == "iou" else targets["centerness"][positive]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(outputs["centerness"][positive], want, reduction="sum")
    torch.testing.assert_close(terms["centerness"], bce / stats["num_pos"])
    terms["loss"].backward()  # box weight 0: the boxes' only other path to the loss
    assert float(outputs["bbox_ltrb"].grad.abs().max()) == 0.0
