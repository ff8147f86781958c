"""benchmarks/common.py: the machine header holds real values, the timer measures, and every script in
benchmarks/ takes its path setup, timer and header from it instead of a copy of its own."""

import ast
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402

import fcoslab  # noqa: E402
from fcoslab.inference.predictor import native_cpu_bf16  # noqa: E402

KEYS = {"date", "command", "cpu", "arch", "cores", "cores_usable", "threads", "bf16_native", "bf16_reason", "env",
        "cpu_capability", "gpu", "python", "torch", "torchvision", "fcoslab"}


def test_machine_info_holds_real_values():
    info = common.machine_info(str(BENCH / "speed.py"), ["--iters", "1", "a b"])
    assert set(info) == KEYS
    assert info["command"] == "python benchmarks/speed.py --iters 1 'a b'"
    stamp = datetime.datetime.strptime(info["date"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 120
    assert info["cpu"].strip() and info["cpu"] != "unknown"
    if sys.platform == "linux" and Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            assert info["cpu"] == names[0]
    assert info["cores"] == os.cpu_count() and 1 <= info["cores_usable"] <= info["cores"]
    assert info["threads"] == torch.get_num_threads()
    assert (info["bf16_native"], info["bf16_reason"]) == native_cpu_bf16()
    assert info["torch"] == torch.__version__ and info["fcoslab"] == fcoslab.__version__
    assert info["gpu"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def test_emulation_field_follows_the_environment(monkeypatch, capsys):
    for name in common.EMULATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    info = common.print_header(prefix="> ")
    assert info["env"] == {}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("> ") for line in lines)
    assert info["cpu"] in lines[1] and info["bf16_reason"] in lines[2]
    assert "ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY unset" in lines[2]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = common.machine_info()
    assert info["env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert (info["bf16_native"], info["bf16_reason"]) == native_cpu_bf16()
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in common.header_lines(info)[2]
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert common.machine_info()["env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def test_the_timer_measures_a_sleep():
    calls = []

    def nap():
        calls.append(1)
        time.sleep(0.02)
        return "slept"

    t = common.timed(nap, repeat=3, warmup=1, device="cpu")
    assert len(calls) == 4 and len(t.times) == 3 and t.value == "slept"
    assert 0.0195 <= t.best <= t.median <= 0.06 and 0 <= t.spread < 0.04
    value, seconds = common.once(nap)
    assert value == "slept" and 0.0195 <= seconds <= 0.06
    with common.stopwatch() as watch:
        time.sleep(0.02)
    assert 0.0195 <= watch.seconds <= 0.06


def test_interleaved_takes_turns():
    order = []
    timings = common.interleaved([lambda: order.append("a"), lambda: order.append("b")], repeat=2, warmup=1,
                                 device=None)
    assert order == ["a", "b"] * 3 and [len(t.times) for t in timings] == [2, 2]
    with pytest.raises(ValueError):
        common.timed(lambda: None, repeat=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda_events"):
            common.timed(lambda: None, repeat=1, device="cpu", cuda_events=True)


def test_a_script_imports_this_checkouts_fcoslab():
    """What ``python benchmarks/X.py`` gets: benchmarks/ first on the path, no PYTHONPATH, and fcoslab
    installed elsewhere perhaps (an editable install of another checkout)."""
    code = f"import sys; sys.path.insert(0, {str(BENCH)!r}); import common, fcoslab; print(fcoslab.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, env=env, cwd="/",
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == ROOT / "fcoslab" / "__init__.py"


SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")
# What common.py holds once: no script defines these, calls these, or imports these from fcoslab.
OWN_HELPERS = {"timed", "timer", "sync", "stopwatch", "once", "interleaved", "header", "print_header",
               "header_lines", "machine_info", "device_name", "gpu_name", "utc_now", "command_line", "_timed"}
CALLS = {"sys.path.insert", "sys.path.append", "torch.cuda.synchronize", "torch.cuda.Event", "time.time",
         "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.date.today", "platform.processor",
         "torch.cuda.get_device_name", "torch.backends.cpu.get_cpu_capability", "torch.__version__",
         "torchvision.__version__", "fcoslab.__version__"}
FCOSLAB_NAMES = {"cpu_name", "native_cpu_bf16"}


def dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_there_are_scripts():
    assert len(SCRIPTS) >= 15 and BENCH / "kernels.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_takes_path_timer_and_header_from_common(script):
    tree = ast.parse(script.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    imports_common = [n.lineno for n in top if isinstance(n, ast.Import) and any(a.name == "common" for a in n.names)]
    assert imports_common, f"{script.name} does not import common"
    fcoslab_imports = [n.lineno for n in top if (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "fcoslab"
                                                                                     for a in n.names))
                       or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "fcoslab")]
    assert all(imports_common[0] < line for line in fcoslab_imports), f"{script.name}: import common before fcoslab"
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in OWN_HELPERS:
            problems.append(f"line {node.lineno}: defines {node.name}")
        elif isinstance(node, ast.Attribute) and dotted(node) in CALLS:
            problems.append(f"line {node.lineno}: uses {dotted(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fcoslab"):
            problems += [f"line {node.lineno}: imports {a.name}" for a in node.names if a.name in FCOSLAB_NAMES]
    assert not problems, f"{script.name} (use common instead): {problems}"
