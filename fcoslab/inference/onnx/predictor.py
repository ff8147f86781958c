""":class:`OnnxPredictor`: an exported file that decodes (``--with-decode`` or ``--with-preprocess``), run with
onnxruntime on the CPU, in place of :class:`fcoslab.inference.predictor.Predictor` (``fcoslab predict --onnx FILE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ...config import config_from_dict
from ...data import IMAGENET_MEAN, build_transforms, collate_fn, float_pixels
from ...data.formats.coco import make_sample, to_rgb
from ...errors import FcoslabError
from .contract import META_PREFIX, read_metadata


def require_onnx():
    """The onnx and onnxruntime modules, or a :class:`FcoslabError` that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise FcoslabError(f"ONNX export needs the onnx and onnxruntime packages ({e}): "
                           "pip install onnx onnxruntime") from None
    return onnx, onnxruntime


class OnnxPredictor:
    """A file exported with ``with_decode`` or ``with_preprocess``, run with onnxruntime on the CPU:
    ``OnnxPredictor("model.onnx")``.

    Like :class:`fcoslab.inference.predictor.Predictor` (``cfg``, ``class_names``, ``cat_ids``, called on PIL images),
    from the file alone: its metadata holds the run's config and class names. A ``with_preprocess`` file gets
    the RGB pixels as they are; a ``with_decode`` file gets them through the run's evaluation transforms and
    padding here, one image at a time, and a static one padded further to its fixed size (the same detections
    as the torch path when that equals the image's own padded size).
    """

    def __init__(self, onnx_path: str | Path, threads: int = 0):
        _, ort = require_onnx()
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise FcoslabError(f"ONNX file {self.path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable or invalid files
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FcoslabError(f"cannot load ONNX file {self.path}: {reason}") from None
        meta = read_metadata(self.session)
        if "config" not in meta:
            raise FcoslabError(f"{self.path} was not exported by fcoslab export (no {META_PREFIX}config metadata)")
        if not meta["with_decode"]:
            raise FcoslabError(f"{self.path} holds the network alone: predict --onnx needs a file exported "
                               "with --with-decode or --with-preprocess")
        self.cfg = config_from_dict(meta["config"])
        self.class_names, self.cat_ids = list(meta["class_names"]), list(meta["cat_ids"])
        self.image_size = tuple(meta["image_size"]) if meta["image_size"] else None
        self.with_preprocess = bool(meta.get("with_preprocess", False))
        self.contract = meta.get("contract")
        self.transforms = build_transforms(self.cfg.data, train=False)
        self.collate = collate_fn(self.cfg.data, self.cfg.model.size_divisibility)

    def __call__(self, images: Sequence[Image.Image], batch_size: Optional[int] = None) -> list[dict[str, Tensor]]:
        """Detections of each PIL image, as :meth:`fcoslab.inference.predictor.Predictor.__call__` returns them
        (``batch_size`` is accepted for that signature; the file takes one image at a time)."""
        return [self._detect(image) for image in images]

    def _feed(self, image: Image.Image) -> dict[str, np.ndarray]:
        rgb = to_rgb(image)
        if self.with_preprocess:
            return {"image": np.asarray(rgb, dtype=np.uint8)}  # (H, W, 3)
        sample = self.transforms(*make_sample(rgb, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0))
        batch = self.collate([sample])
        pixels = float_pixels(batch["images"])  # (1, 3, H, W) float in [0, 1], as the file takes them
        if self.image_size:
            pixels = self._pad_to_file_size(pixels, image.size)
        return {"images": pixels.numpy(), "image_sizes": batch["image_sizes"].numpy(),
                "orig_sizes": batch["orig_sizes"].numpy()}

    def _detect(self, image: Image.Image) -> dict[str, Tensor]:
        boxes, scores, labels = self.session.run(["boxes", "scores", "labels"], self._feed(image))
        return {"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(labels)}

    def _pad_to_file_size(self, images: Tensor, original: tuple[int, int]) -> Tensor:
        (H, W), (h, w) = self.image_size, images.shape[-2:]
        if h > H or w > W:
            raise FcoslabError(f"an image of {original[0]}x{original[1]} pixels becomes a {w}x{h} input, larger than "
                               f"the fixed {W}x{H} input of {self.path}: export with --dynamic (or --image-size)")
        out = images.new_zeros((1, 3, H, W))
        if self.cfg.data.pad_with_mean:
            out += torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        out[..., :h, :w] = images
        return out
