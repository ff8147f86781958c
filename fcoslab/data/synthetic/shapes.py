"""A deterministic synthetic detection dataset in COCO format: the default data of every command.

Each image holds 0-7 filled shapes of four classes on a noisy gradient background with unannotated
clutter (thin lines and dots). Object sides are drawn log-uniformly from ``min_side`` (12% by default) to
85% of the image size so that they spread over the FPN levels; objects may overlap (pairwise IoU up to 0.3).
Boxes are the tight pixel extents of what was drawn.

The default smallest side, 15 px in a 128 px image, is about two strides of P3. Version 2 of the
generator went down to 8% (10 px, 1.3 strides): there a third of the shapes preset's missed objects
were boxes of 8-12 px localised at IoU 0.2-0.45, and val AP50 stayed at 0.915 where it is 0.957 now
(docs/results.md, 'How the shapes preset was tuned'). ``min_side=0.08`` still makes that harder set.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from ...config import DataConfig, ShapesConfig
from ...errors import FcoslabError
from ...files import atomic_write

log = logging.getLogger("fcoslab")

CLASSES = ("ellipse", "rectangle", "triangle", "cross")
DEFAULT_MIN_SIDE = 0.12  # smallest object side as a fraction of the image size (see the module docstring)
# Category ids as COCO files carry them; deliberately not 0..K-1 so the label mapping is always exercised.
CATEGORY_IDS = (1, 2, 3, 5)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(20, 235, size=3)
    direction = rng.normal(size=2)
    ramp = (np.arange(size)[:, None] * direction[1] + np.arange(size)[None, :] * direction[0]) / size
    img = base[None, None, :] + rng.uniform(-40, 40, size=3)[None, None, :] * ramp[..., None]
    img += rng.normal(0, rng.uniform(2, 12), size=(size, size, 3))  # colour noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    for _ in range(rng.integers(0, 5)):
        xy = [tuple(rng.integers(0, size, 2).tolist()), tuple(rng.integers(0, size, 2).tolist())]
        draw.line(xy, fill=tuple(rng.integers(0, 256, 3).tolist()), width=1)
    for _ in range(rng.integers(0, 8)):
        x, y = rng.integers(0, size, 2).tolist()
        r = int(rng.integers(1, 3))
        draw.ellipse([x, y, x + r, y + r], fill=tuple(rng.integers(0, 256, 3).tolist()))


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray) -> tuple[int, int, int]:
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - bg).sum() > 150:
            break
    return tuple(int(c) for c in colour)


def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, box: list[int], colour) -> None:
    x1, y1, x2, y2 = box  # inclusive pixel corners
    if cls == 0:
        draw.ellipse([x1, y1, x2, y2], fill=colour)
    elif cls == 1:
        draw.rectangle([x1, y1, x2, y2], fill=colour)
    elif cls == 2:
        draw.polygon([(x1, y2), (x2, y2), ((x1 + x2) // 2, y1)], fill=colour)
    else:
        tw, th = max(1, (x2 - x1) // 3), max(1, (y2 - y1) // 3)
        cx1, cy1 = x1 + tw, y1 + th
        draw.rectangle([cx1, y1, x2 - tw, y2], fill=colour)
        draw.rectangle([x1, cy1, x2, y2 - th], fill=colour)


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_image(seed_seq: list[int], size: int, min_side: float) -> tuple[Image.Image, list[tuple[int, list[float]]]]:
    """Render one image. Returns the PIL image and ``[(class_index, [x1, y1, x2, y2]), ...]``."""
    rng = np.random.default_rng(seed_seq)
    pixels = _background(rng, size)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    _clutter(draw, rng, size)
    objects: list[tuple[int, list[float]]] = []
    n_objects = 0 if rng.random() < 0.05 else int(rng.integers(1, 8))
    min_px, max_px = min_side * size, 0.85 * size
    for _ in range(n_objects):
        for _attempt in range(20):
            side = math.exp(rng.uniform(math.log(min_px), math.log(max_px)))
            aspect = math.exp(rng.uniform(-0.4, 0.4))
            w = int(np.clip(round(side * aspect), 4, size - 2))
            h = int(np.clip(round(side / aspect), 4, size - 2))
            x1 = int(rng.integers(0, size - w))
            y1 = int(rng.integers(0, size - h))
            box = [float(x1), float(y1), float(x1 + w), float(y1 + h)]  # continuous extent of pixels
            if all(_iou(box, other) <= 0.3 for _, other in objects):
                break
        else:
            continue
        objects.append((int(rng.integers(0, len(CLASSES))), box))
    # Large objects first, so that a small one is never hidden under a larger one drawn after it.
    objects.sort(key=lambda o: -(o[1][2] - o[1][0]) * (o[1][3] - o[1][1]))
    for cls, box in objects:
        x1, y1, x2, y2 = (int(v) for v in box)
        bg = pixels[y1:y2, x1:x2].reshape(-1, 3).mean(0)
        _draw_shape(draw, cls, [x1, y1, x2 - 1, y2 - 1], _contrasting_colour(rng, bg))
    return image, objects


def generator_key(train: int, val: int, image_size: int, seed: int, min_side: float) -> str:
    """Identifies the generator version and arguments, stored in each json's ``info``."""
    return f"fcoslab-shapes v3 train={train} val={val} size={image_size} seed={seed} min_side={min_side:g}"


