"""Helpers shared by the tests (fixtures live in conftest.py)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(shapes_dir, **extra):
    """Overrides that make the shapes preset train in seconds on the tiny set (float32: CPUs without native
    bfloat16 emulate it many times slower). The four data paths alone point the preset at the tiny set."""
    d = shapes_dir
    base = {"data.train_ann": str(d / "train.json"), "data.train_images": str(d / "train"),
            "data.val_ann": str(d / "val.json"), "data.val_images": str(d / "val"),
            "data.min_size": [64], "data.max_size": 64, "data.test_min_size": 64, "data.num_workers": 0,
            "model.fpn_channels": 32, "model.head_convs": 1, "train.batch_size": 4, "train.epochs": 1,
            "train.warmup_iters": 2, "train.amp": "off", "train.images_per_epoch": 0}
    base.update(extra)
    return base


def set_args(shapes_dir, **extra):
    """:func:`tiny_overrides` as the command line's ``--set KEY=VALUE`` arguments."""
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in tiny_overrides(shapes_dir, **extra).items()]
