"""torchrun with the gloo backend on CPU, and crash safety under SIGKILL (resume loses nothing)."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, set_args


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def torchrun(nproc, *args, port, wait=True):
    """``torchrun --nproc_per_node=NPROC -m fcoslab ARGS``: the finished process, or (``wait=False``) a
    function that waits for it, so that two launches overlap (each launcher first imports torch alone)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "fcoslab", *args]
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # no pipe to fill while another waits
    p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env(), cwd=ROOT)

    def finished():
        p.wait(timeout=600)
        with out, err:
            out.seek(0), err.seek(0)
            return subprocess.CompletedProcess(cmd, p.returncode, out.read(), err.read())
    return finished() if wait else finished


def in_process(*args):
    """The command line in this process, on one thread as :func:`env` gives the subprocesses: the same run
    to the last bit, without a subprocess's 6-7 s of imports."""
    from fcoslab.apps.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(list(args))
    finally:
        torch.set_num_threads(threads)


def weights(run):
    return torch.load(Path(run) / "last.pt", weights_only=True)["model"]


# frozen BN: BatchNorm statistics are per process on CPU, so only a frozen backbone is exactly comparable;
# float32: bf16 autocast rounds differently for a batch of 2 and a batch of 4; SGD: Adam divides by
# sqrt(v), which turns float rounding in near-zero gradients into visible weight differences
EXACT = {"model.frozen_bn": True, "train.batch_size": 4, "data.hflip": 0.5, "train.eval_every": 1, "runtime.precision": "off",
         "train.optimizer": "sgd", "train.lr": 0.01}


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_whole_batch(shapes_dir, tmp_path):
    assert in_process("train", "--quiet", "--out", str(tmp_path / "one"), "--set", *set_args(shapes_dir, **EXACT)) == 0
    two = torchrun(2, "train", "--quiet", "--out", str(tmp_path / "two"), "--set", *set_args(shapes_dir, **EXACT),
                   port=29611, wait=False)
    # two processes, each accumulating two micro-batches of one image: still the step of the whole batch
    acc = torchrun(2, "train", "--quiet", "--out", str(tmp_path / "acc"), "--set",
                   *set_args(shapes_dir, **EXACT, **{"train.accumulate": 2}), port=29613, wait=False)
    two, acc = two(), acc()
    assert two.returncode == 0, two.stderr[-3000:]
    assert acc.returncode == 0, acc.stderr[-3000:]
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    assert len(h1) == len(h2) == 1 and h1[0]["step"] == h2[0]["step"] == 6
    assert h2[0]["loss"] == pytest.approx(h1[0]["loss"], rel=1e-4)
    assert h2[0]["AP"] == pytest.approx(h1[0]["AP"], abs=1e-3)  # evaluation split over ranks, then gathered
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    wa = weights(tmp_path / "acc")
    for k in w1:
        torch.testing.assert_close(wa[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    # resume under torchrun: one more epoch, appended once
    more = torchrun(2, "train", "--quiet", "--resume", str(tmp_path / "two"), "--set", "train.epochs=2", port=29612)
    assert more.returncode == 0, more.stderr[-3000:]
    assert [h["epoch"] for h in json.loads((tmp_path / "two" / "history.json").read_text())] == [1, 2]


def test_losses_normalise_by_the_global_number_of_positives():
    from fcoslab.config import LossConfig
    from fcoslab.modeling.loss import fcos_loss

    torch.manual_seed(0)
    P, K = 30, 3
    outputs = {"cls_logits": torch.randn(1, P, K), "bbox_ltrb": torch.rand(1, P, 4) + 1, "centerness": None}
    labels = torch.full((1, P), -1)
    labels[0, :4] = torch.tensor([0, 1, 2, 0])
    targets = {"labels": labels, "ltrb": torch.rand(1, P, 4) + 1, "centerness": torch.zeros(1, P)}
    local, local_stats = fcos_loss(outputs, targets, LossConfig())
    # as if another rank had 12 positives: the mean count over 2 ranks is 8, not this rank's 4
    reduced, reduced_stats = fcos_loss(outputs, targets, LossConfig(), all_reduce=lambda t: (t + 12) / 2)
    assert local_stats["num_pos"] == 4 and reduced_stats["num_pos"] == 8
    assert set(local) == {"loss", "cls", "box", "centerness"}  # terms only; statistics apart
    torch.testing.assert_close(reduced["cls"], local["cls"] * 4 / 8)


def _checkpoint_stamp(run: Path):
    path = run / "last.pt"
    return path.stat().st_mtime_ns if path.exists() else None


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(shapes_dir, tmp_path):
    over = set_args(shapes_dir, **{"train.epochs": 4, "train.eval_every": 1, "train.checkpoint_every": 2,
                               "model.frozen_bn": True})
    assert in_process("train", "--quiet", "--out", str(tmp_path / "ref"), "--set", *over) == 0
    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for _ in range(2):
        args = ["train", "--quiet", "--resume", str(run)] if (run / "last.pt").exists() else \
            ["train", "--quiet", "--out", str(run), "--set", *over]
        before = _checkpoint_stamp(run)
        p = subprocess.Popen([sys.executable, "-m", "fcoslab", *args], env=env(), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while p.poll() is None and _checkpoint_stamp(run) == before and time.time() < deadline:
            time.sleep(0.02)  # wait until this process has made progress (a new checkpoint)...
        time.sleep(rng.uniform(0.0, 0.8))  # ...then kill it at a random moment: training, evaluating or saving
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills == 2, "the run finished before it could be killed twice; lengthen it"
    assert in_process("train", "--quiet", "--resume", str(run)) == 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]  # each evaluation exactly once
    w_ref, w_run = weights(tmp_path / "ref"), weights(run)
    assert all(torch.equal(w_run[k], w_ref[k]) for k in w_ref)  # bit for bit
    ref_hist = json.loads((tmp_path / "ref" / "history.json").read_text())
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in hist] for hist in (history, ref_hist)]
    assert strip[0] == strip[1]  # losses and every metric, to the last digit
