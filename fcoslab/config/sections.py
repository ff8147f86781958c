"""The sections of a config, one frozen dataclass each: every key with its type, default and meaning.

The comment written with a field is its documentation (``fcoslab config PRESET --explain``, docs/config.md),
and a ``Literal[...]`` type is the list of its valid values, checked when a value is typed (:mod:`.coerce`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass(frozen=True)
class DataConfig:
    train_ann: str = "data/shapes/train.json"  # COCO json of the training set
    train_images: str = "data/shapes/train"  # folder its file_name entries are relative to
    val_ann: str = "data/shapes/val.json"  # COCO json of the validation set
    val_images: str = "data/shapes/val"  # folder of the validation images
    # Training resize: shorter side drawn from min_size (scale jitter), longer side at most max_size.
    min_size: tuple[int, ...] = (800,)
    max_size: int = 1333  # longer side at most this (training and evaluation)
    test_min_size: int = 800  # evaluation and prediction: shorter side
    hflip: float = 0.5  # probability of a horizontal flip in training
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength in training; 0 = off
    num_workers: int = 2  # data-loader processes (0: load in the training process)
    cache_images: bool = False  # keep decoded images in memory (small datasets; use with num_workers=0)
    # Before the first epoch, check every training and validation image: header (format, size, and that the
    # file is complete), deep (decode each in full) or off (fcoslab.data.image_check)
    check_images: Literal["header", "deep", "off"] = "header"
    # antialias: uint8 resize with antialiasing to round(side * scale); interpolate: torchvision's detection
    # transform (float bilinear without antialiasing, sides floor(side * scale)), for imported torchvision models
    resize: Literal["antialias", "interpolate"] = "antialias"
    # >0: square inputs of this side: training takes a random resized crop (area 30-100%, aspect 3:4-4:3) of
    # the image, evaluation resizes the whole image to the square (aspect not kept); min_size etc. unused
    square_size: int = 0
    min_box_area: float = 0.0  # training boxes smaller than this (px^2, after the resize) are dropped
    keep_small_boxes: bool = False  # keep boxes under 1 px wide or high (after the resize), as torchvision does
    pad_with_mean: bool = False  # pad with the ImageNet mean colour, i.e. zeros after normalisation (torchvision)
    # Repeat-factor sampling for rare classes (LVIS; fcoslab.data.repeat); 0 = off. With f_c the fraction of
    # training images holding class c, an image is shown r = max over its classes of max(1, sqrt(t / f_c))
    # times a pass (its fraction by chance); an epoch is then round(sum(r)) images, or train.images_per_epoch
    repeat_threshold: float = 0.0


@dataclass(frozen=True)
class ShapesConfig:
    """The generated shapes set that ``data``'s paths point at (a config without this section never
    generates anything): made into the annotation files' folder when missing or made otherwise."""
    train: int = 4608  # training images generated
    val: int = 128  # validation images generated
    image_size: int = 128  # side of the square images, px
    seed: int = 0  # generator seed
    min_side: float = 0.12  # smallest object side as a fraction of image_size


