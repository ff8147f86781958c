"""A deterministic COCO-like synthetic detection set: 640x480 JPEGs (or a mix of sizes) with COCO's object
statistics.

It stands in for COCO where only the statistics matter (data-loading speed at COCO scale, 80-class
plumbing) and nothing may be downloaded. Per image (figures for COCO train2017 in brackets):

- objects: none in 1% of the images, else a geometric count of mean 7.3 cut at 50: 7.2 (7.3, long tail);
- size: the annotated ``area`` is log-uniform within COCO's small (< 32^2 px), medium and large
  (> 96^2 px) ranges, drawn 41% / 34% / 25% (41 / 34 / 24%); box aspect log-normal;
- classes: 80, class ``k`` a shape ``k % 8`` in a hue ``k // 8``, frequencies long-tailed (1 / rank, so
  class_00 has a fifth of the objects, like COCO's person); category ids are COCO's (1..90 with gaps);
- crowd: 1% of the medium and large objects are a cluster of small copies of one class, annotated as
  one ``iscrowd`` box (0.9% of COCO's annotations);
- pixels: a tinted noise texture, unannotated lines, grain over everything; JPEG quality 90, 4:2:0,
  about 130 KB a file (COCO's average 160 KB), so that decoding costs about what COCO's does.

Boxes are the extents of what was drawn (objects may hide each other, larger ones are drawn first; a
crowd's box is its region); ``area`` is the drawn shape's analytic area, as COCO's is its mask's
(a crowd's: that of one shape filling the region).
Writing takes 3-5 ms an image on one core.

``sizes`` gives each image one of several (width, height), drawn per image; :data:`MIXED_SIZES` are
sizes common among COCO's images, landscape and portrait, for what depends on a mix of sizes and
aspect ratios (batching by padded size in evaluation: ``benchmarks/eval_batching.py``).
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ...errors import FcoslabError
from ...files import atomic_write

# COCO's 80 category ids: 1..90 without the ten ids that the 2014 paper listed but never annotated.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "cross", "ring", "hexagon", "stripes")
FILL = (math.pi / 4, 1.0, 0.5, 0.5, 5 / 9, math.pi / 4 * 0.75, 0.75, 1.0)  # shape area / box area
SIZE_SHARES = (0.41, 0.34, 0.25)  # small, medium, large
SIZE_AREAS = ((16.0, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 0.5))  # px^2; large up to half the image
MEAN_OBJECTS, MAX_OBJECTS, EMPTY_SHARE, CROWD_SHARE = 7.3, 50, 0.01, 0.01
GRAIN = 24  # amplitude of the pixel noise over the finished image
# (width, height) common among COCO's images; ``make-cocolike --sizes mixed``
MIXED_SIZES = ((640, 480), (640, 427), (480, 640), (427, 640), (500, 375), (375, 500), (640, 640), (612, 612),
               (640, 360), (333, 500))


def class_frequencies(classes: int) -> np.ndarray:
    """float64 (K,) object share of each class: 1 / (k + 1), normalised (long-tailed like COCO)."""
    weights = 1.0 / np.arange(1, classes + 1)
    return weights / weights.sum()


def make_textures(seed: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The noise that every image of a set crops from: uint8 (2H, 2W, 3) background blobs, and uint8
    (2H, 2W, 3) grain in ``0..2 * GRAIN`` added over the drawn image (photo-like file sizes)."""
    rng = np.random.default_rng([seed, 7919])
    blobs = Image.fromarray(rng.integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8))
    blobs = np.asarray(blobs.resize((2 * width, 2 * height), Image.BICUBIC), dtype=np.int16)
    fine = rng.integers(-14, 15, (2 * height, 2 * width, 3), dtype=np.int16)
    background = np.clip(blobs // 2 + 64 + fine, 0, 255).astype(np.uint8)
    return background, rng.integers(0, 2 * GRAIN + 1, (2 * height, 2 * width, 3), dtype=np.uint8)


def sample_objects(rng: np.random.Generator, width: int, height: int, freq: np.ndarray) -> dict[str, np.ndarray]:
    """The objects of one image as arrays of length M: ``cls`` int64, ``box`` int64 (M, 4) xyxy pixels
    (continuous extents), ``area`` float64 px^2 of the drawn shape, ``crowd`` bool. Largest first."""
    n = 0 if rng.random() < EMPTY_SHARE else min(int(rng.geometric(1 / MEAN_OBJECTS)), MAX_OBJECTS)
    size = rng.choice(3, n, p=SIZE_SHARES)
    lo = np.array([SIZE_AREAS[s][0] for s in size])
    hi = np.array([SIZE_AREAS[s][1] * (width * height if s == 2 else 1) for s in size])
    hi = np.minimum(hi, 0.5 * width * height)  # a small image holds no object of a size it cannot hold...
    lo = np.minimum(lo, hi)  # ... and such a draw takes the largest area that fits
    area = np.exp(rng.uniform(np.log(lo), np.log(hi)))  # the annotated area
    cls = rng.choice(len(freq), n, p=freq)
    fill = np.array(FILL)[cls % len(SHAPES)]
    aspect = np.exp(np.clip(rng.normal(0, 0.5, n), -1.4, 1.4))  # w / h
    w = np.clip(np.round(np.sqrt(area / fill * aspect)), 2, width).astype(np.int64)
    h = np.clip(np.round(np.sqrt(area / fill / aspect)), 2, height).astype(np.int64)
    x1 = (rng.random(n) * (width - w + 1)).astype(np.int64)
    y1 = (rng.random(n) * (height - h + 1)).astype(np.int64)
    crowd = (size > 0) & (rng.random(n) < CROWD_SHARE)
    order = np.argsort(-(w * h), kind="stable")
    box = np.stack([x1, y1, x1 + w, y1 + h], axis=1).reshape(-1, 4)
    return {"cls": cls[order], "box": box[order], "area": (fill * w * h)[order], "crowd": crowd[order]}


def class_colour(rng: np.random.Generator, cls: int, classes: int) -> tuple[int, int, int]:
    """A colour of the hue of class ``cls`` (``classes / 8`` hues around the circle), jittered."""
    hues = max(1, math.ceil(classes / len(SHAPES)))
    hue = (cls // len(SHAPES) + rng.uniform(-0.15, 0.15)) / hues
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_shape(draw: ImageDraw.ImageDraw, shape: int, box, colour) -> None:
    """Fill shape ``shape`` (an index of :data:`SHAPES`) into pixels ``box`` = x1, y1, x2, y2 (exclusive)."""
    x1, y1, x2, y2 = box[0], box[1], box[2] - 1, box[3] - 1  # PIL's corners are inclusive
    cx, cy, qw, qh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
    name = SHAPES[shape]
    if name in ("ellipse", "ring"):
        draw.ellipse([x1, y1, x2, y2], fill=colour)
        if name == "ring" and qw >= 1 and qh >= 1:
            draw.ellipse([cx - qw, cy - qh, cx + qw, cy + qh], fill=tuple(255 - c for c in colour))
    elif name in ("rectangle", "stripes"):
        draw.rectangle([x1, y1, x2, y2], fill=colour)
        if name == "stripes":
            dark, thick = tuple(c // 3 for c in colour), max(1, (y2 - y1) // 16)
            for y in range(y1, y2 + 1, max(2, (y2 - y1) // 6)):
                draw.rectangle([x1, y, x2, min(y + thick - 1, y2)], fill=dark)
    elif name == "triangle":
        draw.polygon([(x1, y2), (x2, y2), (cx, y1)], fill=colour)
    elif name == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)
    elif name == "cross":
        tw, th = (x2 - x1) / 3, (y2 - y1) / 3
        draw.rectangle([x1 + tw, y1, x2 - tw, y2], fill=colour)
        draw.rectangle([x1, y1 + th, x2, y2 - th], fill=colour)
    else:  # hexagon
        draw.polygon([(x1 + qw, y1), (x2 - qw, y1), (x2, cy), (x2 - qw, y2), (x1 + qw, y2), (x1, cy)], fill=colour)


def _draw_crowd(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cls: int, box, classes: int) -> None:
    """Small copies of class ``cls`` spread over ``box`` (a COCO crowd region)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    for _ in range(int(rng.integers(6, 20))):
        side = int(rng.integers(4, max(5, min(x2 - x1, y2 - y1) // 3)))
        x = int(rng.integers(x1, max(x1 + 1, x2 - side)))
        y = int(rng.integers(y1, max(y1 + 1, y2 - side)))
        member = (x, y, min(x + side, x2), min(y + side, y2))
        draw_shape(draw, cls % len(SHAPES), member, class_colour(rng, cls, classes))


def _crop(rng: np.random.Generator, texture: np.ndarray, width: int, height: int) -> Image.Image:
    y, x = int(rng.integers(0, texture.shape[0] - height + 1)), int(rng.integers(0, texture.shape[1] - width + 1))
    return Image.fromarray(texture[y:y + height, x:x + width])


def render_image(seed_seq: list[int], textures: tuple[np.ndarray, np.ndarray], width: int, height: int,
                 freq: np.ndarray) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """One image and its objects (as :func:`sample_objects` gives them); ``textures`` from :func:`make_textures`."""
    rng = np.random.default_rng(seed_seq)
    tint = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    image = Image.blend(_crop(rng, textures[0], width, height), tint, float(rng.uniform(0.2, 0.7)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 12))):  # unannotated clutter
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        end = (x + int(rng.integers(-200, 200)), y + int(rng.integers(-200, 200)))
        draw.line([(x, y), end], fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    objects = sample_objects(rng, width, height, freq)
    for cls, box, crowd in zip(objects["cls"].tolist(), objects["box"].tolist(), objects["crowd"].tolist()):
        if crowd:
            _draw_crowd(draw, rng, cls, box, len(freq))
        else:
            draw_shape(draw, cls % len(SHAPES), box, class_colour(rng, cls, len(freq)))
    return ImageChops.add(image, _crop(rng, textures[1], width, height), 1.0, -GRAIN), objects


def generator_key(train: int, val: int, seed: int, width: int, height: int, classes: int, quality: int,
                  sizes: Optional[Sequence[tuple[int, int]]] = None) -> str:
    """Identifies the generator version and arguments, stored in each json's ``info``."""
    size = ",".join(f"{w}x{h}" for w, h in sizes) if sizes else f"{width}x{height}"
    return f"fcoslab-cocolike v1 train={train} val={val} seed={seed} size={size} classes={classes} quality={quality}"


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"640x480,480x640"`` -> ((640, 480), (480, 640)); ``"mixed"`` -> :data:`MIXED_SIZES`."""
    if text.strip() == "mixed":
        return MIXED_SIZES
    try:
        return tuple((int(w), int(h)) for w, h in (item.lower().split("x") for item in text.split(",")))
    except ValueError:
        raise FcoslabError(f"image sizes '{text}' must be WIDTHxHEIGHT[,WIDTHxHEIGHT...] (e.g. 640x480,480x640) "
                           "or 'mixed'") from None


def make_cocolike(out: str | os.PathLike, train: int = 1000, val: int = 100, seed: int = 0, width: int = 640,
                  height: int = 480, classes: int = 80, quality: int = 90,
                  sizes: Optional[Sequence[tuple[int, int]]] = None) -> dict[str, Path]:
    """Write ``OUT/{train,val}/*.jpg`` and ``OUT/{train,val}.json`` (COCO format); never downloads.

    The same arguments always give the same files (image ``i`` of a split depends only on ``seed``, the
    split and ``i``). Each json is written last, through a temporary file and a rename. ``sizes``, a
    list of (width, height), replaces ``width`` and ``height``: each image gets one of them, drawn from
    its own seed.

    Returns:
        ``{"train": json_path, "val": json_path}``.
    """
    if not 1 <= classes <= len(COCO_CATEGORY_IDS):
        raise FcoslabError(f"classes {classes} must lie between 1 and {len(COCO_CATEGORY_IDS)} (COCO's category ids)")
    choices = tuple(sizes) if sizes else ((width, height),)
    small = [f"{w}x{h}" for w, h in choices if w < 64 or h < 64]
    if small:
        raise FcoslabError(f"image size {small[0]} is too small for COCO-like objects (at least 64x64)")
    out, freq = Path(out), class_frequencies(classes)
    textures = make_textures(seed, max(w for w, _ in choices), max(h for _, h in choices))
    categories = [{"id": COCO_CATEGORY_IDS[k], "name": f"class_{k:02d}", "supercategory": SHAPES[k % len(SHAPES)]}
                  for k in range(classes)]
    paths = {}
    for split_index, (split, count) in enumerate((("train", train), ("val", val))):
        (out / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            w, h = choices[int(np.random.default_rng([seed, split_index, i, 1]).integers(len(choices)))] \
                if sizes else choices[0]
            image, objects = render_image([seed, split_index, i], textures, w, h, freq)
            name = f"{i:012d}.jpg"
            image.save(out / split / name, quality=quality)
            images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
            for cls, (x1, y1, x2, y2), area, crowd in zip(objects["cls"].tolist(), objects["box"].tolist(),
                                                         objects["area"].tolist(), objects["crowd"].tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": COCO_CATEGORY_IDS[cls], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": round(area, 2), "iscrowd": int(crowd)})
        info = {"description": f"fcoslab cocolike, seed {seed}, {split}",
                "generator": generator_key(train, val, seed, width, height, classes, quality, sizes)}
        data = {"info": info, "images": images, "annotations": annotations, "categories": categories}
        path = out / f"{split}.json"
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data)))
        paths[split] = path
    return paths
