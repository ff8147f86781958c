"""The precision rule (runtime.precision) and device choice shared by training and every inference."""

import logging

import pytest
import torch

from fcoslab.inference import predictor as inference
from fcoslab.inference.predictor import choose_precision, native_cpu_bf16

CPU = torch.device("cpu")


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(inference, "native_cpu_bf16", lambda: (False, "no AVX512-BF16 (mocked)"))


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(inference, "native_cpu_bf16", lambda: (True, "AVX512-BF16 (mocked)"))


def test_auto_is_float32_on_a_cpu_without_native_bf16(cpu_without_bf16):
    p = choose_precision("auto", CPU)
    assert p.dtype is None and p.name == "float32" and "no AVX512-BF16" in p.reason


def test_auto_is_bf16_on_a_cpu_with_native_bf16(cpu_with_bf16):
    p = choose_precision("auto", CPU)
    assert p.dtype is torch.bfloat16 and p.name == "bfloat16"


def test_explicit_bf16_on_an_emulating_cpu_runs_with_a_warning(cpu_without_bf16, caplog):
    with caplog.at_level(logging.WARNING, logger="fcoslab"):
        p = choose_precision("bf16", CPU)
    assert p.dtype is torch.bfloat16
    assert "10x slower" in caplog.text


def test_explicit_bf16_on_a_native_cpu_is_quiet(cpu_with_bf16, caplog):
    with caplog.at_level(logging.WARNING, logger="fcoslab"):
        assert choose_precision("bf16", CPU).dtype is torch.bfloat16
    assert caplog.text == ""


def test_off_is_float32_everywhere(cpu_with_bf16):
    assert choose_precision("off", CPU).dtype is None
    assert choose_precision("off", torch.device("cuda")).dtype is None


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert choose_precision("auto", torch.device("cuda")).dtype is expected


def test_native_bf16_needs_the_cpu_flag(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(inference.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(inference, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"})
    native, why = native_cpu_bf16()
    assert not native and "emulated" in why
    monkeypatch.setattr(inference, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert native_cpu_bf16()[0]
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    native, why = native_cpu_bf16()
    assert not native and "ONEDNN_MAX_CPU_ISA=AVX2" in why


def test_training_logs_its_precision(shapes_dir, tmp_path, caplog, cpu_without_bf16):
    from helpers import tiny_overrides
    from fcoslab.config import load_config
    from fcoslab.engine.trainer import Trainer

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"runtime.precision": "auto"}))
    with caplog.at_level(logging.INFO, logger="fcoslab"):
        trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.precision.dtype is None
    assert "precision: float32 on cpu (auto: no AVX512-BF16 (mocked))" in caplog.text


def test_every_preset_defaults_to_auto():
    from fcoslab.config import list_presets, load_config

    assert {load_config(name).runtime.precision for name in list_presets()} == {"auto"}


def test_a_missing_run_says_how_to_make_one(tmp_path, monkeypatch):
    from fcoslab.errors import FcoslabError

    with pytest.raises(FcoslabError, match=f"checkpoint {tmp_path / 'none'} does not exist: give a run folder") as e:
        inference.Predictor(tmp_path / "none")
    assert "`make demo` writes runs/shapes" in str(e.value) and "notebook 03" in str(e.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FcoslabError, match=f"checkpoint ../runs/shapes does not exist \\(that is {tmp_path.parent}/runs/shapes\\)"):
        inference.Predictor("../runs/shapes")  # notebook 05's default, seen from the notebooks folder


def test_a_wrong_device_names_where_it_came_from():
    from fcoslab.errors import FcoslabError
    from fcoslab.inference.predictor import resolve_device

    with pytest.raises(FcoslabError, match=r"device \(--device\) is 'gpu': expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu", "device (--device)")
    if not torch.cuda.is_available():
        with pytest.raises(FcoslabError, match=r"^config key 'runtime.device' is 'cuda:1' but no CUDA"):
            resolve_device("cuda:1")
