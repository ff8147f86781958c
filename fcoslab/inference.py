"""Inference: device choice, the precision rule, the model over a loader, and :class:`Predictor`.

Training, evaluation, prediction, the notebooks and the viewer all run the network through this module,
so that a checkpoint gives the same detections wherever it is used: same precision, same batching.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .runfolder import load_checkpoint
from .config import config_from_dict
from .datasets import build_transforms
from .datasets.coco import make_sample, to_rgb
from .datasets.transforms import collate_fn
from .decode import decode
from .errors import FcoslabError
from .model import build_model

log = logging.getLogger("fcoslab")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cuda[:N]`` without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FcoslabError(f"config key 'train.device' is '{name}' but no CUDA device is available")
    return torch.device(name)


def _cpuinfo(field: str) -> Optional[str]:
    """The first ``field`` line of /proc/cpuinfo, or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_flags() -> Optional[set[str]]:
    """The x86 feature flags of /proc/cpuinfo, or None where they cannot be read."""
    flags = _cpuinfo("flags")
    return None if flags is None else set(flags.split())


def cpu_name() -> str:
    """The CPU's model name (for benchmark reports)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def native_cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and why (or why not).

    oneDNN must report bf16 support (it honours ``ONEDNN_MAX_CPU_ISA``), and on x86 the CPU must have
    AVX512-BF16 or AMX-BF16: plain AVX-512 or AVX2 emulates bf16, which is many times slower than float32.
    """
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
        return False, "oneDNN has no bfloat16 on this CPU" + (f" (ONEDNN_MAX_CPU_ISA={isa})" if isa else "")
    flags = _cpu_flags()
    if platform.machine().lower() in ("x86_64", "amd64") and flags is not None:
        if not flags & {"avx512_bf16", "amx_bf16"}:
            return False, "this CPU has no AVX512-BF16 or AMX: bfloat16 would be emulated"
        return True, "this CPU has native bfloat16 (" + ", ".join(sorted(flags & {"avx512_bf16", "amx_bf16"})) + ")"
    return True, "oneDNN reports native bfloat16 on this CPU"


