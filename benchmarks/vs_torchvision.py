"""Seconds per training step and per inference batch: fcoslab's FCOS vs torchvision's FCOS, same network,
same random images, one process. A benchmark, not a test.

    python benchmarks/vs_torchvision.py [--size 512] [--batch 2] [--iters 5] [--device auto|cpu|cuda]
                                        [--score-thresh 0.05] [--amp]

Both detectors are ResNet-50-FPN P3-P7 (P6 and P7 from P5, 256 channels), with 4-conv GroupNorm(32)
towers, center-ness on the regression tower, frozen BatchNorm and the stem + layer1 frozen (torchvision's
default ``trainable_backbone_layers=3`` for a pretrained backbone), all weights random (nothing is
downloaded). Timed:

* train: forward, loss, backward and one SGD step (lr 0.001, momentum 0.9, no weight decay, the same
  optimizer type for both). fcoslab: ``FCOSCriterion(...)(model(images), gt_boxes, gt_labels)``;
  torchvision: ``sum(model(images_list, targets).values())``.
* inference: forward and post-processing to at most 100 detections per image (score threshold
  ``--score-thresh``, 1000 candidates per level, NMS at IoU 0.6). fcoslab: ``decode(model(images), ...)``;
  torchvision: ``model(images_list)`` in eval mode.

Each figure is the median of ``--iters`` timed steps after 2 warm-up steps; the two models' steps
alternate (and swap order every round) so that machine noise falls on both alike. Inference runs first,
on the freshly initialised weights (both heads start at the same class prior, so both see the same
number of candidates), then training. Images are float in [0, 1], (B, 3, size, size); each image gets 8
random ground-truth boxes. ``--amp`` uses fcoslab's precision rule (``runtime.precision=auto``: bfloat16 on
CUDA where supported, else float16 with a gradient scaler; on a CPU bfloat16 only where it is native,
else float32) for both models; the precision used is printed.

How the torchvision model is made: ``fcos_resnet50_fpn(weights=None, weights_backbone=None,
num_classes=91, min_size=size, max_size=size, score_thresh=...)``. Without a pretrained backbone that
builder makes every BatchNorm trainable (``nn.BatchNorm2d``) and all five stages trainable (it ignores
``trainable_backbone_layers``), so the script then does what the builder does for a pretrained
backbone: each BatchNorm2d of the ResNet becomes a FrozenBatchNorm2d and only layer2-layer4 keep
gradients. ``min_size = max_size = size`` stops its transform from resizing to 800 px.

fcoslab is configured from the ``imprv_coco_1x`` preset with the overrides of :func:`fcoslab_config`,
including two that only change numbers, not cost, to follow torchvision (``model.point_offset=0``,
``loss.centerness_weighted_box=false``).

Differences that remain (from torchvision/models/detection/fcos.py, anchor_utils.py, transform.py):

* classes: torchvision has 91 logits (COCO ids), fcoslab 80: the cls_logits conv of fcoslab is 80/91
  as large (about 0.3% of the network's multiply-adds).
* box regression: both predict ``relu(x) * stride`` distances (torchvision: ``BoxLinearCoder`` with
  ``normalize_by_size`` on a stride-sized anchor); fcoslab multiplies ``x`` by a learnable scalar per
  level first (5 parameters, as in the official FCOS); torchvision has none.
* points: torchvision's anchor centres are at ``i * stride``; fcoslab's at ``(i + point_offset) *
  stride`` (0.5 by default, set to 0 here).
* input pipeline: torchvision's ``GeneralizedRCNNTransform`` runs inside the timed step: per-image
  normalisation, a bilinear ``interpolate`` even at scale 1.0, and a copy into a batch padded to a
  multiple of 32. fcoslab normalises inside the model and takes a ready (B, 3, H, W) batch padded to a
  multiple of 128 (its data loader's job; done here outside the timing). With ``--size`` a multiple of
  128 (512 is) both networks see exactly the same pixels.
* loss: same terms (focal alpha 0.25 gamma 2, GIoU, center-ness BCE, normalised by the number of
  positives). torchvision matches points to boxes per image with dense (P, M) tensors, builds a one-hot
  (B, P, 91) class target and reads the positive count with ``.item()`` (a host sync on CUDA);
  fcoslab assigns the whole batch at once (``fcoslab.ops``: CuPy kernels on CUDA when available, the
  vectorised torch reference otherwise) and takes integer labels. Regress ranges are the same ((0, 64), ...,
  (512, inf)); torchvision's bounds are strict, fcoslab's inclusive.
* post-processing: the same scores (sqrt(sigmoid(cls) * sigmoid(ctr))). torchvision loops over images
  and levels (threshold, then top 1000), one ``batched_nms`` per image; fcoslab takes the top 1000 per
  level for the whole batch, then the threshold, then one NMS over the batch (groups image x class),
  with ``fcoslab.ops.batched_nms`` (CuPy on CUDA, torchvision's compiled NMS on the CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import common
from fcoslab import ops
from fcoslab.config import Config, load_config
from fcoslab.data.transforms import pad_targets
from fcoslab.inference.predictor import (Precision, choose_precision, inference_layout, predict_batches,
                                        resolve_device, training_layout)
from fcoslab.modeling.loss import FCOSCriterion
from fcoslab.modeling.model import build_model

SEED = 0
WARMUP = 2
BOXES_PER_IMAGE = 8
FCOSLAB_CLASSES = 80
TORCHVISION_CLASSES = 91


def fcoslab_config(score_thresh: float) -> Config:
    """The imprv_coco_1x preset set to torchvision's FCOS as far as the config allows."""
    return load_config("imprv_coco_1x", {
        "model.backbone": "resnet50", "model.backbone_weights": "", "model.torchvision_weights": False,
        "model.frozen_bn": True, "model.freeze_at": 2, "model.fpn_channels": 256, "model.p6_from": "p5",
        "model.head_convs": 4, "model.head_norm": "gn", "model.centerness": True,
        "model.point_offset": 0.0,  # torchvision's anchor centres are at i * stride
        "loss.centerness_weighted_box": False,  # torchvision: plain GIoU sum / positives
        "decode.score_thresh": score_thresh, "decode.pre_nms_topk": 1000, "decode.nms_thresh": 0.6,
        "decode.max_detections": 100, "decode.class_agnostic_nms": False,
    })


