"""Training never loses more than the interval the user chose: a failed evaluation, Ctrl-C (SIGINT),
SIGTERM and time-based checkpoints, each followed by a resume that gives the uninterrupted result bit for
bit (history and weights); a run that fails before its first save leaves no folder behind."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from fcoslab.config import load_config
from fcoslab.runfolder import RunFolder
from fcoslab.engine.stopping import TrainingStopped
from fcoslab.engine.trainer import Trainer, train
from helpers import ROOT, set_args, tiny_overrides

EPOCHS = {"train.epochs": 2, "train.eval_every": 1, "model.frozen_bn": True}  # 6 steps an epoch


def config(shapes_dir, **extra):
    return load_config("shapes", tiny_overrides(shapes_dir, **{**EPOCHS, **extra}))


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def assert_same_run(run, reference):
    """History (but for the wall-clock seconds) and final weights equal, bit for bit."""
    assert without_seconds(RunFolder(run).read_history()) == without_seconds(RunFolder(reference).read_history())
    got, want = RunFolder(run).load(), RunFolder(reference).load()
    assert got["step"] == want["step"] and got["epoch"] == want["epoch"]
    for k, v in want["model"].items():
        assert torch.equal(got["model"][k], v), k


@pytest.fixture(scope="module")
def reference(shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    train(config(shapes_dir), out, progress=False)
    return out


def test_a_failed_evaluation_keeps_the_epoch_and_resume_evaluates_it(shapes_dir, tmp_path, reference, monkeypatch):
    run = tmp_path / "run"
    real = Trainer._evaluations

    def broken(self):
        raise RuntimeError("cannot read image val_005.jpg: Truncated File Read")

    monkeypatch.setattr(Trainer, "_evaluations", broken)
    with pytest.raises(RuntimeError, match="Truncated"):
        train(config(shapes_dir), run, progress=False)
    saved = RunFolder(run).load()
    assert saved["epoch"] == 1 and saved["step"] == 6 and saved["pending_eval"]  # the epoch's training is kept
    assert RunFolder(run).read_history() == []
    monkeypatch.setattr(Trainer, "_evaluations", real)
    train(None, run, resume=True, progress=False)  # evaluates epoch 1 first, then trains epoch 2
    assert [h["epoch"] for h in RunFolder(run).read_history()] == [1, 2]
    assert_same_run(run, reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_a_random_step_saves_it_and_resume_gives_the_uninterrupted_run(shapes_dir, tmp_path, reference,
                                                                                   signum):
    run = tmp_path / "run"
    at = random.Random(int(signum)).randint(1, 11)  # any of the 12 steps but the last

    def send(record):
        if record["step"] == at:
            os.kill(os.getpid(), signum)  # the handler runs here, in the middle of the step loop

    before = signal.getsignal(signum)  # SIG_IGN for SIGINT under nohup or `cmd &`
    with pytest.raises(TrainingStopped) as stopped:
        train(config(shapes_dir), run, progress=False, on_step=send)
    assert stopped.value.exit_code == 128 + signum
    assert f"stopped after step {at}" in str(stopped.value) and f"--resume {run}" in str(stopped.value)
    assert RunFolder(run).load()["step"] == at
    assert signal.getsignal(signum) == before  # handlers restored
    train(None, run, resume=True, progress=False)
    assert_same_run(run, reference)


def test_a_signal_during_evaluation_stops_at_once_and_resume_evaluates(shapes_dir, tmp_path, reference, monkeypatch):
    run = tmp_path / "run"
    real = Trainer._evaluations

    def interrupted(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("the signal did not stop the evaluation")

    monkeypatch.setattr(Trainer, "_evaluations", interrupted)
    with pytest.raises(TrainingStopped, match="evaluation of epoch 1 interrupted"):
        train(config(shapes_dir), run, progress=False)
    monkeypatch.setattr(Trainer, "_evaluations", real)
    train(None, run, resume=True, progress=False)
    assert_same_run(run, reference)


def test_time_based_checkpoints_save_mid_epoch_and_change_nothing(shapes_dir, tmp_path, reference, monkeypatch):
    saves = []
    real_save = RunFolder.save
    monkeypatch.setattr(RunFolder, "save", lambda self, state: (saves.append(state["batch_in_epoch"]),
                                                                real_save(self, state)))
    clock = iter(range(0, 10 ** 6, 7))  # each reading of the clock 7 s later: due every 3 steps at 0.3 min
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    run = tmp_path / "run"
    train(config(shapes_dir, **{"train.checkpoint_minutes": 0.3}), run, progress=False)
    assert any(0 < b < 6 for b in saves), saves  # mid-epoch saves happened
    assert_same_run(run, reference)


def test_a_run_that_fails_before_its_first_save_leaves_no_folder(shapes_dir, tmp_path, monkeypatch):
    run = tmp_path / "new" / "run"

    def broken(self, batch):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Trainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(config(shapes_dir, **{"train.tensorboard": True}), run, progress=False)
    assert not run.exists()
    kept = tmp_path / "kept"  # a folder with the user's own files is never removed, only what the run wrote
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        train(config(shapes_dir), kept, progress=False)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_resume_without_a_checkpoint_says_what_to_do(shapes_dir, tmp_path):
    from fcoslab.apps.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2


def _wait_for(path, process, seconds=120):
    deadline = time.time() + seconds
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)


def test_the_command_line_saves_on_a_signal_and_exits_128_plus_it(shapes_dir, tmp_path):
    """Ctrl-C and SIGTERM, each to a command line of its own (the two run side by side: a process's imports
    take 6-7 s on 2 cores)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = set_args(shapes_dir, **{"train.epochs": 50, "train.eval_every": 50})
    runs = {signum: tmp_path / signal.Signals(signum).name for signum in (signal.SIGINT, signal.SIGTERM)}
    processes = {signum: subprocess.Popen([sys.executable, "-m", "fcoslab", "train", "--quiet", "--out", str(run),
                                           "--set", *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True) for signum, run in runs.items()}
    for signum, p in processes.items():
        _wait_for(runs[signum] / "config.json", p)  # written just before the first step
    time.sleep(1.0)
    for signum, p in processes.items():
        p.send_signal(signum)
    for signum, p in processes.items():
        _, err = p.communicate(timeout=120)
        assert p.returncode == 128 + signum, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"fcoslab: {signal.Signals(signum).name}: stopped after step") and "--resume" in last
        step = RunFolder(runs[signum]).load()["step"]
        assert step >= 1 and f"stopped after step {step} " in last
        assert json.loads((runs[signum] / "history.json").read_text()) == []


