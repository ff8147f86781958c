"""ONNX export of a run: the network alone, or the network with decoding and NMS, and a predictor for the file.

    fcoslab export runs/shapes --format onnx --out shapes.onnx [--dynamic] [--with-decode] [--opset 17]
    fcoslab predict --onnx shapes.onnx IMAGE... --out DIR

Input of every file: ``images`` float32 (B, 3, H, W), RGB in [0, 1], resized and padded as fcoslab's
evaluation does (:func:`fcoslab.datasets.build_transforms` with ``train=False``, then
:func:`fcoslab.datasets.collate_fn`: bottom and right padding to a multiple of ``model.size_divisibility``, with
zeros or, under ``data.pad_with_mean``, the ImageNet mean). The ImageNet normalisation is inside the graph.

- Network alone (a static file takes one image, a dynamic one any batch): outputs ``cls_logits`` float32
  (B, P, K), ``bbox_ltrb`` float32 (B, P, 4) pixel distances, ``centerness`` float32 (B, P) logits (only when
  the model has center-ness) and ``points`` float32 (P, 2) xy pixels, computed in the graph from the input
  size (a constant of a static file).
- ``with_decode``: one image (B = 1) with ``image_sizes`` int64 (1, 2), its (h, w) before padding, and
  ``orig_sizes`` int64 (1, 2), the (h, w) of the original image. Outputs ``boxes`` float32 (N, 4) xyxy pixels
  of the original image, ``scores`` float32 (N,) and ``labels`` int64 (N,) in decreasing score order: the
  detections of :func:`fcoslab.decode.decode` (:func:`traceable_decode` says how the graph gets them).

Exporter: torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``, opsets 17 to 20). Decoding
has shapes that depend on the data (the boxes above the threshold, the boxes NMS keeps), and its NMS is emitted
as ONNX ``NonMaxSuppression`` by a ``symbolic`` (:class:`_NonMaxSuppression`). The torch.export-based exporter
(torch 2.14) exports the network alone but not the decoding: it traces the eager NMS and stops at a guard on
a data-dependent size (``GuardOnDataDependentSymNode``); one exporter serves both kinds of file.

Every file is checked with onnxruntime against fcoslab before it is written; its metadata carries the run's
config and class names, so :class:`OnnxPredictor` needs no run folder.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from . import ops
from .config import Config, DecodeConfig, config_from_dict
from .datasets import IMAGENET_MEAN, build_transforms, collate_fn, float_pixels
from .datasets.coco import make_sample, to_rgb
from .decode import decode
from .errors import FcoslabError
from .files import atomic_write
from .inference import Predictor, training_layout

HEAD_ATOL, HEAD_RTOL = 1e-4, 1e-5  # head outputs: |onnx - torch| <= atol + rtol * |torch| (rtol: large pixel distances)
BOX_ATOL, SCORE_ATOL = 1e-3, 1e-5  # detections: boxes in pixels, scores
_META = "fcoslab."  # prefix of the metadata keys
MAX_OPSET = 20  # the highest opset of the TorchScript-based exporter (torch 2.14)


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise FcoslabError(f"ONNX export needs the onnx and onnxruntime packages ({e}): "
                           "pip install onnx onnxruntime") from None
    return onnx, onnxruntime


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (one image, per class): boxes (1, C, 4) xyxy, scores (1, K', C) with the
    box's score in its class row and 0 elsewhere; a box competes in a row where its score is above 0.5.
    Returns int64 (S, 3) rows ``(0, class, box)``, class after class, decreasing score within a class."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        rows = []
        with warnings.catch_warnings():  # under export, :meth:`symbolic` replaces what is traced here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            for k in range(scores.shape[1]):
                live = torch.nonzero(scores[0, k] > 0.5)[:, 0]  # (C_k,)
                keep = live[ops.nms(boxes[0, live], scores[0, k, live], iou_threshold)]  # (S_k,)
                rows.append(torch.stack([torch.zeros_like(keep), torch.full_like(keep, k), keep], dim=1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, const(2 ** 62, torch.int64),
                    const(iou_threshold, torch.float32), const(0.5, torch.float32))


def _level_candidates(scores: Tensor, ltrb: Tensor, points: Tensor, start, n, pre: int, K: int):
    """The ``pre`` best (point, class) pairs of one level (its points ``start .. start + n``), as
    :func:`fcoslab.decode.decode` picks them; a level of fewer than ``pre`` pairs is padded with -inf scores
    so that every level gives ``pre`` candidates whatever the input size. Returns scores (pre,), boxes
    (pre, 4) xyxy, labels int64 (pre,)."""
    flat = scores[start:start + n].reshape(-1)  # (n*K,)
    flat = torch.cat([flat, flat.new_full((pre,), -math.inf)])  # (n*K + pre,)
    top, idx = flat.topk(pre)  # (pre,)
    point = (idx // K) % n + start  # (pre,) padding slots wrap round to points of the level
    dist = ltrb[point]  # (pre, 4)
    xy = points[point]  # (pre, 2)
    return top, torch.cat([xy - dist[:, :2], xy + dist[:, 2:]], dim=1), idx % K


def traceable_decode(outputs: dict, image_sizes: Tensor, orig_sizes: Tensor, cfg: DecodeConfig,
                     num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`fcoslab.decode.decode` of one image, in operations that trace into a static ONNX graph.

    The same per-level top-k, threshold, clipping, NMS and ``max_detections``; the differences are of form:
    every level yields ``pre_nms_topk`` candidates (padded with -inf, never above the threshold); candidates
    are ranked by score, equal scores by candidate index (onnxruntime's TopK breaks ties so, and fcoslab's NMS
    ranks so), and NMS gets ``C - rank`` as its score, since onnxruntime's NonMaxSuppression promises no order
    among equal scores; class-aware NMS uses NonMaxSuppression's class dimension (no coordinate offsets, so
    no precision lost). One difference can remain: scores exactly equal at a level's top-k cut, where torch's
    topk (in :func:`fcoslab.decode.decode`) promises no order.

    Args:
        outputs: the model's output dict for a batch of one image.
        image_sizes (Tensor[1, 2]): int64 (h, w) before padding; orig_sizes (Tensor[1, 2]): int64 (h, w) original.
    Returns:
        boxes float32 (N, 4) xyxy original pixels, scores float32 (N,), labels int64 (N,), decreasing score.
    """
    K, pre = num_classes, cfg.pre_nms_topk
    scores = torch.sigmoid(outputs["cls_logits"][0].float())  # (P, K)
    if outputs["centerness"] is not None:
        scores = torch.sqrt(scores * torch.sigmoid(outputs["centerness"][0].float())[:, None])
    ltrb, points = outputs["bbox_ltrb"][0].float(), outputs["points"]
    cands, start = [], 0
    for h, w in outputs["level_sizes"]:
        cands.append(_level_candidates(scores, ltrb, points, start, h * w, pre, K))
        start = start + h * w
    cand = torch.cat([c[0] for c in cands])  # (C,) C = L * pre
    boxes = torch.cat([c[1] for c in cands])  # (C, 4)
    labels = torch.cat([c[2] for c in cands])  # (C,)
    hw = image_sizes[0].to(torch.float32)  # (2,) h, w
    limit = torch.stack([hw[1], hw[0], hw[1], hw[0]])  # (4,) as w, h, w, h
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    valid = cand > cfg.score_thresh
    C = cand.shape[0]
    order = torch.where(valid, cand, torch.full_like(cand, -math.inf)).topk(C).indices  # (C,) rank -> candidate
    rank_score = torch.arange(C, 0, -1, dtype=torch.float32)  # (C,) distinct, decreasing
    valid_r, labels_r = valid[order], labels[order]
    if cfg.class_agnostic_nms:
        member = valid_r[None]  # (1, C)
    else:
        member = valid_r[None] & (labels_r[None] == torch.arange(K)[:, None])  # (K, C)
    nms_scores = torch.where(member, rank_score[None], torch.zeros_like(rank_score)[None])  # (K', C)
    selected = _NonMaxSuppression.apply(boxes[order][None], nms_scores[None], float(cfg.nms_thresh))  # (S, 3)
    kept = torch.zeros(C).index_fill(0, selected[:, 2], 1.0) > 0  # (C,) by rank
    final = order[torch.nonzero(kept)[:, 0][: cfg.max_detections]]  # (N,) in rank order
    scale = orig_sizes[0].to(torch.float32) / hw  # (2,) as sy, sx
    return boxes[final] * torch.stack([scale[1], scale[0], scale[1], scale[0]]), cand[final], labels[final]