def freeze_like_pretrained(model: nn.Module) -> None:
    """Make torchvision's randomly initialised FCOS what its builder makes for a pretrained backbone:
    FrozenBatchNorm2d in the ResNet and ``trainable_backbone_layers=3`` (only layer2-layer4 train)."""
    body = model.backbone.body

    def convert(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.weight.device)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(module, name, frozen)
            else:
                convert(child)

    convert(body)
    trainable = ("layer4", "layer3", "layer2")  # torchvision's _resnet_fpn_extractor, trainable_layers=3
    for name, p in body.named_parameters():
        p.requires_grad_(name.startswith(trainable))


def make_sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)


def random_batch(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, list, list]:
    """Images (B, 3, size, size) in [0, 1] and per-image xyxy boxes and fcoslab labels in [0, 80)."""
    g = torch.Generator().manual_seed(SEED)
    images = torch.rand(batch, 3, size, size, generator=g)
    wh = size * (0.05 + 0.55 * torch.rand(batch, BOXES_PER_IMAGE, 2, generator=g))
    xy = (size - wh) * torch.rand(batch, BOXES_PER_IMAGE, 2, generator=g)
    boxes = torch.cat([xy, xy + wh], dim=-1)
    labels = torch.randint(0, FCOSLAB_CLASSES, (batch, BOXES_PER_IMAGE), generator=g)
    return images.to(device), [b.to(device) for b in boxes], [l.to(device) for l in labels]


