"""The CPU side of the one-script GPU check (benchmarks/gpu_check.sh and its Python stages): each stage runs
at a tiny size on the CPU and writes its record with the expected columns; the script parses, goes on past
a failing and a hanging stage, and assembles its report from what the stages left."""

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_ddp_check  # noqa: E402
import gpu_levers  # noqa: E402
import gpu_report  # noqa: E402
import gpu_stages  # noqa: E402

SCRIPT = BENCH / "gpu_check.sh"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads made a tiny step 100x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> str:
    """The shapes preset with a network a few times smaller (width 8, 16 FPN channels, one head conv), so
    that a step takes milliseconds on a shared 2-core CPU: these tests check the plumbing, not figures."""
    tree = json.loads((ROOT / "fcoslab" / "config" / "presets" / "shapes.json").read_text())
    tree["model"].update({"backbone_width": 8, "fpn_channels": 16, "head_convs": 1})
    path = tmp_path_factory.mktemp("micro") / "micro.json"
    path.write_text(json.dumps(tree))
    return str(path)


def tiny(micro: str) -> list[str]:
    return ["--device", "cpu", "--size", "64", "64", "--batch", "1", "--iters", "1", "--warmup", "0",
            "--presets", micro, "--precisions", "fp32"]


def record(work: Path, stage: str) -> dict:
    return json.loads((work / f"{stage}.json").read_text())


def table(doc: dict, key: str) -> dict:
    return next(t for t in doc["tables"] if t["key"] == key)


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_largest_batch_search():
    calls = []

    def fits(b):
        calls.append(b)
        return b <= 37

    for guess in (1, 20, 37, 40, 300):
        calls.clear()
        lo, hi, trials = gpu_stages.largest_batch(fits, guess, 256, lambda: 100.0)
        assert (lo, hi) == (37, 38) and len(trials) == len(calls) <= 12
    assert gpu_stages.largest_batch(lambda b: False, 8, 256, lambda: 100.0)[:2] == (0, 1)
    assert gpu_stages.largest_batch(lambda b: True, 3, 8, lambda: 100.0)[:2] == (8, 9)  # the cap: none failed
    lo, hi, trials = gpu_stages.largest_batch(fits, 20, 256, lambda: 0.0)  # no time: no trial, no answer
    assert (lo, hi, trials) == (0, 257, [])


def test_steps_stage_on_cpu(tmp_path, micro):
    gpu_stages.main(["steps", "--work", str(tmp_path), *tiny(micro)])
    steps = table(record(tmp_path, "steps"), "steps")
    assert tuple(steps["columns"]) == gpu_stages.STEP_COLUMNS
    assert [r["model"] for r in steps["rows"]] == ["torchvision", f"fcoslab {micro}"]
    fl = steps["rows"][1]
    assert fl["img/s"] > 0 and fl["GFLOP/img"] > 0 and fl["peak MiB"] is None and fl["time vs torchvision"] > 0
    from fcoslab.config import load_config
    from fcoslab.data.batching import padded_shape

    h, w = padded_shape(64, 64, load_config(micro).model.size_divisibility)  # 64 at P3-P5's largest stride, 32
    assert fl["input"] == f"{h}x{w}"  # padded to the preset's largest stride
    assert record(tmp_path, "steps")["data"]["rates"][f"{micro}/fp32"] == fl["img/s"]


def test_profile_and_maxbatch_stages_on_cpu(tmp_path, micro):
    gpu_stages.main(["profile", "--work", str(tmp_path), *tiny(micro)])
    doc = record(tmp_path, "profile")
    assert [r["phase"] for r in table(doc, "phases")["rows"]] == ["forward", "loss (targets + loss)", "backward",
                                                                 "optimizer"]
    ops = table(doc, "ops")
    assert 3 <= len(ops["rows"]) <= 10 and ops["columns"] == ["rank", "name", "calls", "ms", "% of step"]
    assert "three largest operators" in ops["notes"][0]
    gpu_stages.main(["maxbatch", "--work", str(tmp_path), *tiny(micro), "--max-batch", "2"])
    row = table(record(tmp_path, "maxbatch"), "maxbatch")["rows"][0]
    assert (row["largest batch that fits"], row["smallest that failed"], row["trials"]) == (2, 3, "2ok")


def test_levers_on_cpu_a_failing_lever_is_a_row(tmp_path, monkeypatch, micro):
    monkeypatch.setitem(gpu_levers.LEVERS, "broken", ({"optimizer": "no_such_kind"}, {}, False, 0))
    gpu_levers.main(["--work", str(tmp_path), "--device", "cpu", "--size", "64", "64", "--batch", "1", "--iters", "1",
                     "--warmup", "0", "--preset", micro, "--precision", "fp32",
                     "--levers", "baseline", "broken", "cuda_graph", "nonsense", "optimizer_fused"])
    levers = table(record(tmp_path, "levers"), "levers")
    assert tuple(levers["columns"]) == gpu_levers.COLUMNS
    status = {r["lever"]: r["status"] for r in levers["rows"]}
    assert status["baseline"] == "ok" and status["optimizer_fused"] == "ok"
    assert status["broken"].startswith("failed: ValueError: optimizer kind")
    assert status["cuda_graph"] == "skipped: needs CUDA" and status["nonsense"].startswith("failed: unknown lever")
    fused = next(r for r in levers["rows"] if r["lever"] == "optimizer_fused")
    assert fused["speed-up vs baseline"] > 0 and fused["host syncs/step"] is None


