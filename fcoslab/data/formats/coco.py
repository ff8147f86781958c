"""COCO-format datasets: checked loading, category-id <-> label mapping, image reading in any PIL mode
(JPEGs through libjpeg-turbo's fast path).

COCO ``[x, y, w, h]`` boxes and category ids stop here: the dataset yields xyxy pixel boxes and
contiguous labels ``0..K-1``; :class:`CocoIndex` maps labels back to category ids for evaluation.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import FcoslabError

log = logging.getLogger("fcoslab")


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and np.isfinite(x)


def _is_id(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_coco_dict(data, source: str) -> dict:
    """Validate a COCO detection dictionary and fill optional fields.

    Missing ``iscrowd`` becomes 0 and missing ``area`` becomes ``w * h`` (hand-made files often omit
    them, and pycocotools then raises KeyError). Every problem raises :class:`FcoslabError` naming
    ``source`` and the offending key.

    Returns:
        a new dict with ``images``, ``annotations``, ``categories`` (and ``info`` if present).
    """
    if not isinstance(data, dict):
        raise FcoslabError(f"{source}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise FcoslabError(f"{source}: missing key '{key}' (a COCO file needs images, annotations, categories)")
        if not isinstance(data[key], list):
            raise FcoslabError(f"{source}: '{key}' must be a list, got {type(data[key]).__name__}")
    categories = _check_categories(data["categories"], source)
    images = _check_images(data["images"], source)
    annotations = _check_annotations(data["annotations"], {im["id"] for im in images},
                                     {c["id"] for c in categories}, source)
    out = {"images": images, "annotations": annotations, "categories": categories}
    if isinstance(data.get("info"), dict):
        out["info"] = data["info"]
    return out


def _with_unique_ids(items: list, section: str, source: str):
    """``(i, item)`` of a COCO list whose items are objects with an integer ``id`` seen once."""
    seen = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not _is_id(item.get("id")):
            raise FcoslabError(f"{source}: {section}[{i}] needs an integer 'id', got {item!r:.80}")
        if item["id"] in seen:
            raise FcoslabError(f"{source}: {section}[{i}] repeats id {item['id']}")
        seen.add(item["id"])
        yield i, item


def _check_categories(items: list, source: str) -> list[dict]:
    categories = [{"id": c["id"], "name": str(c.get("name", c["id"])), "supercategory": str(c.get("supercategory", ""))}
                  for _, c in _with_unique_ids(items, "categories", source)]
    if not categories:
        raise FcoslabError(f"{source}: 'categories' is empty")
    return categories


def _check_images(items: list, source: str) -> list[dict]:
    images = []
    for i, im in _with_unique_ids(items, "images", source):
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise FcoslabError(f"{source}: images[{i}] (id {im['id']}) needs a 'file_name' string")
        for key in ("width", "height"):
            if key in im and not (_is_number(im[key]) and im[key] > 0):
                raise FcoslabError(f"{source}: images[{i}] (id {im['id']}) has invalid '{key}' {im[key]!r}")
        images.append(dict(im))
    return images


def _check_annotations(items: list, image_ids: set, cat_ids: set, source: str) -> list[dict]:
    annotations = []
    for i, a in enumerate(items):
        where = f"{source}: annotations[{i}]"
        if not isinstance(a, dict):
            raise FcoslabError(f"{where} must be an object, got {type(a).__name__}")
        if not _is_id(a.get("image_id")) or a["image_id"] not in image_ids:
            raise FcoslabError(f"{where} refers to image_id {a.get('image_id')!r}, which is not in 'images'")
        if not _is_id(a.get("category_id")) or a["category_id"] not in cat_ids:
            raise FcoslabError(f"{where} refers to category_id {a.get('category_id')!r}, which is not in 'categories'")
        bbox = a.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise FcoslabError(f"{where} needs 'bbox' as 4 finite numbers [x, y, w, h], got {bbox!r:.80}")
        iscrowd = a.get("iscrowd", 0)
        if iscrowd not in (0, 1, True, False):
            raise FcoslabError(f"{where} has 'iscrowd' {iscrowd!r}; expected 0 or 1")
        area = a.get("area", float(bbox[2]) * float(bbox[3]))
        if not _is_number(area):
            raise FcoslabError(f"{where} has non-numeric 'area' {area!r}")
        fixed = dict(a, bbox=[float(v) for v in bbox], iscrowd=int(iscrowd), area=float(area))
        fixed.setdefault("id", i + 1)
        annotations.append(fixed)
    ids = [a["id"] for a in annotations]
    if len(set(map(repr, ids))) != len(ids):  # pycocotools indexes annotations by id
        for k, a in enumerate(annotations):
            a["id"] = k + 1
    return annotations


def read_coco_json(path: str | Path) -> dict:
    """Read and validate a COCO annotation file (see :func:`check_coco_dict`)."""
    path = Path(path)
    if not path.exists():
        raise FcoslabError(f"annotation file {path} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FcoslabError(f"cannot read annotation file {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FcoslabError(f"annotation file {path} is not valid JSON ({e})") from None
    return check_coco_dict(data, str(path))


def coco_api(data: dict):
    """A pycocotools ``COCO`` object built from an in-memory dict, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_image(path: str | Path, exif_transpose: bool = False) -> Image.Image:
    """Open an image file as 8-bit RGB, whatever its mode (L, LA, P, RGBA, CMYK, I;16, F, ...).

    ``exif_transpose`` applies the EXIF orientation of photos (for prediction; COCO annotations refer
    to the stored pixels, so datasets leave it off).
    """
    try:
        with Image.open(path) as im:
            im.load()
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except FileNotFoundError:
        raise FcoslabError(f"image {path} is listed but does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise FcoslabError(f"cannot read image {path}: {e}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # high bit depth: scale to 8 bits
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size else 0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0) if im.mode != "F" else 255.0 / max(hi, 1e-12)
        im = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):  # composite transparent pixels on white
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
# Files taken as images when a folder is searched (predict, YOLO folders): formats PIL reads
IMAGE_SUFFIXES = frozenset({*JPEG_SUFFIXES, ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})


