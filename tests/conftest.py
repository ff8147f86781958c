import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A tiny shapes dataset shared by the tests (24 train, 8 val images of 64 px)."""
    from fcoslab.datasets import make_shapes

    out = tmp_path_factory.mktemp("shapes")
    make_shapes(out, train=24, val=8, image_size=64, seed=1)
    return out


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


def pytest_collection_modifyitems(config, items):
    import torch

    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