class _Network(nn.Module):
    """The model with a tuple of outputs: cls_logits, bbox_ltrb, [centerness,] points."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return tuple(out[k] for k in _head_names(self.model))


class _Detector(nn.Module):
    """The model and :func:`traceable_decode`: one padded image to its detections."""

    def __init__(self, model: nn.Module, cfg: DecodeConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, images: Tensor, image_sizes: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return traceable_decode(self.model(images), image_sizes, orig_sizes, self.cfg, self.model.num_classes)


def _head_names(model: nn.Module) -> list[str]:
    return ["cls_logits", "bbox_ltrb"] + (["centerness"] if model.cfg.centerness else []) + ["points"]


def default_image_size(cfg: Config) -> tuple[int, int]:
    """The default static input (H, W): the run's test size (``data.test_min_size``) padded to
    ``model.size_divisibility``, square (an image of another aspect needs a dynamic file or its own size);
    ``data.square_size`` where evaluation resizes to a square."""
    d = cfg.model.size_divisibility
    side = math.ceil((cfg.data.square_size or cfg.data.test_min_size) / d) * d
    return side, side


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


def _export_args(model: nn.Module, cfg: Config, with_decode: bool, dynamic: bool, sample: dict):
    """(module, args, input names, output names, dynamic axes) for ``torch.onnx.export``."""
    if with_decode:
        inputs, outputs = ["images", "image_sizes", "orig_sizes"], ["boxes", "scores", "labels"]
        axes = {name: {0: "detections"} for name in outputs}
        if dynamic:
            axes["images"] = {2: "height", 3: "width"}
        return _Detector(model, cfg.decode).eval(), tuple(sample[k] for k in inputs), inputs, outputs, axes
    outputs = _head_names(model)
    axes = {}
    if dynamic:
        axes = {name: {0: "batch", 1: "points"} for name in outputs[:-1]}
        axes.update(images={0: "batch", 2: "height", 3: "width"}, points={0: "points"})
    return _Network(model).eval(), (sample["images"],), ["images"], outputs, axes


def _check_sizes(size: tuple[int, int], dynamic: bool, cfg: Config) -> list[tuple[int, int]]:
    """Input sizes the written file is checked at: the traced size, and for a dynamic file a wider one too."""
    return [size, (size[0], size[1] + cfg.model.size_divisibility)] if dynamic else [size]


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


@torch.no_grad()
def check_file(path: Path, model: nn.Module, cfg: Config, with_decode: bool, sizes: Sequence[tuple[int, int]]) -> dict:
    """Run the ONNX file with onnxruntime (CPU) on :func:`sample_input` at each size and compare with fcoslab:
    head outputs within ``HEAD_ATOL + HEAD_RTOL * |value|``, detections of the same count and labels with
    boxes within ``BOX_ATOL`` pixels and scores within ``SCORE_ATOL``. Raises :class:`FcoslabError` naming the
    first difference; returns the largest differences seen (``{name: max abs difference}``)."""
    _, ort = _require_onnx()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        raise FcoslabError(f"onnxruntime cannot load the exported {path.name}: {str(e).splitlines()[0]}") from None
    largest: dict[str, float] = {}
    for seed, (h, w) in enumerate(sizes):
        sample = sample_input(h, w, cfg, seed)
        outputs = model(sample["images"])
        if with_decode:
            det = decode(outputs, sample["image_sizes"], sample["orig_sizes"], cfg.decode)[0]
            feed = {k: sample[k].numpy() for k in ("images", "image_sizes", "orig_sizes")}
            names, want = ["boxes", "scores", "labels"], [det["boxes"], det["scores"], det["labels"]]
            tolerances = [(BOX_ATOL, 0.0), (SCORE_ATOL, 0.0), (0.0, 0.0)]
        else:
            feed = {"images": sample["images"].numpy()}
            names = _head_names(model)
            want, tolerances = [outputs[k] for k in names], [(HEAD_ATOL, HEAD_RTOL)] * len(names)
        got = session.run(names, feed)
        for name, g, t, (atol, rtol) in zip(names, got, want, tolerances):
            problem = _compare(name, g, t, atol, rtol)
            if problem:
                raise FcoslabError(f"{path.name}: onnxruntime does not reproduce fcoslab on a {h}x{w} test input: "
                                   f"{problem}")
            if g.size:
                largest[name] = max(largest.get(name, 0.0), float(np.abs(g.astype(np.float64) - t.numpy()).max()))
    return largest


def export_onnx(run_dir: str | Path, out_path: str | Path, dynamic: bool = False, with_decode: bool = False,
                image_size: Optional[Sequence[int]] = None, opset: int = 17) -> dict:
    """Export a run (folder or ``.pt`` file) to an ONNX file, checked with onnxruntime before it is written.

    Args:
        dynamic: batch (network alone), height and width are dynamic axes; else the input is fixed at
            ``image_size``.
        with_decode: the file also decodes: one padded image, its sizes -> boxes, scores, labels (module doc).
        image_size: (H, W) or (S,) of the traced (and, when static, the only) input; default
            :func:`default_image_size`.
        opset: ONNX opset, 17 to :data:`MAX_OPSET`.
    Returns:
        ``{"path", "inputs", "outputs", "image_size", "max_abs_diff"}``: the file and the largest differences
        between onnxruntime and fcoslab on the check inputs. Raises :class:`FcoslabError` (and writes nothing)
        when the run cannot be read or onnxruntime disagrees with fcoslab.
    """
    onnx, _ = _require_onnx()
    if not 17 <= opset <= MAX_OPSET:
        raise FcoslabError(f"--opset {opset}: fcoslab exports opsets 17 to {MAX_OPSET} (the TorchScript exporter's "
                           "highest)")
    predictor = Predictor(run_dir, device="cpu", amp="off")
    model, cfg = predictor.model, predictor.cfg
    training_layout(model)  # contiguous weights: the graph does not carry channels-last conversions
    size = _parse_size(image_size) if image_size else default_image_size(cfg)
    module, args, inputs, outputs, axes = _export_args(model, cfg, with_decode, dynamic, sample_input(*size, cfg))
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes or None, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {"config": cfg.to_dict(), "class_names": predictor.class_names, "cat_ids": predictor.cat_ids,
            "with_decode": with_decode, "image_size": None if dynamic else list(size), "epoch": predictor.epoch}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = _META + key, json.dumps(value)
    out, largest = Path(out_path), {}

    def write(tmp: Path) -> None:
        onnx.save(proto, str(tmp))
        largest.update(check_file(Path(tmp), model, cfg, with_decode, _check_sizes(size, dynamic, cfg)))

    atomic_write(out, write)
    return {"path": out, "inputs": inputs, "outputs": outputs, "image_size": None if dynamic else size,
            "max_abs_diff": largest}


def _parse_size(image_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in image_size)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise FcoslabError(f"image size {list(image_size)}: give one side or (height, width), positive")
    return size


def read_metadata(session) -> dict:
    """The fcoslab metadata of an onnxruntime session's model (empty when fcoslab did not export it)."""
    meta = session.get_modelmeta().custom_metadata_map
    return {k[len(_META):]: json.loads(v) for k, v in meta.items() if k.startswith(_META)}


