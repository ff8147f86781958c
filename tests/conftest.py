import os

import pytest

if "PYTEST_XDIST_WORKER" in os.environ:  # `pytest -n 2`: one thread a worker (two would oversubscribe 2 cores)
    os.environ["OMP_NUM_THREADS"] = "1"
else:  # the 2-core machines the suite is sized for
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A tiny shapes dataset shared by the tests (24 train, 8 val images of 64 px)."""
    from fcoslab.data import make_shapes

    out = tmp_path_factory.mktemp("shapes")
    make_shapes(out, train=24, val=8, image_size=64, seed=1)
    return out


def pytest_collection_modifyitems(config, items):
    import torch

    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture(scope="session")
def notebook_kernel():
    """One Jupyter kernel for every notebook the suite executes, each from an empty namespace
    (:func:`fcoslab.apps.notebooks.shared_kernel`): a kernel's start and imports take 8-10 s on 2 cores."""
    from fcoslab.apps.notebooks import shared_kernel

    with shared_kernel() as kernel:
        yield kernel
