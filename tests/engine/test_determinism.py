"""The same seed gives the same run, bit for bit on a CPU, whatever the number of loader workers (the
resumed-run cases are in test_stopping.py and test_distributed.py; 1 against 2 processes agree to float
rounding only: test_distributed.py)."""

import torch

from fcoslab.config import load_config
from fcoslab.runfolder import RunFolder
from fcoslab.engine.trainer import train
from helpers import tiny_overrides


def test_zero_or_two_loader_workers_give_a_bit_identical_history(shapes_dir, tmp_path):
    runs = {}
    for workers in (0, 2):
        cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"data.num_workers": workers,
                                                                  "data.hflip": 0.5, "data.color_jitter": 0.2}))
        runs[workers] = train(cfg, tmp_path / f"w{workers}", progress=False)
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in runs[w]] for w in (0, 2)]
    assert strip[0] == strip[1] and len(strip[0]) == 1
    a, b = RunFolder(tmp_path / "w0").load()["model"], RunFolder(tmp_path / "w2").load()["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