def read_pixels(path: str | Path) -> torch.Tensor:
    """The stored pixels of an image file as uint8 (3, H, W) RGB, equal to ``pil_to_tensor(read_image(path))``.

    JPEGs in YCbCr, RGB or grayscale (baseline or progressive) are decoded by ``torchvision.io.decode_jpeg``:
    the same pixels as PIL (both use libjpeg-turbo's accurate integer DCT and fancy upsampling; no EXIF
    rotation), in 1.34 ms rather than 1.58 ms for a 640x480 ``make_cocolike`` image on one AMD EPYC core
    (``benchmarks/loader.py``, 2026-11-30; the decoders alone take 1.29 and 1.36 ms: the rest is PIL's copies).
    Every other file, CMYK JPEGs included, goes through :func:`read_image`.
    """
    if Path(path).suffix.lower() in JPEG_SUFFIXES:
        try:
            data = bytearray(Path(path).read_bytes())
        except FileNotFoundError:
            raise FcoslabError(f"image {path} is listed but does not exist") from None
        except OSError as e:
            raise FcoslabError(f"cannot read image {path}: {e}") from None
        pixels = decode_plain_jpeg(data)
        if pixels is not None:
            return pixels
    from torchvision.transforms.v2 import functional as F

    return F.pil_to_tensor(read_image(path))


