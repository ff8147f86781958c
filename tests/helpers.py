"""Helpers shared by the tests (fixtures live in conftest.py)."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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


# (width, height, mode): landscape, portrait, a grayscale one, a wide strip, squares; several share a
# padded size at a multiple of 32 once resized (shorter side 96: a group of 5 at 96 x 128; 288: at 288 x 384)
MIXED = [(128, 96, "RGB"), (96, 128, "RGB"), (125, 94, "L"), (200, 60, "RGB"), (128, 96, "RGB"), (150, 150, "RGB"),
         (128, 96, "RGB"), (96, 128, "RGB"), (160, 120, "RGB")]


def write_mixed_set(root, sizes=MIXED, categories=((1, "person"), (3, "car")), seed=0):
    """Smooth random pictures of ``sizes`` as PNGs and a COCO json with a box or two each; the json leaves
    out the width and height of one image (its file's header gives them)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i, (w, h, mode) in enumerate(sizes):
        coarse = rng.integers(0, 256, (h // 12 + 1, w // 12 + 1, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((w, h), Image.BILINEAR).convert(mode).save(root / "images" / f"{i}.png")
        images.append({"id": 10 + i, "file_name": f"{i}.png"} | ({} if i == 7 else {"width": w, "height": h}))
        for k in range(1 + i % 2):
            annotations.append({"id": len(annotations) + 1, "image_id": 10 + i, "category_id": categories[k][0],
                                "bbox": [w * 0.1 + 20 * k, h * 0.2, w * 0.4, h * 0.5]})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": n} for c, n in categories]}
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json", root / "images"


def spread_score_model(cfg):
    """A seeded random network of ``cfg`` for 2 classes, scores spread around the threshold, in inference layout."""
    from fcoslab.inference.predictor import inference_layout
    from fcoslab.modeling.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model, 2).eval()
    with torch.no_grad():
        model.head.cls_logits.bias.normal_(-1.0, 1.0)
    inference_layout(model, torch.device("cpu"))
    return model


def same_detections(a, b) -> bool:
    return [i for i, _ in a] == [i for i, _ in b] and all(
        da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da) for (_, da), (_, db) in zip(a, b))
