"""Helpers shared by the tests (fixtures live in conftest.py)."""

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(shapes_dir, **extra):
    """Overrides that make the shapes preset train in seconds on the tiny set (float32: CPUs without native
    bfloat16 emulate it many times slower). The four data paths alone point the preset at the tiny set."""
    d = shapes_dir
    base = {"data.train_ann": str(d / "train.json"), "data.train_images": str(d / "train"),
            "data.val_ann": str(d / "val.json"), "data.val_images": str(d / "val"),
            "data.min_size": [64], "data.max_size": 64, "data.test_min_size": 64, "data.num_workers": 0,
            "model.fpn_channels": 32, "model.head_convs": 1, "train.batch_size": 4, "train.epochs": 1,
            "train.warmup_iters": 2, "runtime.precision": "off", "train.images_per_epoch": 0}
    base.update(extra)
    return base


def set_args(shapes_dir, **extra):
    """:func:`tiny_overrides` as the command line's ``--set KEY=VALUE`` arguments."""
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in tiny_overrides(shapes_dir, **extra).items()]


def torchvision_fcos(seed: int = 0, **kwargs):
    """torchvision's FCOS R-50-FPN with seeded random weights whose scores spread around the threshold."""
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(seed)
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
    with torch.no_grad():
        for m in model.backbone.body.modules():  # BatchNorm statistics as a trained network has them
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 0.6)
        head = model.head.classification_head
        head.cls_logits.weight.normal_(0, 0.05)
        head.cls_logits.bias.normal_(-1.0, 1.0)  # some of the 91 classes score above 0.2, most do not
    return model.eval()