def make_shapes(out: str | os.PathLike, train: int = 4608, val: int = 128, image_size: int = 128,
                seed: int = 0, min_side: float = DEFAULT_MIN_SIDE) -> dict[str, Path]:
    """Write ``OUT/{train,val}/*.png`` and ``OUT/{train,val}.json`` (COCO format).

    ``min_side`` is the smallest object side as a fraction of ``image_size`` (at most 0.85).
    The same arguments always give the same files. Each json is written last, through a temporary
    file and a rename, so a set interrupted half-way is never mistaken for a complete one.

    Returns:
        ``{"train": json_path, "val": json_path}``.
    """
    if not 4 / image_size <= min_side <= 0.85:
        raise FcoslabError(f"min_side {min_side:g} must lie between {4 / image_size:g} (4 px) and 0.85: it is the "
                           f"smallest object side as a fraction of the image size ({image_size})")
    out = Path(out)
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in zip(CATEGORY_IDS, CLASSES)]
    paths = {}
    for split_index, (split, count) in enumerate((("train", train), ("val", val))):
        image_dir = out / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image, objects = render_image([seed, split_index, i], image_size, min_side)
            name = f"{i:06d}.png"
            image.save(image_dir / name)
            images.append({"id": i + 1, "file_name": name, "width": image_size, "height": image_size})
            for cls, (x1, y1, x2, y2) in objects:
                w, h = x2 - x1, y2 - y1
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": CATEGORY_IDS[cls], "bbox": [x1, y1, w, h],
                                    "area": w * h, "iscrowd": 0})
        info = {"description": f"fcoslab shapes, seed {seed}, {split}", "generator": generator_key(train, val, image_size, seed, min_side)}
        ann = {"info": info, "images": images,
               "annotations": annotations, "categories": categories}
        path = out / f"{split}.json"
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(ann)))
        paths[split] = path
    return paths


def read_generator_key(path: str | os.PathLike) -> Optional[str]:
    """The generator key in an annotation file's ``info`` (as :func:`make_shapes` writes it): "" for a
    shapes file of an older version, None for a missing, unreadable or foreign file."""
    try:
        with open(path) as f:
            info = json.load(f).get("info") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(info, dict):
        return None
    if isinstance(info.get("generator"), str):
        return info["generator"]
    return "" if str(info.get("description", "")).startswith("fcoslab shapes") else None


def ensure_shapes(d: DataConfig, s: Optional[ShapesConfig]) -> None:
    """Generate the shapes set ``s`` where the data paths of ``d`` point, when the config has a ``shapes``
    section and the files are missing or were made with other arguments. Foreign files at those paths are
    never overwritten."""
    if s is None:
        return
    wanted = generator_key(s.train, s.val, s.image_size, s.seed, s.min_side)
    found = [read_generator_key(p) for p in (d.train_ann, d.val_ann)]
    if found == [wanted, wanted]:
        return
    for path, key in zip((d.train_ann, d.val_ann), found):
        if key is None and Path(path).exists():
            raise FcoslabError(f"{path} exists and was not generated by fcoslab make-shapes; set shapes=none "
                               "to train on it, or move it away to generate the shapes set there")
    out = Path(d.train_ann).parent
    if Path(d.val_ann).parent != out or Path(d.train_images) != out / "train" or Path(d.val_images) != out / "val":
        raise FcoslabError("the config has a shapes section, so the shapes set is generated, but data.train_ann, "
                           "val_ann, train_images and val_images do not follow the layout OUT/train.json, "
                           "OUT/val.json, OUT/train, OUT/val; set shapes=none for your own data")
    log.info("generating the shapes dataset into %s (%d train, %d val images)", out, s.train, s.val)
    make_shapes(out, s.train, s.val, s.image_size, s.seed, s.min_side)