_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The autocast dtype a run uses on a device (None: float32), and the reason, for the log."""

    dtype: Optional[torch.dtype]
    reason: str

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


def choose_precision(amp: str, device: torch.device) -> Precision:
    """The precision rule of ``train.amp`` (used for training and for every inference of a run).

    ``auto``: on CUDA bfloat16 where the GPU supports it, else float16 (with a gradient scaler); on a CPU
    bfloat16 only where it is native (AVX512-BF16 or AMX), float32 otherwise. ``bf16`` / ``fp16`` are
    honoured everywhere, with a warning where the CPU would emulate them; ``off`` is float32.
    """
    if amp == "off":
        return Precision(None, "train.amp=off")
    if device.type == "cuda":
        if amp == "auto":
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return Precision(torch.bfloat16, "auto: this GPU supports bfloat16")
            return Precision(torch.float16, "auto: this GPU has no bfloat16, float16 with a gradient scaler")
        return Precision(_AMP_DTYPES[amp], f"train.amp={amp}")
    if device.type != "cpu":
        return Precision(None, f"auto: float32 on {device.type}") if amp == "auto" else \
            Precision(_AMP_DTYPES[amp], f"train.amp={amp}")
    native, why = native_cpu_bf16()
    if amp == "auto":
        return Precision(torch.bfloat16 if native else None, f"auto: {why}")
    if amp == "bf16":
        if not native:
            log.warning("train.amp=bf16 on a CPU without native bfloat16 (%s): expect each step to be about 10x "
                        "slower than in float32; train.amp=auto picks float32 here", why)
        return Precision(torch.bfloat16, "train.amp=bf16")
    log.warning("train.amp=fp16 on a CPU: float16 is emulated on most CPUs and is usually slower than float32; "
                "train.amp=auto picks the fastest precision")
    return Precision(torch.float16, "train.amp=fp16")


def channels_last_inference(device: torch.device) -> bool:
    """Whether inference on ``device`` runs channels-last (see :func:`inference_layout`)."""
    return device.type == "cpu"


def inference_layout(model: torch.nn.Module, device: torch.device) -> bool:
    """Put ``model`` in the memory layout that inference uses on ``device`` (in place); True if it changed.

    On a CPU that is channels-last: oneDNN's convolutions then skip their layout conversions, which made
    inference 11% faster for R-50-FPN at 512 px and 22% for the shapes model (AVX2, float32). Training
    keeps the default layout, which trained faster; :func:`training_layout` restores it. The trainer's
    evaluations use this layout too, so that they equal ``fcoslab evaluate`` to the last digit.
    """
    if not channels_last_inference(device) or getattr(model.cfg, "channels_last", False):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def training_layout(model: torch.nn.Module) -> None:
    """Undo :func:`inference_layout` (the values of the weights are unchanged)."""
    model.to(memory_format=torch.contiguous_format)


@torch.inference_mode()
def predict_batches(model, batches, cfg, device: torch.device, precision: Precision):
    """Run ``model`` (which the caller has put in eval mode and :func:`inference_layout`) over collated batches.

    Yields ``(image_id, detections)`` on the CPU, detections as :func:`fcoslab.decode.decode` returns them.
    """
    channels_last = channels_last_inference(device)
    for batch in batches:
        images = batch["images"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            outputs = model(images)
        dets = decode(outputs, batch["image_sizes"].to(device), batch["orig_sizes"].to(device), cfg.decode)
        for image_id, det in zip(batch["image_ids"], dets):
            yield image_id, {k: v.cpu() for k, v in det.items()}


class Predictor:
    """A trained detector: ``Predictor("runs/shapes")`` or ``Predictor("runs/shapes/last.pt")``.

    It runs in the run's precision rule (``train.amp``) on ``device``, with the run's evaluation
    transforms, so its detections are those that evaluation scored.

    Example::

        from PIL import Image
        import fcoslab
        predictor = fcoslab.Predictor("runs/shapes")
        det = predictor([Image.open("data/shapes/val/000001.png")])[0]  # boxes (N, 4) xyxy, scores, labels
        print([predictor.class_names[k] for k in det["labels"].tolist()], det["scores"])
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", amp: Optional[str] = None):
        """``amp`` replaces the run's ``train.amp`` rule (``"off"``: float32)."""
        if not Path(checkpoint).exists():
            where = "" if Path(checkpoint).is_absolute() else f" (that is {Path(checkpoint).resolve()})"
            raise FcoslabError(f"checkpoint {checkpoint} does not exist{where}: give a run folder or its .pt file, "
                               "or train one first: `make demo` writes runs/shapes, notebook 03 runs/nb_shapes, "
                               "`fcoslab train --out RUN` any other")
        ckpt = load_checkpoint(checkpoint)
        self.cfg = config_from_dict(ckpt["config"])
        self.device = resolve_device(device)
        self.precision = choose_precision(amp or self.cfg.train.amp, self.device)
        self.model = build_model(self.cfg, ckpt["num_classes"])
        self.model.load_state_dict(ckpt["model"])
        self.model.to(self.device).eval()
        inference_layout(self.model, self.device)
        self.class_names: list[str] = list(ckpt["class_names"])
        self.cat_ids: list[int] = list(ckpt["cat_ids"])
        self.epoch = ckpt["epoch"]
        self.transforms = build_transforms(self.cfg.data, train=False)

    def _prepare(self, image: Image.Image) -> tuple[torch.Tensor, dict]:
        """The evaluation transforms of the run's config, applied to one image without ground truth."""
        return self.transforms(*make_sample(to_rgb(image), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0))

    def __call__(self, images: Sequence[Image.Image], batch_size: Optional[int] = None) -> list[dict[str, torch.Tensor]]:
        """Detections for PIL images: one dict per image with ``boxes`` float (N, 4) xyxy pixels of the
        image as given, ``scores`` (N,), ``labels`` int64 (N,). ``batch_size`` defaults to the run's
        ``train.eval_batch_size``."""
        size = batch_size or self.cfg.train.eval_batch_size
        collate = collate_fn(self.cfg)
        batches = (collate([self._prepare(im) for im in images[start:start + size]])
                   for start in range(0, len(images), size))
        return [det for _, det in predict_batches(self.model, batches, self.cfg, self.device, self.precision)]
