"""fcoslab's evaluation preprocessing in operations that trace into an ONNX graph: the resize rule, the resize
itself (ONNX ``Resize``), the [0, 1] scaling and the bottom/right padding to the size divisibility.

:func:`preprocess_image` is :func:`fcoslab.data.build_transforms` (``train=False``) followed by
:func:`fcoslab.data.collate_fn` for one uint8 (H, W, 3) RGB image, written so that the same code runs
eagerly (it then gives the batch of the data pipeline exactly) and traces into a graph that takes an image
of any size (``fcoslab export --with-preprocess``). :func:`pad_to_multiple` is also the first step of every
dynamic file, so that an input padded another way (or not at all) gives the detections of the right padding.

The resize in the graph is ONNX ``Resize`` (linear, ``half_pixel``; with ``antialias=1`` and
``exclude_outside=1`` for ``data.resize=antialias`` and ``data.square_size``, opset 18 and later), which
onnxruntime computes as torch does up to rounding: torch's uint8 antialiased kernel (the one torchvision uses on
AVX2/AVX-512 and ARM CPUs) quantises its filter weights as PIL does, and a pixel whose exact value lies near
a half may round the other way (``docs/deploy.md`` gives the measured share of such pixels and the detections'
differences). ``data.resize=interpolate`` resizes float pixels without antialiasing: within 5e-5 of torch's.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn import functional as nnf
from torchvision.transforms.v2 import functional as F

from ...config import Config, DataConfig
from ...data import IMAGENET_MEAN, float_pixels


def eval_input_size(hw: Tensor, data: DataConfig) -> Tensor:
    """The (h, w) that evaluation resizes an image of ``hw`` pixels to, in tensor operations (float64, as the
    Python of :class:`fcoslab.data.ResizeShortest` computes it): ``data.square_size`` on both sides, or
    the shorter side scaled to ``data.test_min_size`` with the longer side at most ``data.max_size``, then
    ``round`` (half to even) under ``data.resize=antialias`` and ``floor`` under ``interpolate``.

    Args:
        hw (Tensor[2]): int64 (h, w) of the image.
    Returns:
        Tensor[2] int64 (h, w) of the network's input before padding, each at least 1.
    """
    if data.square_size:
        return torch.full_like(hw, data.square_size)
    side = hw.to(torch.float64)  # (2,)
    # 1-element tensors and true divisions: the exporter computes 0-dim ones in float32, and ``s / t`` is
    # reciprocal-times
    min_size, max_size = (torch.full((1,), float(s), dtype=torch.float64) for s in (data.test_min_size, data.max_size))
    scale = torch.minimum(min_size / side.amin(0, keepdim=True), max_size / side.amax(0, keepdim=True))  # (1,)
    scaled = torch.round(side * scale) if data.resize == "antialias" else torch.floor(side * scale)  # (2,)
    return scaled.clamp(min=1).to(torch.int64)


def antialiased(data: DataConfig) -> bool:
    """Whether evaluation's resize antialiases (uint8 pixels, ``data.square_size`` or ``resize=antialias``)."""
    return bool(data.square_size) or data.resize == "antialias"


class _Resize(torch.autograd.Function):
    """Bilinear resize of pixels (1, 3, h, w) to ``size`` (Tensor[2] int64 (h', w')), as evaluation resizes:
    eagerly torchvision's uint8 antialiased resize (``antialias``) or ``F.interpolate`` of float pixels;
    in the graph ONNX ``Resize`` (:meth:`symbolic`)."""

    @staticmethod
    def forward(ctx, pixels: Tensor, size: Tensor, antialias: bool) -> Tensor:
        with warnings.catch_warnings():  # under export, :meth:`symbolic` replaces what is traced here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            h, w = int(size[0]), int(size[1])
            if antialias:
                return F.resize(pixels, [h, w], antialias=True)
            if (h, w) == tuple(pixels.shape[-2:]):
                return pixels
            return nnf.interpolate(pixels, size=(h, w), mode="bilinear", align_corners=False)

    @staticmethod
    def symbolic(g, pixels, size, antialias: bool):
        lead = g.op("Constant", value_t=torch.tensor([1, 3], dtype=torch.int64))
        sizes = g.op("Concat", lead, size, axis_i=0)  # (4,) 1, 3, h', w'
        none = g.op("prim::Constant")  # the omitted roi and scales inputs
        none.setType(torch._C.OptionalType.ofTensor())
        attrs = {"antialias_i": 1, "exclude_outside_i": 1} if antialias else {}
        return g.op("Resize", pixels, none, none, sizes, mode_s="linear",
                    coordinate_transformation_mode_s="half_pixel", **attrs)


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # made once: a constant of the traced graph


def pad_to_multiple(images: Tensor, multiple: int, pad_with_mean: bool) -> Tensor:
    """Pad images at the bottom and right to a multiple of ``multiple``, as :func:`fcoslab.data.collate`
    pads a batch: with zeros, or with :data:`IMAGENET_MEAN` (``pad_with_mean``). An input already of such a
    size is returned as it is.

    Args:
        images (Tensor[B, 3, h, w]): float32 pixels in [0, 1].
    Returns:
        Tensor[B, 3, H, W] float32, H and W the multiples of ``multiple`` at or above h and w.
    """
    h, w = images.shape[-2:]  # ints, or 0-dim tensors under tracing
    pads = (0, (multiple - w % multiple) % multiple, 0, (multiple - h % multiple) % multiple)
    padded = nnf.pad(images, pads)  # (B, 3, H, W)
    if not pad_with_mean:
        return padded
    outside = nnf.pad(torch.zeros_like(images[:1, :1]), pads, value=1.0)  # (1, 1, H, W) 1 in the padding
    return padded + outside * _MEAN.to(images.dtype)


def preprocess_image(image: Tensor, cfg: Config) -> tuple[Tensor, Tensor, Tensor]:
    """Evaluation's transforms and padding of one image.

    Args:
        image (Tensor[H, W, 3]): uint8 RGB pixels, as ``numpy.asarray`` of an RGB PIL image.
    Returns:
        images float32 (1, 3, H', W') in [0, 1] padded to ``model.size_divisibility``; image_sizes int64
        (1, 2), the (h, w) after the resize; orig_sizes int64 (1, 2), the (H, W) of ``image``.
    """
    hw = torch._shape_as_tensor(image)[:2]  # (2,) int64
    size = eval_input_size(hw, cfg.data)  # (2,) int64
    pixels = image.permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
    if antialiased(cfg.data):
        pixels = float_pixels(_Resize.apply(pixels, size, True))  # (1, 3, h, w) float32
    else:  # torchvision's detection transform resizes float pixels
        pixels = _Resize.apply(float_pixels(pixels), size, False)
    images = pad_to_multiple(pixels, cfg.model.size_divisibility, cfg.data.pad_with_mean)
    return images, size[None], hw[None]


class Preprocess(torch.nn.Module):
    """:func:`preprocess_image` as a module (the first part of a ``with_preprocess`` file), for checks."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return preprocess_image(image, self.cfg)