def decode_plain_jpeg(data: bytearray) -> torch.Tensor | None:
    """uint8 (3, H, W) RGB pixels of a YCbCr, RGB or grayscale JPEG file's bytes through libjpeg-turbo
    (``torchvision.io.decode_jpeg``); None for anything else (CMYK, not a JPEG, unreadable, no decoder),
    which :func:`read_image` then reads or reports."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # deprecated since torchvision 0.29, to move to TorchCodec
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
        try:
            return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:  # a corrupt file: read_image names the problem
            return None


@dataclass
class CocoIndex:
    """Category bookkeeping of one annotation file: contiguous labels <-> COCO category ids."""

    cat_ids: list[int]  # label -> category id, sorted by id
    names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def label_to_cat_id(self, label: int) -> int:
        return self.cat_ids[label]

    def cat_id_to_label(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.cat_ids)}


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset.

    Each item is ``(image, target)`` with image a ``tv_tensors.Image`` uint8 (3, H, W) before the
    transforms, and target a dict: ``boxes`` BoundingBoxes (M, 4) xyxy pixels, ``labels`` int64 (M,)
    in ``0..K-1``, ``image_id`` int, ``orig_size`` int64 (2,) as (h, w). Crowd boxes are left out of
    the targets; images without annotations are kept as negatives. Boxes are clipped to the image and
    those with non-positive size dropped (counts in ``self.box_report`` and the log).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, transforms=None, check_images: bool = True,
                 data: dict | None = None, cache_images: bool = False):
        self.ann_file, self.image_dir, self.transforms = Path(ann_file), Path(image_dir), transforms
        self._cache: dict[int, torch.Tensor] | None = {} if cache_images else None
        self.data = data if data is not None else read_coco_json(ann_file)
        cats = sorted(self.data["categories"], key=lambda c: c["id"])
        self.index = CocoIndex([c["id"] for c in cats], [c["name"] for c in cats])
        self.images = sorted(self.data["images"], key=lambda im: im["id"])
        if not self.image_dir.is_dir():
            raise FcoslabError(f"image folder {self.image_dir} (for {self.ann_file}) does not exist")
        if check_images:
            missing = [im["file_name"] for im in self.images if not (self.image_dir / im["file_name"]).is_file()]
            if missing:
                raise FcoslabError(f"{len(missing)} image(s) listed in {self.ann_file} are missing from "
                                   f"{self.image_dir}, e.g. {', '.join(missing[:3])}")
        self.targets, self.box_report = self._prepare_targets()
        if self.box_report["dropped"] or self.box_report["clipped"]:
            log.info("%s: clipped %d boxes to their image, dropped %d with non-positive size, skipped %d crowd",
                     self.ann_file, self.box_report["clipped"], self.box_report["dropped"], self.box_report["crowd"])

    def _prepare_targets(self):
        to_label = self.index.cat_id_to_label()
        per_image: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in self.data["annotations"]:
            per_image[a["image_id"]].append(a)
        report = {"clipped": 0, "dropped": 0, "crowd": 0}
        targets = {}
        for im in self.images:
            anns = per_image[im["id"]]
            crowd = [a for a in anns if a["iscrowd"]]
            report["crowd"] += len(crowd)
            anns = [a for a in anns if not a["iscrowd"]]
            boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
            labels = np.array([to_label[a["category_id"]] for a in anns], dtype=np.int64)
            if "width" in im and "height" in im:
                clipped = boxes.copy()
                clipped[:, 0::2] = clipped[:, 0::2].clip(0, im["width"])
                clipped[:, 1::2] = clipped[:, 1::2].clip(0, im["height"])
                report["clipped"] += int((np.abs(clipped - boxes) > 1e-6).any(1).sum())
                boxes = clipped
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            report["dropped"] += int((~keep).sum())
            targets[im["id"]] = (boxes[keep].astype(np.float32), labels[keep])
        return targets, report

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.images[i]["file_name"]

    def load_image(self, i: int) -> Image.Image:
        """The RGB image of item ``i`` as PIL (for drawing; the items' pixels come from :meth:`load_pixels`)."""
        return read_image(self.image_path(i))

    def load_pixels(self, i: int) -> torch.Tensor:
        """uint8 (3, H, W) RGB pixels of item ``i`` (decoded once and kept when the dataset caches images)."""
        if self._cache is None:
            return read_pixels(self.image_path(i))
        if i not in self._cache:
            self._cache[i] = read_pixels(self.image_path(i))
        return self._cache[i].clone()  # a caller may change its copy in place

    def raw_item(self, i: int):
        """Item ``i`` before the dataset's transforms: ``(tv_tensors.Image uint8, target)``."""
        info = self.images[i]
        boxes, labels = self.targets[info["id"]]
        return make_sample(self.load_pixels(i), boxes, labels, info["id"])

    def __getitem__(self, i: int):
        image, target = self.raw_item(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def make_sample(image: Image.Image | torch.Tensor, boxes: np.ndarray, labels: np.ndarray, image_id: int):
    """``(image, target)`` as :class:`CocoDetection` items are, before the transforms, from an RGB PIL
    image or uint8 (3, H, W) pixels: boxes float (M, 4) xyxy pixels, clipped to the image (a file may
    differ from its json's width and height)."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    pixels = F.pil_to_tensor(image) if isinstance(image, Image.Image) else image
    h, w = pixels.shape[-2:]
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    image = tv_tensors.Image(pixels)
    target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(h, w)),
              "labels": torch.from_numpy(labels), "image_id": image_id, "orig_size": torch.tensor([h, w])}
    return image, target
