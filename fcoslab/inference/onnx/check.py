"""The check that every exported ONNX file passes before it is kept: onnxruntime against fcoslab on seeded
inputs of several sizes (:func:`check_file`), and those inputs (:func:`sample_input`, :func:`sample_image`).

What is compared with what, per kind of file (:mod:`fcoslab.inference.onnx.contract`):

- ``network``: head outputs within ``HEAD_ATOL + HEAD_RTOL * |value|`` of the model's on the input padded as
  :func:`fcoslab.data.collate` pads it; a dynamic file is also fed an input left unpadded.
- ``with_decode``: the detections of :func:`fcoslab.modeling.decode.decode`: the same count and labels, boxes within
  ``BOX_ATOL`` pixels and scores within ``SCORE_ATOL``.
- ``with_preprocess``: the detections of evaluation's whole path (transforms, collate, model, decode) on a
  uint8 image: to the same tolerances for an image that evaluation does not resize. For resized images,
  where onnxruntime's resize may round a pixel the other way (:mod:`fcoslab.inference.onnx.preprocess`), the
  preprocessing graph alone gives the sizes exactly and every pixel within one uint8 level
  (``PIXEL_ATOL``), and the detections pair up (same label, boxes within ``RESIZED_BOX_ATOL`` pixels, scores
  within ``RESIZED_SCORE_ATOL``; :func:`_match_resized`) but for those within ``RESIZED_SCORE_ATOL`` of the
  threshold or of the ``max_detections`` cut, where a detection may be on one side only, and for ties of NMS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...config import Config
from ...data import IMAGENET_MEAN, build_transforms, collate_fn, float_pixels
from ...data.formats.coco import make_sample
from ...modeling.decode import decode
from ...errors import FcoslabError
from .contract import input_names, output_names
from .predictor import require_onnx
from .preprocess import Preprocess, antialiased, eval_input_size, pad_to_multiple

HEAD_ATOL, HEAD_RTOL = 1e-4, 1e-5  # head outputs: |onnx - torch| <= atol + rtol * |torch| (rtol: large pixel distances)
BOX_ATOL, SCORE_ATOL = 1e-3, 1e-5  # detections: boxes in pixels, scores
DETECTION_TOLERANCES = [(BOX_ATOL, 0.0), (SCORE_ATOL, 0.0), (0.0, 0.0)]  # boxes, scores, labels: (atol, rtol)
PIXEL_ATOL = 1 / 255 + 1e-6  # with_preprocess: the graph's resize against torch's, one uint8 level
FLOAT_PIXEL_ATOL = 1e-4  # ... of float pixels (data.resize=interpolate): measured up to 5e-5
# with_preprocess, detections of resized images: box (pixels) and score differences of a pair. One uint8 level
# on a pixel moved a trained model's scores by 5e-5 at most, an untrained one's (of random weights) by 1.3e-3.
RESIZED_BOX_ATOL, RESIZED_SCORE_ATOL = 0.5, 5e-3
RESIZED_UNMATCHED = 0.1  # ... of which this share may have no counterpart (module doc)


def sample_input(height: int, width: int, cfg: Config, seed: int = 0) -> dict[str, Tensor]:
    """A seeded test input as collate gives it: ``images`` float32 (1, 3, height, width), smooth colour blobs
    on the top 7/8 and padding below (zeros, or the mean colour under ``data.pad_with_mean``); ``image_sizes``
    int64 (1, 2), the (h, w) of the blobs; ``orig_sizes`` int64 (1, 2), 1.5 times that."""
    g = torch.Generator().manual_seed(seed)
    h = max(1, height - height // 8)
    blobs = torch.rand(1, 3, h // 8 + 2, width // 8 + 2, generator=g)
    content = nn.functional.interpolate(blobs, size=(h, width), mode="bilinear", align_corners=False)
    images = torch.zeros(1, 3, height, width)
    if cfg.data.pad_with_mean:
        images += torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    images[:, :, :h] = content
    return {"images": images, "image_sizes": torch.tensor([[h, width]]),
            "orig_sizes": torch.tensor([[h * 3 // 2, width * 3 // 2]])}


def sample_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A seeded uint8 (height, width, 3) RGB image: smooth colour blobs with sharp-edged rectangles on them
    (edges are where resizes differ most)."""
    g = torch.Generator().manual_seed(seed)
    blobs = torch.rand(1, 3, height // 16 + 2, width // 16 + 2, generator=g)
    image = nn.functional.interpolate(blobs, size=(height, width), mode="bilinear", align_corners=False)[0]
    for _ in range(6):
        (y, x), (h, w) = torch.rand(2, 2, generator=g) * torch.tensor([[height, width], [height / 3, width / 3]])
        image[:, int(y):int(y + h) + 1, int(x):int(x + w) + 1] = torch.rand(3, 1, 1, generator=g)
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def check_sizes(size: tuple[int, int], kind: str, dynamic: bool, cfg: Config) -> list[tuple[int, int]]:
    """Input sizes the written file is checked at. Static: the traced size. Dynamic: also a wider one and one
    short of the size divisibility (the graph pads it). ``with_preprocess``: an image size that evaluation
    keeps, then sizes it shrinks (to another aspect) and enlarges."""
    d = cfg.model.size_divisibility
    if kind == "with_preprocess":
        t = cfg.data.square_size or min(cfg.data.test_min_size, cfg.data.max_size)
        return [(t, t), (2 * t + 5, 3 * t + 1), (t // 2 + 3, t // 3 * 2 + 1)]
    if not dynamic:
        return [size]
    return [size, (size[0], size[1] + d), (max(1, size[0] - d // 4), size[1] + d - 3)]


def _compare(name: str, got: np.ndarray, want: Tensor, atol: float, rtol: float = 0.0) -> Optional[str]:
    """None when ``got`` (onnxruntime) is within tolerance of ``want`` (fcoslab), else what differs."""
    want = want.detach().cpu().numpy()
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} instead of {want.shape}"
    if got.size == 0:
        return None
    excess = np.abs(got.astype(np.float64) - want) - (atol + rtol * np.abs(want))
    if excess.max() > 0:
        return f"{name}: differs by up to {np.abs(got.astype(np.float64) - want).max():.3g} (tolerance {atol:g})"
    return None


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with each of boxes (N, 4)."""
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])  # (N, 2)
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    union = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
    return inter / np.maximum(union, 1e-9)


def _pair_up(a: dict, b: dict, floor: float, cfg: Config) -> tuple[list[str], float, float]:
    """Pair each detection of ``a`` scored at or above ``floor`` with one of ``b`` (each used once): a score
    within ``RESIZED_SCORE_ATOL``, and the same label (any label under class-agnostic NMS) and a box within
    ``RESIZED_BOX_ATOL`` px, or else one that NMS would suppress (IoU above ``nms_thresh``): of two overlapping
    boxes with near-equal scores either may be the one kept. Detections are numpy dicts ``boxes`` (N, 4),
    ``scores`` (N,), ``labels`` (N,). Returns the detections without a partner, and the largest box and score
    differences of the pairs of equal boxes."""
    free, missing, box_diff, score_diff = np.ones(len(b["scores"]), bool), [], 0.0, 0.0
    for box, score, label in zip(a["boxes"], a["scores"], a["labels"]):
        if score < floor:
            continue
        near = free & (np.abs(b["scores"] - score) <= RESIZED_SCORE_ATOL)
        label_ok = (b["labels"] == label) | cfg.decode.class_agnostic_nms
        same = near & (b["labels"] == label) & (np.abs(b["boxes"] - box).max(axis=1, initial=0) <= RESIZED_BOX_ATOL)
        partner = same if same.any() else near & label_ok & (_iou(box, b["boxes"]) > cfg.decode.nms_thresh)
        if not partner.any():
            missing.append(f"label {label}, score {score:.4f}, box {np.round(box, 2).tolist()}")
            continue
        j = np.flatnonzero(partner)[np.argmin(np.abs(b["scores"][partner] - score))]
        free[j] = False
        if same.any():
            box_diff = max(box_diff, float(np.abs(b["boxes"][j] - box).max()))
            score_diff = max(score_diff, float(abs(b["scores"][j] - score)))
    return missing, box_diff, score_diff


def _match_resized(got: dict, want: dict, cfg: Config) -> tuple[Optional[str], dict]:
    """Compare the detections of a resized image (module doc): those clearly above the threshold, and above
    the last one kept when ``max_detections`` cut the list, pair up both ways (:func:`_pair_up`), but for
    ``RESIZED_UNMATCHED`` of them (at least one: a box that another one's tie dropped, or left). Returns (what
    differs or None, the largest box and score differences of the pairs)."""
    floor = cfg.decode.score_thresh
    for det in (got, want):
        if len(det["scores"]) >= cfg.decode.max_detections:
            floor = max(floor, float(det["scores"].min()))
    floor += RESIZED_SCORE_ATOL
    diffs = {"resized boxes": 0.0, "resized scores": 0.0}
    for a, b, side in ((want, got, "fcoslab's"), (got, want, "onnxruntime's")):
        missing, box_diff, score_diff = _pair_up(a, b, floor, cfg)
        if len(missing) > max(1, RESIZED_UNMATCHED * int((a["scores"] >= floor).sum())):
            return f"{len(missing)} of {side} detections have no counterpart, the first: {missing[0]}", {}
        diffs = {"resized boxes": max(diffs["resized boxes"], box_diff),
                 "resized scores": max(diffs["resized scores"], score_diff)}
    return None, diffs


def reference_detections(image: np.ndarray, model: nn.Module, cfg: Config) -> dict[str, Tensor]:
    """Evaluation's detections of a uint8 (H, W, 3) RGB image: the run's transforms, collate, model, decode."""
    batch = reference_batch(image, cfg)
    return decode(model(batch["images"]), batch["image_sizes"], batch["orig_sizes"], cfg.decode)[0]


def reference_batch(image: np.ndarray, cfg: Config) -> dict:
    """:func:`fcoslab.data.collate` of the evaluation transforms of a uint8 (H, W, 3) RGB image."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W), as pil_to_tensor gives it
    empty = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return collate_fn(cfg.data, cfg.model.size_divisibility)([build_transforms(cfg.data, train=False)(*make_sample(pixels, *empty, 0))])


def _check_preprocess(cfg: Config, cases: Sequence[tuple[int, tuple[int, int]]], opset: int) -> dict:
    """The preprocessing graph alone (:class:`fcoslab.inference.onnx.preprocess.Preprocess`, exported here) against the
    batch of evaluation's transforms on :func:`sample_image` of each ``(seed, (h, w))``: sizes equal, pixels
    within one uint8 level (``PIXEL_ATOL``; float pixels, ``data.resize=interpolate``, within
    ``FLOAT_PIXEL_ATOL``). Returns the largest pixel difference ([0, 1] units) and the share of pixels a level
    apart."""
    import io

    _, ort = require_onnx()
    if not cases:
        return {}
    buffer, image = io.BytesIO(), torch.from_numpy(sample_image(*cases[-1][1]))
    torch.onnx.export(Preprocess(cfg).eval(), (image,), buffer, dynamo=False, opset_version=opset,
                      input_names=["image"], output_names=["images", "image_sizes", "orig_sizes"],
                      dynamic_axes={"image": {0: "height", 1: "width"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    atol = PIXEL_ATOL if antialiased(cfg.data) else FLOAT_PIXEL_ATOL
    largest, share = 0.0, 0.0
    for seed, (h, w) in cases:
        image = sample_image(h, w, seed=seed)
        images, image_sizes, orig_sizes = session.run(None, {"image": image})
        want = reference_batch(image, cfg)
        problem = (_compare("image_sizes", image_sizes, want["image_sizes"], 0) or
                   _compare("orig_sizes", orig_sizes, want["orig_sizes"], 0) or
                   _compare("pixels", images, float_pixels(want["images"]), atol))
        if problem:
            raise FcoslabError(f"the graph's preprocessing differs from fcoslab's on a {h}x{w} image: {problem}")
        diff = np.abs(images - float_pixels(want["images"]).numpy())
        largest, share = max(largest, float(diff.max())), max(share, float((diff > 0.5 / 255).mean()))
    return {"pixels": largest, "pixels a level apart (share)": share}


def _case(model: nn.Module, cfg: Config, kind: str, size: tuple[int, int], seed: int):
    """(feed, fcoslab's values of the outputs, tolerances (atol, rtol) per output) of one check input."""
    if kind == "with_preprocess":
        image = sample_image(*size, seed=seed)
        det = reference_detections(image, model, cfg)
        return {"image": image}, [det["boxes"], det["scores"], det["labels"]], DETECTION_TOLERANCES
    sample = sample_input(*size, cfg, seed)
    outputs = model(pad_to_multiple(sample["images"], cfg.model.size_divisibility, cfg.data.pad_with_mean))
    feed = {k: sample[k].numpy() for k in input_names(kind)}
    if kind == "with_decode":
        det = decode(outputs, sample["image_sizes"], sample["orig_sizes"], cfg.decode)[0]
        return feed, [det["boxes"], det["scores"], det["labels"]], DETECTION_TOLERANCES
    names = output_names(kind, cfg.model.centerness)
    return feed, [outputs[k] for k in names], [(HEAD_ATOL, HEAD_RTOL)] * len(names)


def _resized(cfg: Config, kind: str, size: tuple[int, int]) -> bool:
    return kind == "with_preprocess" and tuple(eval_input_size(torch.tensor(size), cfg.data).tolist()) != size


@torch.no_grad()
def check_file(path: Path, model: nn.Module, cfg: Config, kind: str, sizes: Sequence[tuple[int, int]],
               opset: int = 18) -> dict:
    """Run the ONNX file with onnxruntime (CPU) at each size (module doc; ``opset`` is the file's, for the
    preprocessing graph of a ``with_preprocess`` file) and compare with fcoslab. Raises
    :class:`FcoslabError` naming the first difference; returns the largest differences seen
    (``{name: max abs difference}``: the outputs', and for ``with_preprocess`` also ``pixels``, ``pixels a
    level apart (share)``, ``resized boxes`` and ``resized scores``)."""
    _, ort = require_onnx()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        raise FcoslabError(f"onnxruntime cannot load the exported {path.name}: {str(e).splitlines()[0]}") from None
    names, largest = output_names(kind, cfg.model.centerness), {}
    if kind == "with_preprocess":
        largest.update(_check_preprocess(cfg, [(i, s) for i, s in enumerate(sizes) if _resized(cfg, kind, s)], opset))
    for seed, (h, w) in enumerate(sizes):
        feed, want, tolerances = _case(model, cfg, kind, (h, w), seed)
        got = session.run(names, feed)
        if _resized(cfg, kind, (h, w)):
            problem, diffs = _match_resized(dict(zip(names, got)), {k: v.numpy() for k, v in zip(names, want)}, cfg)
            if problem:
                raise FcoslabError(f"{path.name}: onnxruntime does not reproduce fcoslab on a {h}x{w} test image: "
                                   f"{problem}")
            largest.update({k: max(v, largest.get(k, 0.0)) for k, v in diffs.items()})
            continue
        for name, g, t, (atol, rtol) in zip(names, got, want, tolerances):
            problem = _compare(name, g, t, atol, rtol)
            if problem:
                raise FcoslabError(f"{path.name}: onnxruntime does not reproduce fcoslab on a {h}x{w} test input: "
                                   f"{problem}")
            if g.size:
                largest[name] = max(largest.get(name, 0.0), float(np.abs(g.astype(np.float64) - t.numpy()).max()))
    return largest
