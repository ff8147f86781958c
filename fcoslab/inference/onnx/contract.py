"""The deployment contract of an exported ONNX file: what a deployer must do to an image before the file, what
the graph does itself, what goes in and comes out, and what each label means, as one JSON document.

Every file that ``fcoslab export`` writes carries it as the metadata entry ``fcoslab.contract`` (beside
``fcoslab.config``, ``fcoslab.class_names``, ``fcoslab.cat_ids``, ``fcoslab.with_decode``,
``fcoslab.with_preprocess``, ``fcoslab.image_size`` and ``fcoslab.epoch``, each a JSON value); onnxruntime reads
it without fcoslab (``session.get_modelmeta().custom_metadata_map["fcoslab.contract"]``), and
:func:`read_metadata` returns every entry. ``docs/deploy.md`` walks through it.

Three kinds of file (:data:`KINDS`): ``network`` (the network alone), ``with_decode`` (one padded image and
its sizes in, detections out) and ``with_preprocess`` (a uint8 image of any size in, detections out).
"""

from __future__ import annotations

import json
from pathlib import Path

from ...config import Config
from ...data import IMAGENET_MEAN, IMAGENET_STD

CONTRACT_VERSION = 1
META_PREFIX = "fcoslab."  # prefix of the metadata keys
KINDS = ("network", "with_decode", "with_preprocess")

_DETECTIONS = [
    {"name": "boxes", "dtype": "float32", "shape": ["detections", 4],
     "meaning": "x1, y1, x2, y2 in pixels of the original image (continuous coordinates, width = x2 - x1)"},
    {"name": "scores", "dtype": "float32", "shape": ["detections"], "meaning": "confidence in (0, 1), decreasing"},
    {"name": "labels", "dtype": "int64", "shape": ["detections"],
     "meaning": "0-based label: the index into class_names (labels.classes gives names and COCO category ids)"},
]


def output_names(kind: str, centerness: bool) -> list[str]:
    """The output names of a file of ``kind`` (the network's depend on whether the model has center-ness)."""
    if kind == "network":
        return ["cls_logits", "bbox_ltrb"] + (["centerness"] if centerness else []) + ["points"]
    return [d["name"] for d in _DETECTIONS]


def input_names(kind: str) -> list[str]:
    return {"network": ["images"], "with_decode": ["images", "image_sizes", "orig_sizes"],
            "with_preprocess": ["image"]}[kind]


def _resize(cfg: Config) -> dict:
    """Evaluation's resize (:func:`fcoslab.data.build_transforms` with ``train=False``)."""
    data = cfg.data
    common = {"interpolation": "bilinear", "align_corners": False, "skipped_when_the_size_is_unchanged": True}
    pillow = {"pillow": "Image.resize((w, h), Image.BILINEAR) of the RGB image: the same filter (torch's uint8 "
                        "kernel follows Pillow's; a pixel may differ by one level)"}
    if data.square_size:
        return {"rule": "square", "size": [data.square_size, data.square_size], "antialias": True,
                "on": "uint8 pixels, rounded back to uint8", "aspect_kept": False, **common, **pillow}
    scale = "min(min_size / min(h, w), max_size / max(h, w)) in float64"
    if data.resize == "antialias":
        size, on = "round(h * scale), round(w * scale), half to even, at least 1", "uint8 pixels, rounded back to uint8"
    else:  # torchvision's detection transform
        size, on = "floor(h * scale), floor(w * scale)", "float32 pixels in [0, 1] (the scaling comes first)"
    return {"rule": "shortest_side", "min_size": data.test_min_size, "max_size": data.max_size, "scale": scale,
            "size": size, "antialias": data.resize == "antialias", "on": on, "aspect_kept": True, **common,
            **(pillow if data.resize == "antialias" else {})}


_PAD_NOTES = {
    "with_preprocess": "done in the graph, after its resize",
    "dynamic": "after the resize, H and W go up to the next multiples; the graph pads an input that falls short "
               "itself (with this value), so any padding to the multiples, or none, gives the same outputs",
    "static": "the file takes exactly image_size: pad up to it. fcoslab pads each image only to the next "
              "multiples, so the outputs equal fcoslab's for images whose padded size is image_size (the network "
              "sees the padding); a dynamic or --with-preprocess file gives them for any image",
}