def test_evalshare_decode_and_env_stages_on_cpu(tmp_path, micro):
    steps = gpu_report.StageRecord(tmp_path, "steps", "Training step", "fake")
    steps.set("rates", {f"{micro}/fp32": 100.0})  # the steps stage's rate: 118287 images in 1182.87 s
    gpu_stages.main(["evalshare", "--work", str(tmp_path), *tiny(micro), "--eval-images", "3", "--eval-sizes", "256x192",
                     "--score-images", "20"])
    doc = record(tmp_path, "evalshare")
    parts = table(doc, "evaluation")["rows"]
    assert len(parts) == 5 and parts[-1]["part"] == "evaluation in all"
    assert parts[0]["measured on images"] == 3 and parts[0]["seconds for 5000"] == pytest.approx(
        parts[0]["seconds"] * 5000 / 3)
    share = table(doc, "share")["rows"][0]
    assert share["rate from"] == "steps stage" and share["epoch training s"] == pytest.approx(1182.87)
    assert 0 < share["evaluation % of epoch"] < 100
    gpu_stages.main(["decode", "--work", str(tmp_path), *tiny(micro), "--decode-images", "3"])
    decode = table(record(tmp_path, "decode"), "decode")
    assert [r["decoder"] for r in decode["rows"]][0] == "CPU libjpeg-turbo, 1 thread"
    assert all(r["images/s"] > 0 for r in decode["rows"]) and "n/a (no CUDA device)" in " ".join(decode["notes"])
    gpu_stages.main(["env", "--work", str(tmp_path), "--device", "cpu"])
    env = record(tmp_path, "env")["data"]
    assert env["cpu_count"] == os.cpu_count() and env["bf16_matmul_tflops"] == "n/a (no CUDA)"
    assert {"torch", "torchvision", "cupy", "cuda", "driver", "gpu", "date", "faster_coco_eval"} <= set(env)


def test_ddp_check_in_one_process_with_gloo(tmp_path, monkeypatch, micro):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    rc = gpu_ddp_check.main(["--work", str(tmp_path), "--device", "cpu", "--preset", micro, "--images", "16",
                             "--val", "4"])
    rows = table(record(tmp_path, "ddp"), "ddp")["rows"]
    assert {r["check"]: r["result"] for r in rows} == {r["check"]: "pass" for r in rows} and len(rows) == 7, rows
    assert rc == 0 and "backend gloo, world 1" in rows[1]["detail"]


def test_report_assembly_from_stage_files(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    env = gpu_report.StageRecord(work, "env", "Environment", "fake")
    env.set("gpu", "NVIDIA H200")
    env.set("driver", "580.1")
    steps = gpu_report.StageRecord(work, "steps", "Training step", "python benchmarks/gpu_stages.py steps")
    t = steps.table("steps", "Step", ["model", "img/s", "peak MiB"], ["a note"])
    steps.add_row(t, {"model": "fcoslab x", "img/s": 123.456, "peak MiB": None})
    with pytest.raises(KeyError):
        steps.add_row(t, {"no such column": 1})
    (work / "status").mkdir()
    (work / "logs").mkdir()
    for stage, status in {"env": "ok", "steps": "ok", "levers": "failed rc=1", "profile": "timed out after 30 s",
                          "decode": "skipped: 3 s left for it, it needs 10"}.items():
        (work / "status" / stage).write_text(f"{status}\n7\n")
    (work / "logs" / "levers.log").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n\n")
    report = gpu_report.assemble(work, out).read_text()
    assert "- gpu: NVIDIA H200" in report and "- driver: 580.1" in report
    assert "| model | img/s | peak MiB |" in report and "| fcoslab x | 123.5 | n/a |" in report and "- a note" in report
    assert "`RuntimeError: boom`" in report and "timed out after 30 s" in report and "skipped: 3 s left" in report
    results = json.loads((out / "results.json").read_text())
    assert results["levers"]["error"] == "RuntimeError: boom" and results["maxbatch"]["status"] == "not run"
    assert results["steps"]["record"]["tables"][0]["rows"][0]["img/s"] == 123.456


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python in gpu_check.sh: the report is assembled by the real one; stages are faked.
case "$1" in
  benchmarks/gpu_report.py) exec "{python}" "$@" ;;
  -c) exit 0 ;;
  -m) [ "$2" = pytest ] && {{ echo "3 passed in 0.12s"; exit 0; }}; exit 0 ;;
esac
stage=$2; work=$4
case "$stage" in
  steps) echo "RuntimeError: no GPU here" >&2; exit 3 ;;
  profile) exec sleep 60 ;;
  *) printf '{{"stage": "%s", "title": "t", "command": "fake", "tables": [{{"key": "k", "title": "fake %s", "columns": ["x"], "rows": [{{"x": 1.5}}], "notes": []}}], "notes": [], "data": {{}}}}' "$stage" "$stage" > "$work/$stage.json" ;;
esac
"""


def test_script_goes_on_past_a_failing_and_a_hanging_stage(tmp_path):
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "GPU_CHECK_PY": str(fake), "GPU_CHECK_WORK": str(work), "GPU_CHECK_TIME_PCT": "8",
           "GPU_CHECK_STAGES": "env tests steps profile decode"}
    done = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    status = {k: v["status"] for k, v in results.items()}
    assert status["env"] == status["tests"] == status["decode"] == "ok"
    assert status["steps"] == "failed rc=3" and results["steps"]["error"] == "RuntimeError: no GPU here"
    assert status["profile"].startswith("timed out after") and status["levers"] == "not run"
    report = (out / "report.md").read_text()
    assert "fake decode" in report and "3 passed in 0.12s" in report and "`RuntimeError: no GPU here`" in report
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json", "stage_files.tar.gz"]
