"""Other annotation formats, converted once at the edge into a checked COCO dict.

fcoslab reads only COCO json (one dataset class, and pycocotools evaluation keeps working), so Pascal VOC
XML (:mod:`.voc`), YOLO txt (:mod:`.yolo`) and the plain-text list of an unofficial FCOS reference
(:mod:`.boxlist`) are converted to it by ``fcoslab convert`` (or in memory by ``fcoslab check-data
--format``). This module holds what the three converters share: the :class:`Conversion` they return, the
builder of the COCO dict, class-name files and image sizes.

Pixel convention of the output: COCO ``[x, y, w, h]`` in continuous pixel coordinates, the same as
fcoslab's xyxy boxes (pixel ``i`` covers ``[i, i + 1)``, width = x2 - x1, no +1). Each converter documents
how its format maps onto it (VOC: 1-based inclusive indices, x1 = xmin - 1, x2 = xmax). Categories get ids
``1..K`` in the order of the class list. Image sizes are those of the stored pixels (EXIF orientation is
not applied, as :class:`~fcoslab.data.CocoDetection` does not apply it either).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, UnidentifiedImageError

from ...errors import FcoslabError
from .coco import check_coco_dict

PathLike = str | os.PathLike


@dataclass
class Conversion:
    """A dataset converted to COCO.

    Attributes:
        coco: the COCO dict, checked by :func:`check_coco_dict` (``images``, ``annotations``, ``categories``,
            ``info``); boxes as described in the module docstring.
        image_dir: the folder every ``file_name`` is relative to: give it as ``data.train_images`` (or
            ``data.val_images``) beside the written json.
        report: counts, in the order they are printed (``images``, ``boxes``, ``negatives`` = images
            without any box, and what each format adds: ``difficult``, ``orphan_labels``, ...).
        source: what was converted, in words (used in messages).
    """

    coco: dict
    image_dir: Path
    report: dict[str, int]
    source: str

    def summary(self) -> str:
        counts = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in self.report.items())
        return f"{self.source}: {counts}; {len(self.coco['categories'])} classes"


class CocoBuilder:
    """Collects images and boxes in reading order; :meth:`finish` assembles and checks the COCO dict.

    Args:
        names: class names, K; label ``k`` (0-based) becomes category id ``k + 1``.
        source: what is converted, for the ``info`` field and error messages.
    """

    def __init__(self, names: Sequence[str], source: str):
        self.names, self.source = list(names), source
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.boxed: set[int] = set()

    def add_image(self, file_name: str, width: int, height: int) -> int:
        """Add an image (``file_name`` relative to the image folder, POSIX slashes); returns its id."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        return image_id

    def add_box(self, image_id: int, label: int, box: Sequence[float], **extra) -> None:
        """Add one box: ``label`` in ``0..K-1``, ``box`` (x1, y1, x2, y2) continuous pixels. ``extra`` keys
        (``iscrowd``, ``difficult``) are written into the annotation."""
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                 "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0, **extra})
        self.boxed.add(image_id)

    @property
    def negatives(self) -> int:
        """Images without any box."""
        return len(self.images) - len(self.boxed)

    def finish(self, info: dict | None = None) -> dict:
        categories = [{"id": k + 1, "name": name, "supercategory": ""} for k, name in enumerate(self.names)]
        data = {"info": {"description": self.source, **(info or {})}, "images": self.images,
                "annotations": self.annotations, "categories": categories}
        return check_coco_dict(data, self.source)


def unlabelled_images(files: Sequence[PathLike], categories: list[dict]) -> tuple[dict, Path]:
    """Image files as a COCO dict without annotations (one's own images, to predict on), and the folder the
    ``file_name`` entries are relative to: the files' common folder. Ids ``1..n`` in the order given, sizes
    from the image headers; ``categories`` (``[{"id", "name"}, ...]``) as the model has them."""
    paths = [Path(f).resolve() for f in files]
    if not paths:
        raise FcoslabError("no image files given")
    root = Path(os.path.commonpath([p.parent for p in paths]))
    images = []
    for i, path in enumerate(paths, 1):
        width, height = image_size(path, "your images")
        images.append({"id": i, "file_name": path.relative_to(root).as_posix(), "width": width, "height": height})
    data = {"info": {"description": f"images in {root}"}, "images": images, "annotations": [],
            "categories": [dict(c) for c in categories]}
    return check_coco_dict(data, f"images in {root}"), root


def read_lines(path: PathLike, what: str) -> list[str]:
    """The lines of a text file (without line ends); FcoslabError if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FcoslabError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FcoslabError(f"cannot read {what} {path}: {e}") from None


def read_class_names(path: PathLike, what: str = "class names file") -> list[str]:
    """Class names, one a line (surrounding spaces and trailing blank lines ignored).

    A blank line between names, a repeated name or an empty file raise FcoslabError with file:line.
    """
    lines = read_lines(path, what)
    while lines and not lines[-1].strip():
        lines.pop()
    names: list[str] = []
    for i, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            raise FcoslabError(f"{path}:{i}: blank line in the {what} (one class name a line; a blank line "
                               "would shift every class after it)")
        if name in names:
            raise FcoslabError(f"{path}:{i}: class name '{name}' repeats line {names.index(name) + 1}")
        names.append(name)
    if not names:
        raise FcoslabError(f"{what} {path} is empty")
    return names


def image_size(path: PathLike, where: str) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header only; ``where`` names who refers to it."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise FcoslabError(f"{where}: image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise FcoslabError(f"{where}: cannot read image {path}: {e}") from None


def parse_number(text: str | None, where: str, what: str) -> float:
    """A finite number from ``text``; FcoslabError naming ``where`` and ``what`` otherwise."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise FcoslabError(f"{where}: {what} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise FcoslabError(f"{where}: {what} {text!r} is not a finite number")
    return value


def check_box_order(box: Sequence[float], where: str, names: Sequence[str] = ("xmin", "ymin", "xmax", "ymax")) -> None:
    """FcoslabError when a box's max corner lies before its min corner (``box`` as the file gives it)."""
    for lo, hi in ((0, 2), (1, 3)):
        if box[hi] < box[lo]:
            raise FcoslabError(f"{where}: {names[hi]} {box[hi]:g} is smaller than {names[lo]} {box[lo]:g}")