def _preprocess(cfg: Config, kind: str, dynamic: bool) -> dict:
    pad_value = list(IMAGENET_MEAN) if cfg.data.pad_with_mean else [0.0, 0.0, 0.0]
    return {
        "image": "RGB; greyscale replicated to 3 channels, transparent pixels composited on white, EXIF "
                 "orientation applied (as fcoslab predict reads files)",
        "resize": _resize(cfg),
        "pixel_scale": {"from": "uint8", "to": "float32", "multiply_by": 1 / 255, "range": [0.0, 1.0],
                        "formula": "float32(pixel) * float32(1 / 255), as torchvision's ToDtype(float32, scale=True) "
                                   "(a division by 255 differs in the last bit for half of the values)"},
        "channel_order": "RGB",
        "layout": "HWC uint8 image" if kind == "with_preprocess" else "NCHW float32",
        "pad": {"multiple": cfg.model.size_divisibility, "sides": "bottom and right", "value": pad_value,
                "value_space": "[0, 1] pixels, per channel, before the normalisation", "note": _PAD_NOTES[
                    "with_preprocess" if kind == "with_preprocess" else ("dynamic" if dynamic else "static")]},
        "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "formula": "(x - mean) / std"},
        "in_graph": (["resize", "pixel_scale", "pad", "normalize"] if kind == "with_preprocess"
                     else (["pad", "normalize"] if dynamic else ["normalize"])),
    }


def _inputs(kind: str, dynamic: bool, image_size) -> list[dict]:
    if kind == "with_preprocess":
        return [{"name": "image", "dtype": "uint8", "shape": ["height", "width", 3],
                 "meaning": "the whole image, any size, RGB, HWC (numpy.asarray of an RGB PIL image)"}]
    H, W = ("height", "width") if dynamic else tuple(image_size)
    images = {"name": "images", "dtype": "float32", "shape": ["batch" if dynamic and kind == "network" else 1, 3, H, W],
              "meaning": "resized, scaled to [0, 1] and padded as preprocess says (a dynamic file pads H and W "
                         "to the multiple itself, a static one takes exactly its shape)"}
    if kind == "network":
        return [images]
    return [images,
            {"name": "image_sizes", "dtype": "int64", "shape": [1, 2], "meaning": "(h, w) after the resize, before padding"},
            {"name": "orig_sizes", "dtype": "int64", "shape": [1, 2], "meaning": "(h, w) of the original image"}]


def _network_outputs(cfg: Config) -> list[dict]:
    P = "points (P: every level's h * w, level after level, row-major)"
    outputs = [
        {"name": "cls_logits", "dtype": "float32", "shape": ["batch", "P", "K"], "meaning": "class logits; " + P},
        {"name": "bbox_ltrb", "dtype": "float32", "shape": ["batch", "P", 4],
         "meaning": "distances left, top, right, bottom from each point, pixels of the padded input"},
        {"name": "centerness", "dtype": "float32", "shape": ["batch", "P"], "meaning": "center-ness logits"},
        {"name": "points", "dtype": "float32", "shape": ["P", 2], "meaning": "x, y of each point, padded-input pixels"},
    ]
    return [o for o in outputs if o["name"] != "centerness" or cfg.model.centerness]


def _decoding(cfg: Config, kind: str) -> dict:
    d = cfg.decode
    params = {"score_thresh": d.score_thresh, "pre_nms_topk": d.pre_nms_topk, "nms_thresh": d.nms_thresh,
              "class_agnostic_nms": d.class_agnostic_nms, "max_detections": d.max_detections}
    if kind != "network":
        return {"in_graph": True, **params}
    score = "sigmoid(cls_logits)" + (" * sigmoid(centerness), square root" if cfg.model.centerness else "")
    return {"in_graph": False, **params, "strides": list(cfg.model.strides), "point_offset": cfg.model.point_offset,
            "recipe": [f"score = {score}", "per level: the pre_nms_topk best (point, class) pairs, those above "
                       "score_thresh", "box = (px - l, py - t, px + r, py + b), clipped to (0, 0, w, h) of "
                       "image_sizes", "NMS at nms_thresh per class (all classes together under "
                       "class_agnostic_nms), the max_detections best", "boxes times (orig w / w, orig h / h)"]}


def deployment_contract(cfg: Config, kind: str, dynamic: bool, image_size, class_names, cat_ids) -> dict:
    """The contract of a file (module doc); ``image_size`` (H, W) of a static file's input, or None."""
    return {
        "contract_version": CONTRACT_VERSION, "kind": kind, "dynamic": dynamic or kind == "with_preprocess",
        "image_size": None if image_size is None else list(image_size),
        "preprocess": _preprocess(cfg, kind, dynamic),
        "inputs": _inputs(kind, dynamic, image_size),
        "outputs": _network_outputs(cfg) if kind == "network" else _DETECTIONS,
        "decode": _decoding(cfg, kind),
        "labels": {"first": 0, "classes": [{"label": i, "name": n, "category_id": c}
                                           for i, (n, c) in enumerate(zip(class_names, cat_ids))]},
    }


def read_metadata(session) -> dict:
    """The fcoslab metadata of an onnxruntime session's model, or of an ONNX file's path (empty when fcoslab
    did not export it), each value decoded from JSON; ``contract`` is :func:`deployment_contract`'s (absent
    from files of fcoslab before it)."""
    if isinstance(session, (str, Path)):
        import onnxruntime

        session = onnxruntime.InferenceSession(str(session), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    return {k[len(META_PREFIX):]: json.loads(v) for k, v in meta.items() if k.startswith(META_PREFIX)}