# pyramids: P3 or P2 up to P5 from the backbone, then none, P6 or P6-P7
VALID_STRIDES = tuple(tuple(2 ** k for k in range(first, last + 1)) for first in (3, 2) for last in (5, 6, 7))


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = 0  # 0: taken from the training annotation file
    backbone: Literal["resnet10", "resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"  # the ResNet depth
    backbone_width: int = 64  # channels of the first stage (resnet10/18/34 only; 64 = torchvision's)
    backbone_weights: str = ""  # local state_dict file; "" = random init
    torchvision_weights: bool = False  # use torchvision's weight enum (needs network or its cache)
    init_from: str = ""  # a run folder or checkpoint: every tensor whose name and shape fit (fcoslab.modeling.finetune)
    init_class_map: tuple[str, ...] = ()  # "old:new" class names whose classifier rows carry over (equal names do)
    frozen_bn: bool = True  # backbone BatchNorm with fixed statistics and affine (pretrained backbones)
    # each residual block's last BatchNorm starts at 0, so the block starts as the identity (Goyal et al. 2017);
    # for backbones trained from scratch (not with frozen_bn, whose affine never trains)
    zero_init_residual: bool = False
    freeze_at: int = 2  # 0 none, 1 stem, 2 stem + layer1, ... up to 5
    fpn_channels: int = 256  # channels of the FPN and the heads
    p6_from: Literal["p5", "c5"] = "p5"  # P6 from the FPN's P5 or the backbone's C5
    head_convs: int = 4  # 3x3 convs in each head tower
    head_norm: Literal["gn", "none"] = "gn"  # GroupNorm(32) in the head towers, or none
    fpn_norm: Literal["none", "gn"] = "none"  # GroupNorm after the FPN's lateral and output convs (from-scratch detectors)
    centerness: bool = True  # predict center-ness (on the regression tower) and use it in scores
    regression: Literal["exp", "relu_stride"] = "relu_stride"  # exp(x) * scale, or relu(x) * scale * stride
    # P3-P7; (8, 16, 32) = P3-P5 only; (4, 8, ...) adds P2 for small objects (VALID_STRIDES lists them)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    point_offset: float = 0.5  # points at (i + offset) * stride; torchvision's FCOS uses 0
    # stride: points spaced by the level's stride; input_ratio: by padded input size // level size, as
    # torchvision's anchor generator does (differs on P6/P7 when inputs are padded to less than 128)
    point_spacing: Literal["stride", "input_ratio"] = "stride"
    level_scales: bool = True  # a learnt scale per level on the regression (torchvision's FCOS has none)
    pad_multiple: int = 0  # inputs padded to a multiple of this; 0 = the largest stride
    prior_prob: float = 0.01  # initial foreground probability of the classifier's bias
    channels_last: bool = False  # channels-last memory format in training

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of ``pad_multiple``, by default the largest stride, so that each
        level is exactly half the one below (any multiple works: each level is ceil(half) of the one below)."""
        return self.pad_multiple or max(self.strides)


@dataclass(frozen=True)
class AssignConfig:
    # per level (lo, hi): a point may learn a box when max(l, t, r, b) is in [lo, hi] (assign.range_bounds)
    regress_ranges: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
    center_radius: Optional[float] = 1.5  # None turns center sampling off
    range_bounds: Literal["closed", "open"] = "closed"  # closed: lo <= max(l, t, r, b) <= hi; open: lo < max < hi (torchvision's FCOS)
    area_order: Literal["exact", "float32_1e8"] = "exact"  # exact: smallest area wins; float32_1e8: torchvision's max of float32(1e8 - area)
    # Which points learn which box (docs/assignment.md): fcos (inside the box, regress range, center sampling,
    # smallest area), atss (adaptive IoU threshold over the points nearest the box centre, Zhang et al. 2020)
    # or tal (task-aligned: the points whose predictions score and fit the box best, TOOD, Feng et al. 2021).
    # The loss and decoding are the same for all three; atss and tal ignore the four keys above.
    method: Literal["fcos", "atss", "tal"] = "fcos"
    atss_topk: int = 9  # atss: candidate points per box and level: the nearest to the box centre
    atss_anchor_scale: float = 8.0  # atss: a point's anchor box, for the IoU, is a square of side scale * stride
    tal_topk: int = 13  # tal: points that claim each box: the largest alignments among the points inside it
    tal_alpha: float = 1.0  # tal: alignment = score^alpha * IoU^beta (score: the box's class at the point)
    tal_beta: float = 6.0  # tal: exponent of the IoU of the point's predicted box with the box


@dataclass(frozen=True)
class LossConfig:
    box: Literal["iou", "giou"] = "giou"  # iou: -log IoU; giou: 1 - GIoU
    focal_alpha: float = 0.25  # focal loss weight of positives
    focal_gamma: float = 2.0  # focal loss focusing exponent
    # focal: 0/1 class targets (alpha, gamma above); quality_focal: a positive's target at its class is the IoU
    # of its predicted box with its box, by |target - p|^quality_beta-weighted BCE (GFL, Li et al. 2020)
    cls: Literal["focal", "quality_focal"] = "focal"
    quality_beta: float = 2.0  # quality_focal: exponent of |target - p|
    # what the center-ness branch learns (model.centerness): the center-ness of the point in its box, or
    # the IoU of the point's predicted box with its box (detached; an IoU-quality branch, as IoU-aware heads)
    quality: Literal["centerness", "iou"] = "centerness"
    box_weight: float = 1.0  # weight of the box (GIoU/IoU) loss
    centerness_weighted_box: bool = True  # weight box loss by center-ness targets (when center-ness is on)
    num_pos_per_process: bool = False  # True: each process divides by its own positives (torchvision under DDP)


@dataclass(frozen=True)
class DecodeConfig:
    score_thresh: float = 0.05  # candidates below this score are dropped
    pre_nms_topk: int = 1000  # per level
    nms_thresh: float = 0.6  # IoU of class-aware NMS
    class_agnostic_nms: bool = False  # True: boxes of different classes suppress each other too
    max_detections: int = 100  # detections kept an image


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12  # length of the run
    # Images per epoch; 0 = one pass over the training set. A fixed number gives a run the same length
    # (steps, warm-up, decays, evaluations) on any dataset: an epoch then draws that many images, pass
    # after pass over the set.
    images_per_epoch: int = 0
    batch_size: int = 16  # global images per optimizer step: split over processes under torchrun
    # micro-batches each process's share is split into, one forward and backward each, before one optimizer step:
    # the same step as one batch (the loss is normalised over the whole batch), in less memory
    accumulate: int = 1
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD with momentum, or AdamW
    lr: float = 0.01  # peak learning rate (for the global batch)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # on weights only (not norms, biases, scales)
    warmup_iters: int = 500  # at most a quarter of the run
    warmup_factor: float = 1.0 / 3  # learning rate at step 0, a fraction of lr
    lr_schedule: Literal["step", "cosine"] = "step"  # step: x lr_gamma at each of lr_steps; cosine: to 0 at the last step
    lr_steps: tuple[float, ...] = (8, 11)  # epochs (fractions allowed) after which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1  # factor at each of lr_steps
    grad_clip: float = 0.0  # 0 = off
    freeze: Literal["none", "backbone", "backbone_fpn"] = "none"  # backbone_fpn: head only; parameters kept fixed (fcoslab.modeling.finetune)
    freeze_epochs: int = 0  # ... for the first N epochs; 0 = the whole run
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    checkpoint_every: int = 0  # iterations between mid-epoch checkpoints; 0 = epoch ends only
    # Minutes between mid-epoch checkpoints (0 = off): a kill -9 loses at most this; Ctrl-C/SIGTERM save at once
    checkpoint_minutes: float = 10.0
    max_nonfinite: int = 5  # consecutive non-finite losses that stop training
    # an exponential moving average of the weights (fcoslab.engine.ema): evaluated beside the raw weights, and the
    # weights that best.pt, predict and export use
    ema: bool = False
    ema_decay: float = 0.9998  # the average's decay once warmed up (YOLOX's and mmdetection's default)
    ema_warmup: float = 2000.0  # steps over which the decay rises from 0 (1 - exp(-updates / ema_warmup))
    early_stop: int = 0  # stop after this many evaluations without a better eval.best_metric; 0 = off
    seed: int = 0  # initialisation, order of images and augmentations
    tensorboard: bool = False  # also log to RUN/tensorboard (history.json stays the record)
    log_every: int = 20  # steps between TensorBoard's loss and lr points (also step 1, and the last before an eval)


# The scalar history keys of an evaluation: COCO's 12 summary numbers (in pycocotools' order), VOC's AP
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
VOC_STATS = ("voc_mAP", "voc_mAP50", "voc_mAP50_11pt", "voc_mAP75")


def metric_keys(metrics: str) -> list[str]:
    """The scalar history keys an evaluation with ``eval.metrics=metrics`` records."""
    return list(COCO_STATS) * (metrics in ("coco", "both")) + list(VOC_STATS) * (metrics in ("voc", "both"))


@dataclass(frozen=True)
class EvalConfig:
    """What every evaluation computes and records in ``history.json``."""
    metrics: Literal["coco", "voc", "both"] = "coco"  # COCO's 12 numbers and per-class AP; VOC AP (fcoslab.evaluation.voc)
    best_metric: str = "AP"  # the history key (higher is better) that picks best.pt, e.g. AP50 or voc_mAP50
    backend: Literal["pycocotools", "faster"] = "pycocotools"  # faster-coco-eval, the same COCO numbers (1e-4) sooner
    batch_size: int = 8  # images per evaluation batch (per process), in training's evaluations, evaluate and predict
    loss: bool = True  # also record the validation loss (its terms: val_loss, val_loss_cls, ...) in training's evaluations
    # Test-time augmentation in every evaluation and prediction: each image is also seen flipped and at
    # tta_sizes, each view's boxes mapped back to the image's pixels and all merged by decode's NMS
    # (decode.nms_thresh, class_agnostic_nms, max_detections; fcoslab.inference.tta)
    tta: bool = False
    tta_flip: bool = True  # with tta: a left-right flipped view of each size
    # with tta: test sizes beside data.test_min_size (shorter sides, data.max_size scaled alike; square sides for
    # data.square_size configs)
    tta_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and in what precision the model runs: training, evaluation and prediction alike."""
    device: str = "auto"  # auto (CUDA when there is one) | cpu | cuda | cuda:N
    # auto: on CUDA bfloat16 where supported, else float16; on a CPU bfloat16 where native (AVX512-BF16/AMX),
    # else float32. fp16 and bf16 force that autocast precision, off is float32
    precision: Literal["auto", "fp16", "bf16", "off"] = "auto"
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