def count_params(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


class Side:
    """One detector with its train and inference steps on a fixed batch."""

    def __init__(self, name: str, model: nn.Module, train_step: Callable[[], None],
                 infer_step: Callable[[], list], prepare: Optional[Callable[[str], None]] = None):
        self.name, self.model, self.train_step, self.infer_step = name, model, train_step, infer_step
        self.prepare = prepare
        self.times: dict[str, list[float]] = {"train": [], "infer": []}
        self.detections = 0.0  # mean detections per image of the last inference

    def run(self, phase: str, device: torch.device, record: bool) -> None:
        self.model.train(phase == "train")
        if self.prepare is not None:
            self.prepare(phase)
        result, seconds = common.once(self.train_step if phase == "train" else self.infer_step, device)
        if record:
            self.times[phase].append(seconds)
        if phase == "infer":
            self.detections = sum(len(r["scores"]) for r in result) / len(result)


def fcoslab_side(args, device: torch.device, precision: Precision, images, boxes, labels) -> Side:
    cfg = fcoslab_config(args.score_thresh)
    torch.manual_seed(SEED)
    model = build_model(cfg.model, FCOSLAB_CLASSES).to(device)
    optimizer = make_sgd(model)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)
    h, w = images.shape[-2:]
    padded = F.pad(images, (0, -w % 128, 0, -h % 128))  # fcoslab needs a multiple of 128 (its loader pads)
    gt_boxes, gt_labels = pad_targets(boxes, labels)
    criterion = FCOSCriterion(cfg.assign, cfg.loss)
    sizes = torch.tensor([[h, w]] * len(images), dtype=torch.int64, device=device)

    def train_step() -> None:
        with precision.autocast(device):
            out = model(padded)
        loss = criterion(out, gt_boxes, gt_labels)[0]["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    batch = {"images": padded, "image_sizes": sizes, "orig_sizes": sizes, "image_ids": list(range(len(images)))}

    def infer_step() -> list:  # fcoslab's inference path: what evaluate, predict and the viewer run
        return [det for _, det in predict_batches(model, [batch], cfg, device, precision)]

    def prepare(phase: str) -> None:  # the layout of each phase (channels-last for inference on a CPU)
        inference_layout(model, device) if phase == "infer" else training_layout(model)

    return Side("fcoslab", model, train_step, infer_step, prepare)


def torchvision_side(args, device: torch.device, precision: Precision, images, boxes, labels) -> Side:
    torch.manual_seed(SEED)
    model = torchvision.models.detection.fcos_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=TORCHVISION_CLASSES, min_size=args.size,
        max_size=args.size, score_thresh=args.score_thresh, nms_thresh=0.6, detections_per_img=100,
        topk_candidates=1000)
    freeze_like_pretrained(model)
    model.to(device)
    optimizer = make_sgd(model)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)
    image_list = list(images.unbind(0))
    # The same boxes; labels shifted to 1..80 (COCO-style ids below 91, 0 being background there).
    targets = [{"boxes": b, "labels": l + 1} for b, l in zip(boxes, labels)]

    def train_step() -> None:
        with precision.autocast(device):
            loss = sum(model(image_list, targets).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def infer_step() -> list:
        with torch.no_grad(), precision.autocast(device):
            return model(image_list)

    return Side("torchvision", model, train_step, infer_step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512,
                        help="image side in pixels (default 512); use a multiple of 128, or fcoslab computes "
                             "on the zero-padded batch and torchvision on a multiple of 32")
    parser.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    parser.add_argument("--iters", type=int, default=5, help=f"timed steps per model, after {WARMUP} warm-up")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--score-thresh", type=float, default=0.05,
                        help="detection score threshold of both models (default 0.05)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision by fcoslab's runtime.precision=auto rule (default: float32)")
    args = parser.parse_args()
    if args.size < 32 or args.batch < 1 or args.iters < 1:
        parser.error("--size must be at least 32, --batch and --iters at least 1")

    device = resolve_device(args.device)
    precision = choose_precision("auto" if args.amp else "off", device)
    images, boxes, labels = random_batch(args.batch, args.size, device)
    sides = [fcoslab_side(args, device, precision, images, boxes, labels),
             torchvision_side(args, device, precision, images, boxes, labels)]

    for phase in ("infer", "train"):
        for _ in range(WARMUP):
            for side in sides:
                side.run(phase, device, record=False)
        for i in range(args.iters):
            for side in (sides if i % 2 == 0 else sides[::-1]):
                side.run(phase, device, record=True)

    fl, tv = sides
    common.print_header()
    print(f"device: {device} ({common.device_name(device)})")
    print(f"input: {args.batch} x 3 x {args.size} x {args.size} random images, {BOXES_PER_IMAGE} random boxes each; "
          f"precision {precision.name} ({precision.reason}); score threshold {args.score_thresh}; "
          f"median of {args.iters} timed steps after {WARMUP} warm-up, the two models alternating")
    cupy = ops.backends()["cupy"]
    on_gpu = cupy == "available" and device.type == "cuda"
    print(f"fcoslab ops: {'CuPy kernels' if on_gpu else 'torch reference (assignment, focal loss), torchvision NMS'}"
          + ("" if cupy == "available" else f" (cupy: {cupy})"))
    for side, classes in ((fl, FCOSLAB_CLASSES), (tv, TORCHVISION_CLASSES)):
        total, trainable = count_params(side.model)
        print(f"{side.name}: {classes} class logits, {total:,} parameters ({trainable:,} trainable)")
    print()
    print("| step | fcoslab s/step | torchvision s/step | fcoslab / torchvision |\n|---|---:|---:|---:|")
    for phase, label in (("train", "train (forward, loss, backward, SGD)"),
                         ("infer", "inference (forward, post-processing)")):
        a, b = statistics.median(fl.times[phase]), statistics.median(tv.times[phase])
        print(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
    print(f"\ndetections per image in the last inference: fcoslab {fl.detections:.1f}, "
          f"torchvision {tv.detections:.1f}")
    print(f"note: fcoslab has {FCOSLAB_CLASSES} class logits, torchvision {TORCHVISION_CLASSES} (COCO ids); "
          "see this script's docstring for the remaining differences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
