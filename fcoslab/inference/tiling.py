"""Tiled prediction for large images with small objects (slicing-aided inference, as SAHI does).

The image is cut into overlapping square tiles; each tile goes through the run's usual inference (its
resize included, so a tile's objects are seen larger than in the whole, shrunk image); optionally the
whole image too. Detections are shifted back to image pixels and merged by the run's class-aware NMS,
then the ``decode.max_detections`` best are kept.
"""

from __future__ import annotations

import torch
from PIL import Image

from .. import ops
from .predictor import Predictor


def tile_windows(width: int, height: int, tile: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Windows ``(x0, y0, x1, y1)`` in pixels covering a ``width`` x ``height`` image with ``tile`` x ``tile``
    squares that overlap their neighbours by ``overlap`` of a tile; the last row and column are aligned
    to the image's edge. An image no larger than a tile is one window, the image itself."""
    if tile < 1 or not 0 <= overlap < 1:
        raise ValueError(f"tile must be >= 1 and overlap in [0, 1), got {tile}, {overlap}")

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        step = max(1, int(tile * (1 - overlap)))
        out = list(range(0, size - tile, step))
        return out + [size - tile]

    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in starts(height) for x in starts(width)]


def merge_detections(parts: list[dict[str, torch.Tensor]], offsets: list[tuple[int, int]], iou: float,
                     max_detections: int) -> dict[str, torch.Tensor]:
    """Detections of several windows in one image's pixels, merged by class-aware NMS.

    Args:
        parts: per window ``boxes`` float (N, 4) xyxy window pixels, ``scores`` (N,), ``labels`` int64 (N,).
        offsets: per window its ``(x0, y0)`` in the image.
    Returns:
        the kept detections, at most ``max_detections``, in decreasing score.
    """
    boxes = torch.cat([p["boxes"].float() + torch.tensor([x, y, x, y], dtype=torch.float32)
                       for p, (x, y) in zip(parts, offsets)])  # (N, 4) image pixels
    scores = torch.cat([p["scores"].float() for p in parts])
    labels = torch.cat([p["labels"] for p in parts])
    keep = ops.batched_nms(boxes, scores, labels, iou)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def predict_tiled(predictor: Predictor, image: Image.Image, tile: int, overlap: float = 0.2,
                  whole_image: bool = True) -> dict[str, torch.Tensor]:
    """Detections of one PIL image from its tiles (and the whole image, with ``whole_image``), as
    :meth:`Predictor.__call__` returns them for one image."""
    windows = tile_windows(image.width, image.height, tile, overlap)
    if len(windows) == 1:
        return predictor([image])[0]
    parts = predictor([image.crop(w) for w in windows])  # tiles of one size batch without extra padding
    offsets = [(x0, y0) for x0, y0, _, _ in windows]
    if whole_image:
        parts, offsets = parts + predictor([image]), offsets + [(0, 0)]
    decode = predictor.cfg.decode
    return merge_detections(parts, offsets, decode.nms_thresh, decode.max_detections)
