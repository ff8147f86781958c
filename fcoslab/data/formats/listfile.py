"""The plain-text list format of an unofficial FCOS reference, converted to a checked COCO dict (see
:mod:`.convert`).

One image a line: ``file.jpg ymin xmin ymax xmax label ymin xmin ymax xmax label ...``, five numbers a box,
**y before x**. ``file.jpg 0 0 0 0 0`` (or the file name alone) is an image without objects. Labels index a
names file whose first line is ``background``, so label 1 is the first real class (category id 1).

Pixel conventions (``pixels``), each mapped to fcoslab's continuous xyxy (width = x2 - x1):

* ``"continuous"`` (default): continuous pixel coordinates, taken as they are: x1 = xmin, y1 = ymin,
  x2 = xmax, y2 = ymax.
* ``"one-based"``: 1-based inclusive pixel indices, as in VOC's XML: x1 = xmin - 1, y1 = ymin - 1,
  x2 = xmax, y2 = ymax (VOC's xmin 48, xmax 195 -> x1 47, x2 195: a box 148 px wide).
* ``"zero-based"``: 0-based inclusive pixel indices: x1 = xmin, y1 = ymin, x2 = xmax + 1, y2 = ymax + 1
  (the same VOC box written as xmin 47, xmax 194 -> x1 47, x2 195).

Which one the reference's own files use: its **VOC** list converter writes every VOC coordinate minus 1,
so its VOC lists hold 0-based inclusive indices: read them with ``"zero-based"``. Its **COCO** list
converter writes COCO's continuous coordinates truncated to integers: read them with ``"continuous"``
(the truncation, up to 1 px, is in the file and cannot be undone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...errors import FcoslabError
from .convert import CocoBuilder, Conversion, PathLike, check_box_order, image_size, parse_number, read_class_names, read_lines

BOX_FIELDS = ("ymin", "xmin", "ymax", "xmax", "label")
# convention -> (added to xmin and ymin, added to xmax and ymax): the module docstring's rules
PIXEL_OFFSETS = {"continuous": (0.0, 0.0), "one-based": (-1.0, 0.0), "zero-based": (0.0, 1.0)}


def pixel_convention(pixels: Optional[str] = None, one_based: bool = False) -> str:
    """The convention named by ``pixels`` (a key of :data:`PIXEL_OFFSETS`; None: ``"one-based"`` if
    ``one_based`` else ``"continuous"``). ``one_based=True`` is an alias of ``pixels="one-based"``;
    FcoslabError for an unknown name or for ``one_based`` with another convention."""
    if pixels is None:
        return "one-based" if one_based else "continuous"
    if pixels not in PIXEL_OFFSETS:
        raise FcoslabError(f"pixels {pixels!r} is unknown; use one of {', '.join(PIXEL_OFFSETS)}")
    if one_based and pixels != "one-based":
        raise FcoslabError(f"one_based (--one-based) means pixels one-based, not {pixels}; give only one of them")
    return pixels


def list_to_coco(list_file: PathLike, images_dir: PathLike, names_file: PathLike, one_based: bool = False,
                 pixels: Optional[str] = None) -> Conversion:
    """Convert a list file whose image paths are relative to ``images_dir``.

    Args:
        list_file: the list, one image a line (module docstring); blank lines are skipped.
        images_dir: the folder the listed files are relative to (``file_name`` as listed).
        names_file: class names, one a line, the first being ``background``.
        one_based: alias of ``pixels="one-based"`` (kept for earlier callers).
        pixels: ``"continuous"`` (default), ``"one-based"`` or ``"zero-based"`` (module docstring; the
            reference's VOC lists are zero-based, its COCO lists continuous).

    Returns:
        a :class:`Conversion` whose ``image_dir`` is ``images_dir``. Report: images, boxes, negatives
        (images without objects).

    Raises:
        FcoslabError: for an unknown or contradictory ``pixels``; with ``file:line`` for a bad line
            (numbers not in fives, a non-number, a label out of range or a box labelled background, an
            inverted box, a repeated or missing image), and for a names file whose first line is not
            ``background``.
    """
    list_file, images_dir = Path(list_file), Path(images_dir)
    pixels = pixel_convention(pixels, one_based)
    names = read_class_names(names_file, "names file")
    if names[0].lower() != "background":
        raise FcoslabError(f"{names_file}:1: the first name must be 'background' (label 0), got '{names[0]}'; "
                           "label 1 is the first real class")
    if len(names) < 2:
        raise FcoslabError(f"{names_file}: no class after 'background'")
    if not images_dir.is_dir():
        raise FcoslabError(f"image folder {images_dir} (for {list_file}) does not exist")
    builder = CocoBuilder(names[1:], f"list {list_file}")
    seen: dict[str, int] = {}
    for i, line in enumerate(read_lines(list_file, "list file"), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{list_file}:{i}"
        file_name = fields[0]
        if file_name in seen:
            raise FcoslabError(f"{where}: image {file_name} is listed again (first on line {seen[file_name]})")
        seen[file_name] = i
        boxes = _parse_boxes(fields[1:], len(names) - 1, where, pixels)
        image_id = builder.add_image(file_name, *image_size(images_dir / file_name, where))
        for label, box in boxes:
            builder.add_box(image_id, label, box)
    counts = {"images": len(builder.images), "boxes": len(builder.annotations), "negatives": builder.negatives}
    coco = builder.finish({"converted_from": "list", "pixels": pixels, "image_dir": str(images_dir)})
    return Conversion(coco, images_dir, counts, f"list {list_file}")


def _parse_boxes(fields: list[str], num_classes: int, where: str, pixels: str) -> list[tuple[int, tuple]]:
    """``[(label 0..K-1, (x1, y1, x2, y2)), ...]`` (continuous pixels) from the numbers after the file name,
    read in the convention ``pixels``."""
    if len(fields) % 5:
        raise FcoslabError(f"{where}: expected 5 numbers per box (ymin xmin ymax xmax label) after the file name, "
                           f"got {len(fields)} numbers")
    boxes = []
    for start in range(0, len(fields), 5):
        numbers = [parse_number(text, where, f"box {start // 5 + 1} {key}")
                   for key, text in zip(BOX_FIELDS, fields[start:start + 5])]
        ymin, xmin, ymax, xmax, label = numbers
        if not any(numbers):
            continue  # "0 0 0 0 0": an image without objects
        if label != int(label) or not 1 <= label <= num_classes:
            what = "0 is background, which marks an image without objects only as 0 0 0 0 0" if label == 0 else \
                f"{fields[start + 4]} is out of range 1..{num_classes}"
            raise FcoslabError(f"{where}: box {start // 5 + 1} label {what}")
        check_box_order((xmin, ymin, xmax, ymax), f"{where}: box {start // 5 + 1}")
        low, high = PIXEL_OFFSETS[pixels]
        boxes.append((int(label) - 1, (xmin + low, ymin + low, xmax + high, ymax + high)))
    return boxes