class OnnxPredictor:
    """A file exported with ``with_decode``, run with onnxruntime on the CPU: ``OnnxPredictor("model.onnx")``.

    Like :class:`fcoslab.inference.Predictor` (``cfg``, ``class_names``, ``cat_ids``, called on PIL images),
    from the file alone: its metadata holds the run's config and class names. Images get the run's
    evaluation transforms and padding, one at a time; a static file's input is padded further to its fixed
    size (the same detections as the torch path when that equals the image's own padded size).
    """

    def __init__(self, onnx_path: str | Path, threads: int = 0):
        _, ort = _require_onnx()
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
            raise FcoslabError(f"{self.path} was not exported by fcoslab export (no {_META}config metadata)")
        if not meta["with_decode"]:
            raise FcoslabError(f"{self.path} holds the network alone: predict --onnx needs a file exported "
                               "with --with-decode")
        self.cfg = config_from_dict(meta["config"])
        self.class_names, self.cat_ids = list(meta["class_names"]), list(meta["cat_ids"])
        self.image_size = tuple(meta["image_size"]) if meta["image_size"] else None
        self.transforms = build_transforms(self.cfg.data, train=False)
        self.collate = collate_fn(self.cfg)

    def __call__(self, images: Sequence[Image.Image], batch_size: Optional[int] = None) -> list[dict[str, Tensor]]:
        """Detections of each PIL image, as :meth:`fcoslab.inference.Predictor.__call__` returns them
        (``batch_size`` is accepted for that signature; the file takes one image at a time)."""
        return [self._detect(image) for image in images]

    def _detect(self, image: Image.Image) -> dict[str, Tensor]:
        sample = self.transforms(*make_sample(to_rgb(image), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0))
        batch = self.collate([sample])
        images = float_pixels(batch["images"])  # (1, 3, H, W) float in [0, 1], as the file takes them
        if self.image_size:
            images = self._pad_to_file_size(images, image.size)
        boxes, scores, labels = self.session.run(["boxes", "scores", "labels"], {
            "images": images.numpy(), "image_sizes": batch["image_sizes"].numpy(),
            "orig_sizes": batch["orig_sizes"].numpy()})
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
