"""ONNX export of a run: the network alone, the network with decoding and NMS, or the whole evaluation path
from a uint8 image to its detections; each file checked with onnxruntime before it is kept.

    fcoslab export runs/shapes --format onnx --out shapes.onnx [--dynamic] [--with-decode | --with-preprocess]
    fcoslab predict --onnx shapes.onnx IMAGE... --out DIR

The metadata entry ``fcoslab.contract`` of every file says what follows to a deployer, as JSON
(:mod:`fcoslab.inference.onnx.contract`; ``docs/deploy.md`` shows a script that reads it):

- ``network`` (the network alone): ``images`` float32 (B, 3, H, W), RGB in [0, 1], resized as evaluation does
  (:func:`fcoslab.data.build_transforms` with ``train=False``) and padded at the bottom and right to a
  multiple of ``model.size_divisibility`` (zeros, or the ImageNet mean under ``data.pad_with_mean``). A static
  file takes one image of its fixed size; a dynamic one any batch and size, and pads H and W to the multiple
  itself (:func:`fcoslab.inference.onnx.preprocess.pad_to_multiple`), so that an input padded short, or not at all,
  gives the outputs of the right padding. The ImageNet normalisation is in the graph. Outputs ``cls_logits``
  float32 (B, P, K), ``bbox_ltrb`` float32 (B, P, 4) pixel distances, ``centerness`` float32 (B, P) logits
  (only when the model has center-ness) and ``points`` float32 (P, 2) xy pixels of the padded input.
- ``with_decode``: one such image (B = 1) with ``image_sizes`` int64 (1, 2), its (h, w) before padding, and
  ``orig_sizes`` int64 (1, 2), the (h, w) of the original image. Outputs ``boxes`` float32 (N, 4) xyxy pixels
  of the original image, ``scores`` float32 (N,) and ``labels`` int64 (N,) in decreasing score order: the
  detections of :func:`fcoslab.modeling.decode.decode` (:func:`fcoslab.inference.onnx.decode.traceable_decode`).
- ``with_preprocess``: ``image`` uint8 (H, W, 3) RGB of any size; the graph resizes, scales and pads it
  (:func:`fcoslab.inference.onnx.preprocess.preprocess_image`) and decodes: the same three outputs. Its antialiased
  resize (the default ``data.resize``) needs opset 18, the default for this kind.

Exporter: torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``, opsets 17 to 20), which the
data-dependent shapes of decoding need (:mod:`fcoslab.inference.onnx.decode`). The checks are :mod:`fcoslab.inference.onnx.check`'s.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ...config import Config
from ...errors import FcoslabError
from ...files import atomic_write
from ..predictor import Predictor, training_layout
from .check import check_file, check_sizes, sample_image, sample_input
from .contract import META_PREFIX, deployment_contract, input_names, output_names, read_metadata
from .decode import traceable_decode
from .predictor import OnnxPredictor, require_onnx
from .preprocess import antialiased, pad_to_multiple, preprocess_image

__all__ = ["OnnxPredictor", "check_file", "default_image_size", "export_onnx", "read_metadata", "sample_image",
           "sample_input", "traceable_decode"]

MIN_OPSET, MAX_OPSET = 17, 20  # MAX_OPSET: the highest of the TorchScript-based exporter (torch 2.14)
RESIZE_OPSET = 18  # ONNX Resize's antialias attribute


class _Network(nn.Module):
    """The model with a tuple of outputs (cls_logits, bbox_ltrb, [centerness,] points), its input padded to
    the size divisibility first."""

    def __init__(self, model: nn.Module, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(pad_to_multiple(images, self.cfg.model.size_divisibility, self.cfg.data.pad_with_mean))
        return tuple(out[k] for k in output_names("network", self.cfg.model.centerness))


class _Detector(nn.Module):
    """The model and :func:`traceable_decode`: one image (padded to the size divisibility here if it is
    not), its sizes -> its detections."""

    def __init__(self, model: nn.Module, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, images: Tensor, image_sizes: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        images = pad_to_multiple(images, self.cfg.model.size_divisibility, self.cfg.data.pad_with_mean)
        return traceable_decode(self.model(images), image_sizes, orig_sizes, self.cfg.decode, self.model.num_classes)


class _ImageDetector(nn.Module):
    """:func:`preprocess_image`, the model and :func:`traceable_decode`: a uint8 (H, W, 3) image -> its detections."""

    def __init__(self, model: nn.Module, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        images, image_sizes, orig_sizes = preprocess_image(image, self.cfg)
        return traceable_decode(self.model(images), image_sizes, orig_sizes, self.cfg.decode, self.model.num_classes)


def default_image_size(cfg: Config) -> tuple[int, int]:
    """The default static input (H, W): the run's test size (``data.test_min_size``) padded to
    ``model.size_divisibility``, square (an image of another aspect needs a dynamic file or its own size);
    ``data.square_size`` where evaluation resizes to a square."""
    d = cfg.model.size_divisibility
    side = math.ceil((cfg.data.square_size or cfg.data.test_min_size) / d) * d
    return side, side


def _export_args(model: nn.Module, cfg: Config, kind: str, dynamic: bool, size: tuple[int, int]):
    """(module, args, input names, output names, dynamic axes) for ``torch.onnx.export``."""
    inputs, outputs = input_names(kind), output_names(kind, cfg.model.centerness)
    if kind == "with_preprocess":
        axes = {name: {0: "detections"} for name in outputs}
        axes["image"] = {0: "height", 1: "width"}
        image = torch.from_numpy(sample_image(size[0] + size[0] // 2 + 1, size[1] - size[1] // 4 + 3))
        return _ImageDetector(model, cfg).eval(), (image,), inputs, outputs, axes
    sample = sample_input(*size, cfg)
    if kind == "with_decode":
        axes = {name: {0: "detections"} for name in outputs}
        if dynamic:
            axes["images"] = {2: "height", 3: "width"}
        return _Detector(model, cfg).eval(), tuple(sample[k] for k in inputs), inputs, outputs, axes
    axes = {}
    if dynamic:
        axes = {name: {0: "batch", 1: "points"} for name in outputs[:-1]}
        axes.update(images={0: "batch", 2: "height", 3: "width"}, points={0: "points"})
    return _Network(model, cfg).eval(), (sample["images"],), inputs, outputs, axes


def _choose_opset(opset: Optional[int], kind: str, cfg: Config) -> int:
    """The opset asked for, or the default: 17, or 18 for a ``with_preprocess`` file that antialiases."""
    needs = RESIZE_OPSET if kind == "with_preprocess" and antialiased(cfg.data) else MIN_OPSET
    if opset is None:
        return needs
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise FcoslabError(f"--opset {opset}: fcoslab exports opsets {MIN_OPSET} to {MAX_OPSET} (the TorchScript "
                           "exporter's highest)")
    if opset < needs:
        raise FcoslabError(f"--opset {opset}: --with-preprocess resizes with antialiasing (data.resize="
                           f"{cfg.data.resize}), which ONNX Resize has from opset {RESIZE_OPSET}")
    return opset


def _kind(with_decode: bool, with_preprocess: bool) -> str:
    return "with_preprocess" if with_preprocess else ("with_decode" if with_decode else "network")


def export_onnx(run_dir: str | Path, out_path: str | Path, dynamic: bool = False, with_decode: bool = False,
                image_size: Optional[Sequence[int]] = None, opset: Optional[int] = None,
                with_preprocess: bool = False) -> dict:
    """Export a run (folder or ``.pt`` file) to an ONNX file, checked with onnxruntime before it is written.

    Args:
        dynamic: batch (network alone), height and width are dynamic axes; else the input is fixed at
            ``image_size``. A ``with_preprocess`` file is always dynamic.
        with_decode: the file also decodes: one padded image, its sizes -> boxes, scores, labels (module doc).
        image_size: (H, W) or (S,) of the traced (and, when static, the only) input; default
            :func:`default_image_size`. Not with ``with_preprocess``.
        opset: ONNX opset, 17 to :data:`MAX_OPSET`; default 17, or 18 for ``with_preprocess`` (antialiasing).
        with_preprocess: the file takes a uint8 (H, W, 3) RGB image of any size and does all of evaluation's
            path: resize, scaling, padding, the network, decoding.
    Returns:
        ``{"path", "kind", "opset", "inputs", "outputs", "image_size", "max_abs_diff"}``: the file and the largest
        differences between onnxruntime and fcoslab on the check inputs. Raises :class:`FcoslabError` (and
        writes nothing) when the run cannot be read or onnxruntime disagrees with fcoslab.
    """
    onnx, _ = require_onnx()
    kind = _kind(with_decode, with_preprocess)
    if with_preprocess and image_size:
        raise FcoslabError("--image-size: a --with-preprocess file takes images of any size (the graph resizes them)")
    predictor = Predictor(run_dir, device="cpu", amp="off")
    model, cfg = predictor.model, predictor.cfg
    opset = _choose_opset(opset, kind, cfg)
    training_layout(model)  # contiguous weights: the graph does not carry channels-last conversions
    size = _parse_size(image_size) if image_size else default_image_size(cfg)
    dynamic = dynamic or with_preprocess
    module, args, inputs, outputs, axes = _export_args(model, cfg, kind, dynamic, size)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes or None, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    fixed = None if dynamic else list(size)
    meta = {"config": cfg.to_dict(), "class_names": predictor.class_names, "cat_ids": predictor.cat_ids,
            "with_decode": kind != "network", "with_preprocess": with_preprocess, "image_size": fixed,
            "epoch": predictor.epoch,
            "contract": deployment_contract(cfg, kind, dynamic, fixed, predictor.class_names, predictor.cat_ids)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, json.dumps(value)
    out, largest = Path(out_path), {}

    def write(tmp: Path) -> None:
        onnx.save(proto, str(tmp))
        largest.update(check_file(Path(tmp), model, cfg, kind, check_sizes(size, kind, dynamic, cfg), opset))

    atomic_write(out, write)
    return {"path": out, "kind": kind, "opset": opset, "inputs": inputs, "outputs": outputs,
            "image_size": None if dynamic else size, "max_abs_diff": largest}


def _parse_size(image_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in image_size)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise FcoslabError(f"image size {list(image_size)}: give one side or (height, width), positive")
    return size
