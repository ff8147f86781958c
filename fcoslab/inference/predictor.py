"""Inference: device choice, the precision rule, the model over a loader, and :class:`Predictor`.

Training, evaluation, prediction, the notebooks and the viewer all run the network through this module,
so that a checkpoint gives the same detections wherever it is used: same precision, same batching.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..runfolder import load_checkpoint
from ..config import Config, anchor_paths, config_from_dict, validate
from ..data import build_transforms
from ..data.formats.coco import make_sample, to_rgb
from ..data.batching import padded_shape, size_grouped_batches
from ..data.transforms import collate_fn
from ..modeling.decode import decode
from ..errors import FcoslabError
from ..modeling.model import build_model
from .tta import merge_views, tta_views, unflip, view_config, view_transforms

log = logging.getLogger("fcoslab")


def resolve_device(name: str, source: str = "config key 'runtime.device'") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cuda[:N]`` without CUDA is a user error that names
    ``source``, where the value came from (a config key, or a command's ``--device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FcoslabError(f"{source} is '{name}' but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FcoslabError(f"{source} is '{name}': expected auto, cpu, cuda or cuda:N") from None


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
    """The precision rule of ``runtime.precision`` (used for training and for every inference of a run).

    ``auto``: on CUDA bfloat16 where the GPU supports it, else float16 (with a gradient scaler); on a CPU
    bfloat16 only where it is native (AVX512-BF16 or AMX), float32 otherwise. ``bf16`` / ``fp16`` are
    honoured everywhere, with a warning where the CPU would emulate them; ``off`` is float32.
    """
    if amp == "off":
        return Precision(None, "runtime.precision=off")
    if device.type == "cuda":
        if amp == "auto":
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return Precision(torch.bfloat16, "auto: this GPU supports bfloat16")
            return Precision(torch.float16, "auto: this GPU has no bfloat16, float16 with a gradient scaler")
        return Precision(_AMP_DTYPES[amp], f"runtime.precision={amp}")
    if device.type != "cpu":
        return Precision(None, f"auto: float32 on {device.type}") if amp == "auto" else \
            Precision(_AMP_DTYPES[amp], f"runtime.precision={amp}")
    native, why = native_cpu_bf16()
    if amp == "auto":
        return Precision(torch.bfloat16 if native else None, f"auto: {why}")
    if amp == "bf16":
        if not native:
            log.warning("runtime.precision=bf16 on a CPU without native bfloat16 (%s): expect each step to be about 10x "
                        "slower than in float32; runtime.precision=auto picks float32 here", why)
        return Precision(torch.bfloat16, "runtime.precision=bf16")
    log.warning("runtime.precision=fp16 on a CPU: float16 is emulated on most CPUs and is usually slower than float32; "
                "runtime.precision=auto picks the fastest precision")
    return Precision(torch.float16, "runtime.precision=fp16")


def channels_last_inference(device: torch.device) -> bool:
    """Whether inference on ``device`` runs channels-last (see :func:`inference_layout`)."""
    return device.type == "cpu"


def inference_layout(model: torch.nn.Module, device: torch.device) -> bool:
    """Put ``model`` in the memory layout that inference uses on ``device`` (in place); True if it changed.

    On a CPU that is channels-last: oneDNN's convolutions then skip their layout conversions, which made
    inference 11% faster for R-50-FPN at 512 px and 22% for the shapes model (AVX2, float32). Training
    keeps the default layout, which trained faster; :func:`training_layout` restores it. The trainer's
    evaluations use this layout too, so that they equal ``fcoslab evaluate`` to the last digit. On a CPU
    the convolutions and GroupNorms also become batch-invariant (:func:`batch_invariant_layers`;
    returns whether the memory layout changed).
    """
    if device.type == "cpu":
        batch_invariant_layers(model)  # in training mode they are plain layers
    if not channels_last_inference(device) or getattr(model.cfg, "channels_last", False):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def training_layout(model: torch.nn.Module) -> None:
    """Undo :func:`inference_layout` (the values of the weights are unchanged)."""
    batch_invariant_layers(model, on=False)
    model.to(memory_format=torch.contiguous_format)


_NATIVE_MAX_NUMEL = 20480  # PyTorch's own kernel takes a single float32 image of at most this many elements
_NATIVE_1X1_BELOW = 16  # on one thread PyTorch runs 1x1 convolutions of fewer images natively, of more in oneDNN


class BatchInvariantConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose result for an image does not depend on how many images share its batch
    (inference on a CPU in float32; elsewhere, and in training, it is ``nn.Conv2d``).

    PyTorch sends a float32 CPU convolution to oneDNN or to its own kernel by the batch size (``use_mkldnn``
    in aten/src/ATen/native/Convolution.cpp): a single image's small layers (C*H*W <= 20480: the coarsest
    levels, such as P7 of R-50-FPN at 800 px, or most of the shapes model's head) go to its own kernel,
    and on one thread so do 1x1 convolutions of fewer than 16 images. The two round differently (up to
    2e-4 on R-50's logits). oneDNN's results for 2 to 15 images equal each other bit for bit (torch 2.14,
    AVX-512), so such a layer of a lone image runs on two copies of its input, and on one thread a 1x1
    convolution of 16 or more images runs in near-equal slices of at most 15. Only those small layers
    run twice. bfloat16 and float16 (autocast) convolutions go to one kernel whatever the batch. The
    thread count itself still matters (1x1 convolutions): processes compare bit for bit at equal
    ``torch.get_num_threads()``. cuDNN may choose its algorithm by batch size: on CUDA, detections agree
    across batch sizes to float rounding.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]):
        plain = super()._conv_forward
        if (self.training or input.device.type != "cpu" or input.dtype != torch.float32
                or torch.is_autocast_enabled("cpu") or torch.jit.is_tracing() or torch.compiler.is_compiling()):
            return plain(input, weight, bias)
        n = input.shape[0]
        one_by_one = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.dilation == (1, 1)
        if one_by_one and torch.get_num_threads() == 1:  # PyTorch's own kernel below 16 images: keep it there
            if n < _NATIVE_1X1_BELOW:
                return plain(input, weight, bias)
            k = math.ceil(n / (_NATIVE_1X1_BELOW - 1))
            return torch.cat([plain(piece, weight, bias) for piece in input.tensor_split(k)])
        native = self.groups == 1 and not (self.kernel_size[0] > 3 and self.kernel_size[1] > 3)
        if n == 1 and native and input.numel() <= _NATIVE_MAX_NUMEL:  # oneDNN, as for 2 images or more
            return plain(torch.cat([input, input]), weight, bias)[:1]  # cat keeps the memory format
        return plain(input, weight, bias)


_PER_THREAD_GN_FROM = 1024  # channels-last GroupNorm sums a map of this many pixels or more in per-thread parts


class BatchInvariantGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose result for an image does not depend on how many images share its batch
    (inference on a CPU; elsewhere, and in training, it is ``nn.GroupNorm``).

    On a channels-last input of H*W >= 1024 pixels (P3 of an image of 256 x 256 or more), PyTorch's CPU
    kernel splits the N * H * W pixels of the whole batch among threads and adds each thread's partial
    sums, so an image's mean and variance depend on its batch. Run one image at a time there, an image's
    split depends only on its own size (and the thread count).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        plain = super().forward
        if (self.training or input.device.type != "cpu" or input.dim() != 4 or input.shape[0] == 1
                or input[0, 0].numel() < _PER_THREAD_GN_FROM or torch.jit.is_tracing() or torch.compiler.is_compiling()
                or not input.is_contiguous(memory_format=torch.channels_last)):
            return plain(input)
        return torch.cat([plain(image) for image in input.split(1)])  # cat keeps the memory format


_INVARIANT: dict[type, type] = {nn.Conv2d: BatchInvariantConv2d, nn.GroupNorm: BatchInvariantGroupNorm}


def batch_invariant_layers(model: torch.nn.Module, on: bool = True) -> None:
    """Make every convolution and GroupNorm of ``model`` batch-invariant (:class:`BatchInvariantConv2d`,
    :class:`BatchInvariantGroupNorm`; a subclass, such as the folded convolutions of
    :func:`fcoslab.modeling.model.fold_frozen_bn`, becomes a class of both), or (``on=False``) plain again, in
    place: the parameters, the state dict and what ``forward`` computes stay; only how the work is cut
    up changes."""
    plain = {v: k for k, v in _INVARIANT.items()}
    for module in model.modules():
        cls = type(module)
        if not on:
            module.__class__ = plain.get(cls, cls)
            continue
        base = next((b for b in (nn.Conv2d, nn.GroupNorm) if isinstance(module, b)), None)
        if base is not None and cls not in plain:
            if cls not in _INVARIANT:
                _INVARIANT[cls] = type(f"BatchInvariant{cls.__name__}", (_INVARIANT[base], cls), {})
            module.__class__ = _INVARIANT[cls]


@torch.inference_mode()
def predict_batches(model, batches, cfg, device: torch.device, precision: Precision, flip: bool = False,
                    on_outputs: Optional[Callable[[dict, dict], None]] = None):
    """Run ``model`` (which the caller has put in eval mode and :func:`inference_layout`) over collated batches;
    ``on_outputs(outputs, batch)`` sees each batch's raw outputs (e.g. to sum a validation loss).

    Yields ``(image_id, detections)`` on the CPU, detections as :func:`fcoslab.modeling.decode.decode` returns them.
    An image's detections depend only on its own padded pixels (:func:`batch_invariant_layers`, and
    :func:`fcoslab.modeling.decode.image_scores`): batches of images of one padded size
    (:mod:`fcoslab.data.batching`) give each image the detections it has alone. ``flip``: the batches hold
    left-right flipped images (a test-time view, :mod:`fcoslab.inference.tta`), whose boxes are mirrored back.
    """
    channels_last = channels_last_inference(device)
    for batch in batches:
        images = batch["images"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            outputs = model(images)
        if on_outputs is not None:
            on_outputs(outputs, batch)
        dets = decode(outputs, batch["image_sizes"].to(device), batch["orig_sizes"].to(device), cfg.decode)
        for image_id, det, (_, width) in zip(batch["image_ids"], dets, batch["orig_sizes"].tolist()):
            det = {k: v.cpu() for k, v in det.items()}
            yield image_id, unflip(det, width) if flip else det


class Predictor:
    """A trained detector: ``Predictor("runs/shapes")`` or ``Predictor("runs/shapes/last.pt")``.

    It runs in the run's precision rule (``runtime.precision``) on ``device``, with the run's evaluation
    transforms (and its test-time views with ``eval.tta``), so its detections are those that evaluation scored.

    Example::

        from PIL import Image
        import fcoslab
        predictor = fcoslab.Predictor("runs/shapes")
        det = predictor([Image.open("data/shapes/val/000001.png")])[0]  # boxes (N, 4) xyxy, scores, labels
        print([predictor.class_names[k] for k in det["labels"].tolist()], det["scores"])
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", amp: Optional[str] = None,
                 overrides: Optional[dict] = None):
        """``amp`` replaces the run's ``runtime.precision`` rule (``"off"``: float32); ``overrides`` change
        test-time keys of the run's config (``{"eval.tta": True}``, ``decode.*``, ...; not ``model.*``)."""
        if not Path(checkpoint).exists():
            where = "" if Path(checkpoint).is_absolute() else f" (that is {Path(checkpoint).resolve()})"
            raise FcoslabError(f"checkpoint {checkpoint} does not exist{where}: give a run folder or its .pt file, "
                               "or train one first: `make demo` writes runs/shapes, notebook 03 runs/nb_shapes, "
                               "`fcoslab train --out RUN` any other")
        ckpt = load_checkpoint(checkpoint)
        self.cfg = test_time_config(config_from_dict(ckpt["config"]), overrides)
        self.device = resolve_device(device, "device (--device)")
        self.precision = choose_precision(amp or self.cfg.runtime.precision, self.device)
        self.model = build_model(self.cfg.model, ckpt["num_classes"])
        self.model.load_state_dict(ckpt["model"])
        self.model.to(self.device).eval()
        inference_layout(self.model, self.device)
        self.class_names: list[str] = list(ckpt["class_names"])
        self.cat_ids: list[int] = list(ckpt["cat_ids"])
        self.epoch = ckpt["epoch"]
        self.transforms = build_transforms(self.cfg.data, train=False)

    def _prepare(self, image: Image.Image, transforms=None) -> tuple[torch.Tensor, dict]:
        """The evaluation transforms of the run's config (or ``transforms``, a view's), applied to one image
        without ground truth."""
        empty = make_sample(to_rgb(image), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0)
        return (transforms or self.transforms)(*empty)

    def __call__(self, images: Sequence[Image.Image], batch_size: Optional[int] = None) -> list[dict[str, torch.Tensor]]:
        """Detections for PIL images, in their order: one dict per image with ``boxes`` float (N, 4) xyxy
        pixels of the image as given, ``scores`` (N,), ``labels`` int64 (N,). Images of one padded size
        are batched together, at most ``batch_size`` (default: the run's ``eval.batch_size``) at a
        time, so an image's detections do not depend on the others given with it
        (:mod:`fcoslab.data.batching`). With ``eval.tta`` each test-time view is predicted so, and an
        image's views merged (:func:`fcoslab.inference.tta.merge_views`)."""
        views = tta_views(self.cfg)
        per_view = [self._predict_view(images, batch_size, view, plain=k == 0) for k, view in enumerate(views)]
        if len(views) == 1:
            return per_view[0]
        return [merge_views(dets, self.cfg.decode) for dets in zip(*per_view)]

    def _predict_view(self, images, batch_size: Optional[int], view, plain: bool) -> list[dict[str, torch.Tensor]]:
        """Detections of each image in one test-time view (the run's own transforms for the ``plain`` one)."""
        size = batch_size or self.cfg.eval.batch_size
        samples = [self._prepare(im, None if plain else view_transforms(view)) for im in images]
        d = self.cfg.model.size_divisibility
        batches = size_grouped_batches([padded_shape(*image.shape[-2:], d) for image, _ in samples], size)
        cfg = view_config(self.cfg, view)
        collate = collate_fn(cfg.data, cfg.model.size_divisibility)
        dets = predict_batches(self.model, (collate([samples[i] for i in b]) for b in batches), cfg,
                               self.device, self.precision, flip=view.flip)
        out: list = [None] * len(samples)
        for i, (_, det) in zip((i for b in batches for i in b), dets):
            out[i] = det
        return out


def test_time_config(cfg: Config, overrides: Optional[dict] = None) -> Config:
    """A run's config with test-time ``overrides`` (relative data paths anchored at the working directory);
    the model's keys cannot change, the weights are the run's."""
    if not overrides:
        return cfg
    if any(k.startswith("model") for k in overrides):
        raise FcoslabError("model.* keys cannot be overridden at test time: the checkpoint holds the run's model "
                           f"(got {', '.join(k for k in overrides if k.startswith('model'))})")
    cfg = cfg.replace(**anchor_paths(overrides, Path.cwd()))
    validate(cfg)
    return cfg
