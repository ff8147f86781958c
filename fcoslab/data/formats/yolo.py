"""YOLO txt labels converted to a checked COCO dict (see :mod:`.convert`).

Each image ``IMAGES/a/b.jpg`` has its labels in ``LABELS/a/b.txt``, one box a line: ``class cx cy w h``,
class a 0-based index into the names and the box centre and size normalised by the image width and height.
Pixel convention: x1 = (cx - w / 2) * W, x2 = (cx + w / 2) * W (and likewise y with H), continuous pixels,
rounded to 1e-4 px. Values may stray outside [0, 1] by :data:`TOLERANCE` (rounding in exporters) and are
clamped; further out is an error. Boxes are not clipped here: the dataset clips them and check-data counts
them.

Image sizes come from the image headers (PIL reads no pixels); EXIF orientation is not applied.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from ...errors import FcoslabError
from .coco import IMAGE_SUFFIXES
from .convert import CocoBuilder, Conversion, PathLike, image_size, parse_number, read_class_names, read_lines

TOLERANCE = 1e-3  # normalised coordinates within [-TOLERANCE, 1 + TOLERANCE] are clamped to [0, 1]
FIELDS = ("cx", "cy", "w", "h")


def yolo_to_coco(images_dir: PathLike, labels_dir: PathLike, names: PathLike | Sequence[str]) -> Conversion:
    """Convert a YOLO image folder and label folder (searched recursively, matched by relative path).

    Args:
        images_dir: folder of images (``file_name`` is relative to it).
        labels_dir: folder of ``.txt`` label files (may be ``images_dir`` itself).
        names: a ``data.yaml`` (its ``names:`` list or ``{index: name}`` dict), a ``classes.txt`` (one name a
            line), or the list of names itself. Class ``k`` becomes category id ``k + 1``.

    Returns:
        a :class:`Conversion` whose ``image_dir`` is ``images_dir``. Report: images, boxes, negatives
        (images without boxes: an empty label file or none), unlabelled (images without a label file,
        converted as negatives), orphan_labels (label files without an image, skipped), skipped_files (files
        in the image folder that are not images).

    Raises:
        FcoslabError: with ``file:line`` for a bad line (number of fields, non-number, class out of range,
            value outside [0, 1]); for a bad names file or an unreadable image; for an image folder without
            images (naming both folders when they look swapped).
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder, what in ((images_dir, "image"), (labels_dir, "label")):
        if not folder.is_dir():
            raise FcoslabError(f"YOLO {what} folder {folder} does not exist")
    names_file = Path(names) if isinstance(names, (str, os.PathLike)) else None
    class_names = read_yolo_names(names_file) if names_file else list(names)
    images, skipped = _image_files(images_dir)
    if not images:
        raise FcoslabError(_no_images_message(images_dir, labels_dir))
    labels = {p.relative_to(labels_dir).with_suffix(""): p for p in sorted(labels_dir.rglob("*.txt"))
              if names_file is None or p.resolve() != names_file.resolve()}
    builder = CocoBuilder(class_names, f"YOLO {images_dir}")
    report = Counter()
    for key, path in images.items():
        width, height = image_size(path, f"YOLO image folder {images_dir}")
        image_id = builder.add_image(path.relative_to(images_dir).as_posix(), width, height)
        if key not in labels:
            report["unlabelled"] += 1
            continue
        for label, box in read_yolo_labels(labels[key], len(class_names), width, height):
            builder.add_box(image_id, label, box)
    counts = {"images": len(builder.images), "boxes": len(builder.annotations), "negatives": builder.negatives,
              "unlabelled": report["unlabelled"], "orphan_labels": len(set(labels) - set(images)),
              "skipped_files": skipped}
    coco = builder.finish({"converted_from": "yolo", "image_dir": str(images_dir)})
    return Conversion(coco, images_dir, counts, f"YOLO {images_dir}")


