"""The plain-text list format of an unofficial FCOS reference, converted to a checked COCO dict (see
:mod:`.convert`).

One image a line: ``file.jpg ymin xmin ymax xmax label ymin xmin ymax xmax label ...``, five numbers a box,
**y before x**. ``file.jpg 0 0 0 0 0`` (or the file name alone) is an image without objects. Labels index a
names file whose first line is ``background``, so label 1 is the first real class (category id 1).

Pixel convention: by default the numbers are continuous pixel coordinates, taken as they are (x1 = xmin,
x2 = xmax). With ``one_based=True`` they are 1-based inclusive pixel indices as in VOC: x1 = xmin - 1,
y1 = ymin - 1, x2 = xmax, y2 = ymax.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FcoslabError
from .convert import CocoBuilder, Conversion, PathLike, check_box_order, image_size, parse_number, read_class_names, read_lines

BOX_FIELDS = ("ymin", "xmin", "ymax", "xmax", "label")


def list_to_coco(list_file: PathLike, images_dir: PathLike, names_file: PathLike, one_based: bool = False) -> Conversion:
    """Convert a list file whose image paths are relative to ``images_dir``.

    Args:
        list_file: the list, one image a line (module docstring); blank lines are skipped.
        images_dir: the folder the listed files are relative to (``file_name`` as listed).
        names_file: class names, one a line, the first being ``background``.
        one_based: read coordinates as 1-based inclusive pixel indices (VOC convention) instead of
            continuous pixels.

    Returns:
        a :class:`Conversion` whose ``image_dir`` is ``images_dir``. Report: images, boxes, negatives
        (images without objects).

    Raises:
        FcoslabError: with ``file:line`` for a bad line (numbers not in fives, a non-number, a label out of
            range or a box labelled background, an inverted box, a repeated or missing image), and for a
            names file whose first line is not ``background``.
    """
    list_file, images_dir = Path(list_file), Path(images_dir)
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
        boxes = _parse_boxes(fields[1:], len(names) - 1, where, one_based)
        image_id = builder.add_image(file_name, *image_size(images_dir / file_name, where))
        for label, box in boxes:
            builder.add_box(image_id, label, box)
    counts = {"images": len(builder.images), "boxes": len(builder.annotations), "negatives": builder.negatives}
    coco = builder.finish({"converted_from": "list", "one_based": one_based, "image_dir": str(images_dir)})
    return Conversion(coco, images_dir, counts, f"list {list_file}")


def _parse_boxes(fields: list[str], num_classes: int, where: str, one_based: bool) -> list[tuple[int, tuple]]:
    """``[(label 0..K-1, (x1, y1, x2, y2)), ...]`` from the numbers after the file name."""
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
        offset = 1.0 if one_based else 0.0
        boxes.append((int(label) - 1, (xmin - offset, ymin - offset, xmax, ymax)))
    return boxes
