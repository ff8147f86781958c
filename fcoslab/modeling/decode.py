"""Turn raw head outputs into detections in original-image pixels."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from ..config import DecodeConfig


def image_scores(logits: Tensor, centerness: Tensor | None) -> Tensor:
    """Scores float32 (P, K) of one image from its class logits (P, K) and center-ness logits (P,) or None.

    One image at a time: a CPU elementwise kernel runs over a tensor as one stretch of memory, vectorised
    but for a scalar tail, and its vectorised and scalar sigmoids differ in the last bit, so scores of a
    whole batch would depend on the image's place in it and on the batch's size.
    """
    scores = torch.sigmoid(logits.float())  # (P, K)
    if centerness is not None:
        scores = torch.sqrt(scores * torch.sigmoid(centerness.float())[:, None])
    return scores


@torch.no_grad()
def decode(outputs: dict, image_sizes: Tensor, orig_sizes: Tensor, cfg: DecodeConfig) -> list[dict[str, Tensor]]:
    """Detections of each image of a batch.

    Per level: scores (:func:`image_scores`: sigmoid of the class logits, times the center-ness probability
    under a square root when the model has center-ness), the ``pre_nms_topk`` best (point, class) pairs, those above
    ``score_thresh``. Then boxes are clipped to the image, one NMS runs over the whole batch (groups =
    image x class, or image alone with ``class_agnostic_nms``, so that a box also suppresses lower-scored
    boxes of other classes on the same object), the ``max_detections`` best are kept and mapped to original pixels.

    Args:
        outputs: the model's output dict.
        image_sizes (Tensor[B, 2]): int (h, w) of each image before padding (network pixels).
        orig_sizes (Tensor[B, 2]): int (h, w) of the original images.
    Returns:
        one dict per image: ``boxes`` float (N, 4) xyxy original pixels, ``scores`` float (N,),
        ``labels`` int64 (N,), sorted by decreasing score.
    """
    logits, ltrb, ctr = outputs["cls_logits"], outputs["bbox_ltrb"].float(), outputs["centerness"]
    points = outputs["points"]
    B, P, K = logits.shape
    scores = torch.stack([image_scores(logits[b], None if ctr is None else ctr[b]) for b in range(B)])  # (B, P, K)
    cand_scores, cand_boxes, cand_labels = [], [], []
    start = 0
    for h, w in outputs["level_sizes"]:
        n = h * w
        flat = scores[:, start:start + n].reshape(B, n * K)  # (B, n*K)
        top, idx = flat.topk(min(cfg.pre_nms_topk, n * K), dim=1)  # (B, k)
        point = idx // K + start  # (B, k)
        dist = torch.gather(ltrb, 1, point[..., None].expand(-1, -1, 4))  # (B, k, 4)
        xy = points[point]  # (B, k, 2)
        cand_boxes.append(torch.cat([xy - dist[..., :2], xy + dist[..., 2:]], dim=-1))
        cand_scores.append(top)
        cand_labels.append(idx % K)
        start += n
    boxes = torch.cat(cand_boxes, dim=1)  # (B, C, 4)
    cand = torch.cat(cand_scores, dim=1)  # (B, C)
    labels = torch.cat(cand_labels, dim=1)  # (B, C)
    hw = image_sizes.to(boxes.device, torch.float32)
    limit = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], dim=1)[:, None]  # (B, 1, 4) as w, h, w, h
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    image = torch.arange(B, device=boxes.device)[:, None].expand_as(labels)
    keep = cand > cfg.score_thresh
    boxes, cand, labels, image = boxes[keep], cand[keep], labels[keep], image[keep]
    groups = image if cfg.class_agnostic_nms else image * K + labels
    kept = ops.batched_nms(boxes, cand, groups, cfg.nms_thresh)  # decreasing score
    scale = (orig_sizes.to(boxes.device, torch.float32) / hw)  # (B, 2) as sy, sx
    results = []
    for b in range(B):
        sel = kept[image[kept] == b][: cfg.max_detections]
        sy, sx = scale[b]
        results.append({"boxes": boxes[sel] * torch.stack([sx, sy, sx, sy]), "scores": cand[sel],
                        "labels": labels[sel]})
    return results


def one_class_per_object(det: dict[str, Tensor], iou_threshold: float = 0.6) -> dict[str, Tensor]:
    """Detections of one image after a class-agnostic NMS: where boxes of any classes overlap by more
    than ``iou_threshold``, only the highest-scored one stays.

    For display (the viewer, drawn predictions): a model unsure of an object's class leaves one box per
    class it hesitates over. COCO AP rewards those lower-scored hedges, so evaluation keeps them (on the
    shapes demo this suppression cost about 0.005 AP and 0.01 AP50; README).

    Args:
        det: ``boxes`` float (N, 4) xyxy, ``scores`` (N,), ``labels`` int64 (N,), as :func:`decode` returns.
    Returns:
        the same keys, the kept detections in decreasing score order.
    """
    keep = ops.nms(det["boxes"].float(), det["scores"].float(), iou_threshold)
    return {k: v[keep] for k, v in det.items()}