def test_ranks_agree_on_a_stop_and_a_checkpoint_asked_by_any_of_them(monkeypatch):
    """Under torchrun each rank adds its flags to the step's one all-reduce: a signal or a due checkpoint on
    another rank stops or saves this one at the same step (here the other rank is simulated)."""
    from fcoslab import distributed as dist
    from fcoslab.engine.stopping import StopRequests

    trainer = Trainer.__new__(Trainer)  # only the state _agree reads
    trainer.cfg = load_config("shapes", {"train.checkpoint_minutes": 10.0})
    trainer.stop, trainer.last_save = StopRequests(), time.monotonic()
    other = {"stop": 0.0, "due": 0.0}
    monkeypatch.setattr(dist, "all_reduce_mean",
                        lambda t: (t + torch.tensor([1.0, other["stop"], other["due"]])) / 2)
    assert trainer._agree(torch.tensor(1.0)) == 1.0 and not trainer.stop_agreed and not trainer.save_due
    other["due"] = 1.0
    assert trainer._agree(torch.tensor(1.0)) == 1.0 and trainer.save_due and not trainer.stop_agreed
    other["stop"] = 1.0
    assert trainer._agree(torch.tensor(0.0)) == 0.5 and trainer.stop_agreed  # a non-finite loss here: mean 0.5