def _image_files(images_dir: Path) -> tuple[dict[Path, Path], int]:
    """Images under ``images_dir`` keyed by relative path without suffix, and the number of other files
    (label files beside the images not counted)."""
    images: dict[Path, Path] = {}
    skipped = 0
    for path in sorted(p for p in images_dir.rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped += path.suffix.lower() != ".txt"
            continue
        key = path.relative_to(images_dir).with_suffix("")
        if key in images:
            raise FcoslabError(f"YOLO images {images[key]} and {path} would share the label file {key}.txt")
        images[key] = path
    return images, skipped


def _no_images_message(images_dir: Path, labels_dir: Path) -> str:
    """Why an image folder without images is an error: the image and label folders given the other way
    round (the image folder holds label files, the label folder images), or no images at all."""
    label_files = sum(1 for _ in images_dir.rglob("*.txt"))
    label_folder_images = sum(1 for p in labels_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if label_files and label_folder_images:
        return (f"YOLO image folder {images_dir} holds {label_files} .txt label files and no images, and the label "
                f"folder {labels_dir} holds {label_folder_images} images: the two folders look swapped "
                f"(--images should be {labels_dir}, --labels {images_dir})")
    return (f"YOLO image folder {images_dir} holds no images (searched recursively for "
            f"{', '.join(sorted(IMAGE_SUFFIXES))})")


def read_yolo_labels(path: Path, num_classes: int, width: int, height: int) -> list[tuple[int, tuple]]:
    """The boxes of one label file: ``[(label, (x1, y1, x2, y2)), ...]`` in pixels of a ``width`` x
    ``height`` image; blank lines skipped, anything else malformed raises FcoslabError with file:line."""
    boxes = []
    for i, line in enumerate(read_lines(path, "YOLO label file"), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{i}"
        if len(fields) != 5:
            hint = " (polygon/segment labels are not supported)" if len(fields) > 5 else ""
            raise FcoslabError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}{hint}")
        label = parse_number(fields[0], where, "class")
        if label != int(label) or not 0 <= label < num_classes:
            raise FcoslabError(f"{where}: class {fields[0]} is out of range: expected an integer 0..{num_classes - 1} "
                               f"({num_classes} class names)")
        values = [parse_number(text, where, key) for key, text in zip(FIELDS, fields[1:])]
        for key, value in zip(FIELDS, values):
            if not -TOLERANCE <= value <= 1 + TOLERANCE:
                raise FcoslabError(f"{where}: {key} {value:g} is outside [0, 1] (YOLO coordinates are normalised "
                                   "by the image width and height)")
        cx, cy, w, h = (min(max(v, 0.0), 1.0) for v in values)
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        boxes.append((int(label), tuple(round(v, 4) for v in box)))
    return boxes


def read_yolo_names(path: Path) -> list[str]:
    """Class names from a ``data.yaml`` (``names:`` as a list or a ``{0: a, 1: b}`` dict) or a text file
    with one name a line (any other suffix)."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return read_class_names(path, "YOLO class names file")
    text = "\n".join(read_lines(path, "YOLO data.yaml"))
    try:
        import yaml
    except ImportError:  # PyYAML is not a dependency of fcoslab: read the usual shapes of `names:`
        names = _names_without_yaml(text, path)
    else:
        try:
            names = (yaml.safe_load(text) or {}).get("names") if text.strip() else None
        except (yaml.YAMLError, AttributeError) as e:
            raise FcoslabError(f"{path}: not a YAML mapping with a 'names' key ({str(e).splitlines()[0]})") from None
    return _names_as_list(names, path)


def _names_as_list(names, path: Path) -> list[str]:
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: int(k) if str(k).lstrip("-").isdigit() else -1)
        if [str(k) for k in keys] != [str(k) for k in range(len(keys))]:
            raise FcoslabError(f"{path}: 'names' keys must be the class indices 0..{len(keys) - 1}, got "
                               f"{', '.join(map(str, keys))}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise FcoslabError(f"{path}: needs a non-empty 'names:' list or {{index: name}} mapping")
    names = [str(n).strip() for n in names]
    if len(set(names)) != len(names) or not all(names):
        raise FcoslabError(f"{path}: class names must be distinct and non-empty, got {names}")
    return names


def _names_without_yaml(text: str, path: Path):
    """``names:`` of a data.yaml without PyYAML: an inline ``[a, b]`` list, or ``- a`` / ``0: a`` lines."""
    unquote = lambda s: s.split(" #")[0].strip().strip("'\"")  # noqa: E731
    match = re.search(r"^names:[ \t]*(.*)$", text, re.MULTILINE)
    if match is None:
        return None
    if match.group(1).strip().startswith("["):
        return [unquote(s) for s in match.group(1).strip().strip("[]").split(",") if s.strip()]
    items: dict | list = {}
    for line in text[match.end():].splitlines():
        if line.strip() and not line[:1].isspace() and not line.startswith("-"):
            break  # the next top-level key
        if line.strip().startswith("- "):
            items = (items if isinstance(items, list) else []) + [unquote(line.strip()[2:])]
        elif ":" in line and isinstance(items, dict):
            key, value = line.split(":", 1)
            items[key.strip()] = unquote(value)
    return items
