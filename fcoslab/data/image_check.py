"""Finding unreadable images before they cost anything: a truncated JPEG, a file of garbage bytes, a
picture whose size is not the one its annotation gives.

Two depths:

- ``header`` (fast: about 0.1 ms a file) opens each file's header (format and size, compared with the
  annotation's ``width`` and ``height``) and reads its last bytes: a JPEG must end with its end-of-image
  marker, a PNG with its ``IEND`` chunk. A file that does not is decoded in full to decide, so trailing
  bytes after a complete image are not reported.
- ``deep`` decodes every file in full, as training and evaluation will.

Used by ``fcoslab check-data`` (``--deep``), by training before its first epoch (``data.check_images``) and
by ``fcoslab predict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from PIL import Image, UnidentifiedImageError

from ..errors import FcoslabError
from .formats.coco import read_image

CHECK_DEPTHS = ("off", "header", "deep")
_SIZE_MISMATCH = "but its annotation says"  # in the reason of a readable image of another size
_PNG_END = b"IEND\xaeB`\x82"


def _ends_complete(path: Path, image_format: str) -> bool:
    """Whether the file ends as a complete JPEG or PNG does (other formats: True, nothing to check)."""
    if image_format not in ("JPEG", "PNG"):
        return True
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(f.tell() - 16, 0))
        tail = f.read()
    return tail.endswith(b"\xff\xd9") if image_format == "JPEG" else tail.endswith(_PNG_END)


def image_problem(path: str | Path, deep: bool = False, size: Optional[tuple[int, int]] = None) -> Optional[str]:
    """Why the image file at ``path`` cannot be used, or None when it can.

    Args:
        path: the image file.
        deep: decode it in full (otherwise the header and the end of the file, see the module).
        size: ``(width, height)`` the annotation gives it, compared with the stored pixels' size (boxes
            are clipped to the annotated size, so a wrong one misplaces them).
    """
    path = Path(path)
    if not path.is_file():
        return "does not exist"
    try:
        with Image.open(path) as im:
            image_format, found = im.format, im.size
    except UnidentifiedImageError:
        return "not an image file (PIL cannot identify it)"
    except (OSError, ValueError, SyntaxError) as e:
        return f"unreadable header ({e})"
    if deep or not _ends_complete(path, image_format):
        try:
            read_image(path)
        except FcoslabError as e:
            text = str(e)
            return text.split(": ", 1)[-1] if text.startswith("cannot read image") else text
    if size is not None and tuple(size) != found:
        return f"{found[0]}x{found[1]} pixels, {_SIZE_MISMATCH} {size[0]}x{size[1]}"
    return None


def is_size_mismatch(reason: str) -> bool:
    """Whether an :func:`image_problem` reason is a readable image whose size differs from its annotation's."""
    return _SIZE_MISMATCH in reason


def find_bad_images(files: Iterable[tuple[Path, Optional[tuple[int, int]]]], deep: bool = False) -> list[tuple[Path, str]]:
    """``(path, reason)`` of each unusable file among ``(path, (width, height) or None)`` pairs."""
    bad = []
    for path, size in files:
        reason = image_problem(path, deep, size)
        if reason is not None:
            bad.append((Path(path), reason))
    return bad


def dataset_image_files(dataset, shard: tuple[int, int] = (0, 1)) -> list[tuple[Path, Optional[tuple[int, int]]]]:
    """The image files of a :class:`fcoslab.data.CocoDetection` with their annotated sizes; ``shard``
    ``(rank, world)`` takes every ``world``-th file from ``rank`` on."""
    rank, world = shard
    out = []
    for i in range(rank, len(dataset), world):
        info = dataset.images[i]
        size = (info["width"], info["height"]) if "width" in info and "height" in info else None
        out.append((dataset.image_path(i), size))
    return out


def describe_bad_images(bad: list[tuple[Path, str]], limit: int = 10) -> str:
    """One line per bad file (``file: reason``), at most ``limit`` of them, then how many more."""
    lines = [f"  {path}: {reason}" for path, reason in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
