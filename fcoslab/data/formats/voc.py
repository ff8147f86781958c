"""Pascal VOC XML annotations converted to a checked COCO dict (see :mod:`.convert`).

Layout read, per root (a year folder of VOCdevkit, e.g. ``VOCdevkit/VOC2007``)::

    ROOT/ImageSets/Main/SPLIT.txt   one image id a line (extra columns, as in the per-class files, ignored)
    ROOT/Annotations/ID.xml         <size>, <object>s with <name>, <difficult>, <bndbox>
    ROOT/JPEGImages/ID.jpg          (or the xml's <filename>)

Pixel convention: VOC gives 1-based, inclusive pixel indices, so a box from pixel ``xmin`` to pixel
``xmax`` covers the continuous span ``[xmin - 1, xmax)``: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax,
y2 = ymax (width = xmax - xmin + 1 pixels). Every VOC box is converted so; no other +1 remains.

Difficult objects are kept with ``"iscrowd": 1`` and ``"difficult": 1``: training leaves crowd boxes out
of the targets, and COCOeval (like the VOC protocol) neither rewards nor penalises detections on them.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Sequence

from ...errors import FcoslabError
from .convert import CocoBuilder, Conversion, PathLike, check_box_order, image_size, parse_number, read_lines

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
COORDINATES = ("xmin", "ymin", "xmax", "ymax")


def voc_to_coco(roots: Sequence[PathLike] | PathLike, split: str = "trainval",
                classes: Sequence[str] | None = None) -> Conversion:
    """Convert the images of ``split`` in one or more VOC roots (VOC2007 + VOC2012 for "07+12").

    Args:
        roots: VOC year folders, each holding ImageSets/Main, Annotations and JPEGImages.
        split: the image set, ``ROOT/ImageSets/Main/{split}.txt`` (train, val, trainval, test).
        classes: class names in category-id order (ids 1..K); default the 20 VOC classes, aeroplane ...
            tvmonitor, in the standard order.

    Returns:
        a :class:`Conversion`. With one root, ``image_dir`` is ``ROOT/JPEGImages`` and ``file_name`` is
        e.g. ``000005.jpg``; with several, ``image_dir`` is the roots' common parent folder (absolute) and
        ``file_name`` is relative to it, e.g. ``VOC2007/JPEGImages/000005.jpg``. Image ids are 1..N in the
        order of the roots and split files. Report: images, boxes (difficult ones included), difficult,
        negatives (images without any object), sizes_from_images (xml files without a usable <size>).

    Raises:
        FcoslabError: a missing split file, xml or image, malformed XML, a missing or non-numeric
            coordinate, an inverted box, or an object name not in ``classes`` (naming the xml file).
    """
    roots = [Path(roots)] if isinstance(roots, (str, os.PathLike)) else [Path(r) for r in roots]
    if not roots:
        raise FcoslabError("voc_to_coco needs at least one VOC root folder")
    absolute = [Path(os.path.abspath(r)) for r in roots]
    if len(set(absolute)) != len(absolute):
        raise FcoslabError(f"a VOC root is given twice: {', '.join(map(str, roots))}")
    names = list(VOC_CLASSES if classes is None else classes)
    if len(set(names)) != len(names) or not names:
        raise FcoslabError(f"VOC class list must hold distinct names, got {names}")
    image_dir = roots[0] / "JPEGImages" if len(roots) == 1 else Path(os.path.commonpath(absolute))
    source = f"VOC {'+'.join(r.name for r in roots)} {split}"
    builder = CocoBuilder(names, source)
    report = Counter()
    for root, root_abs in zip(roots, absolute):
        for voc_id in _split_ids(root, split):
            image_path, size, objects = read_voc_xml(root, voc_id, names)
            if size is None:
                size = image_size(image_path, str(root / "Annotations" / f"{voc_id}.xml"))
                report["sizes_from_images"] += 1
            file_name = image_path.name if len(roots) == 1 else \
                (root_abs / "JPEGImages" / image_path.name).relative_to(image_dir).as_posix()
            image_id = builder.add_image(file_name, *size)
            for label, box, difficult in objects:
                builder.add_box(image_id, label, box, iscrowd=difficult, difficult=difficult)
                report["difficult"] += difficult
    counts = {"images": len(builder.images), "boxes": len(builder.annotations), "difficult": report["difficult"],
              "negatives": builder.negatives, "sizes_from_images": report["sizes_from_images"]}
    coco = builder.finish({"converted_from": "voc", "split": split, "image_dir": str(image_dir)})
    return Conversion(coco, image_dir, counts, source)


def _split_ids(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        if not root.is_dir():
            raise FcoslabError(f"VOC root {root} does not exist")
        found = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem)
        raise FcoslabError(f"VOC split file {path} does not exist (splits there: {', '.join(found) or 'none'})")
    ids = [line.split()[0] for line in read_lines(path, "VOC split file") if line.strip()]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise FcoslabError(f"{path}: image id {repeated} is listed more than once")
    return ids


def read_voc_xml(root: Path, voc_id: str, names: Sequence[str]):
    """Read ``ROOT/Annotations/{voc_id}.xml``.

    Returns:
        ``(image_path, size, objects)``: the image file, ``(width, height)`` or None when the xml has no
        usable <size>, and ``[(label, (x1, y1, x2, y2), difficult), ...]`` with label in ``0..K-1`` and the
        box in continuous pixels (module docstring).
    """
    xml_path = root / "Annotations" / f"{voc_id}.xml"
    if not xml_path.is_file():
        raise FcoslabError(f"{xml_path} does not exist (image id {voc_id} is listed in the split file)")
    try:
        top = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise FcoslabError(f"{xml_path}: malformed XML ({e})") from None
    except OSError as e:
        raise FcoslabError(f"cannot read {xml_path}: {e}") from None
    image_path = _image_path(root, voc_id, top.findtext("filename"), xml_path)
    objects = [_read_object(obj, i, names, xml_path) for i, obj in enumerate(top.findall("object"), 1)]
    return image_path, _read_size(top, xml_path), objects


def _image_path(root: Path, voc_id: str, filename: str | None, xml_path: Path) -> Path:
    tried = [root / "JPEGImages" / f"{voc_id}.jpg"]
    if filename and filename.strip() and Path(filename.strip()).name != tried[0].name:
        tried.append(root / "JPEGImages" / Path(filename.strip()).name)
    for path in tried:
        if path.is_file():
            return path
    raise FcoslabError(f"{xml_path}: image not found (tried {', '.join(map(str, tried))})")


def _read_size(top: ET.Element, xml_path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from <size>, or None when it is missing or zero (the image is read instead)."""
    size = top.find("size")
    if size is None or size.findtext("width") is None or size.findtext("height") is None:
        return None
    w = parse_number(size.findtext("width"), str(xml_path), "<size><width>")
    h = parse_number(size.findtext("height"), str(xml_path), "<size><height>")
    return (int(w), int(h)) if w > 0 and h > 0 else None


def _read_object(obj: ET.Element, index: int, names: Sequence[str], xml_path: Path):
    where = f"{xml_path}: object {index}"
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise FcoslabError(f"{where} has no <name>")
    if name not in names:
        raise FcoslabError(f"{xml_path}: object {index} has class name '{name}', which is not in the class list "
                           f"(known: {', '.join(names)}); give the classes with --classes FILE")
    where = f"{where} ({name})"
    difficult = obj.findtext("difficult")
    difficult = 0 if difficult is None or not difficult.strip() else int(parse_number(difficult, where, "<difficult>"))
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise FcoslabError(f"{where} has no <bndbox>")
    values = []
    for key in COORDINATES:
        text = bndbox.findtext(key)
        if text is None or not text.strip():
            raise FcoslabError(f"{where} has no <{key}> in <bndbox>")
        values.append(parse_number(text, where, f"<{key}>"))
    check_box_order(values, where)
    xmin, ymin, xmax, ymax = values
    return names.index(name), (xmin - 1, ymin - 1, xmax, ymax), int(difficult != 0)
