"""Unreadable images are found before they cost anything: by their header and file end, or by a full
decode (``--deep``), in ``fcoslab check-data`` for every format."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fcoslab.apps.cli import main
from fcoslab.data import image_problem


def jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def files(tmp_path):
    good = jpeg_bytes()
    paths = {"good.jpg": good, "trailing.jpg": good + b"\x00" * 40,  # bytes after a complete image: fine
             "truncated.jpg": good[: len(good) * 2 // 3], "garbage.jpg": b"\x13\x37" * 300,
             "empty.png": b""}
    buf = io.BytesIO()
    Image.open(io.BytesIO(good)).save(buf, format="PNG")
    paths["good.png"], paths["truncated.png"] = buf.getvalue(), buf.getvalue()[: len(buf.getvalue()) // 2]
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_each_kind_of_bad_file_is_found_and_good_ones_pass(files):
    assert image_problem(files / "good.jpg") is None and image_problem(files / "good.png") is None
    assert image_problem(files / "trailing.jpg") is None and image_problem(files / "trailing.jpg", deep=True) is None
    assert "truncated" in image_problem(files / "truncated.jpg").lower()
    assert "truncated" in image_problem(files / "truncated.png").lower()
    assert image_problem(files / "garbage.jpg") == "not an image file (PIL cannot identify it)"
    assert image_problem(files / "empty.png") == "not an image file (PIL cannot identify it)"
    assert image_problem(files / "missing.jpg") == "does not exist"
    assert image_problem(files / "good.jpg", size=(64, 48)) is None
    assert image_problem(files / "good.jpg", size=(48, 64)) == "64x48 pixels, but its annotation says 48x64"


def test_a_corrupt_middle_is_found_by_the_deep_check_only(tmp_path):
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes((64, 64)))).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[len(data) // 2:len(data) // 2 + 64] = b"\x00" * 64  # pixel data damaged; the file still ends with IEND
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    assert image_problem(path) is None  # header and end look fine
    assert "data stream" in image_problem(path, deep=True)  # zlib: "broken" or "unrecognized" data stream


def _coco_set(shapes_dir, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(shapes_dir, data)
    (data / "val" / "000002.png").write_bytes(b"garbage bytes")
    png = (data / "val" / "000004.png").read_bytes()
    (data / "val" / "000004.png").write_bytes(png[: len(png) // 2])
    return data


def test_check_data_opens_every_image_and_lists_the_bad_ones(shapes_dir, tmp_path, capsys):
    data = _coco_set(shapes_dir, tmp_path)
    assert main(["check-data", str(data / "val.json"), str(data / "val")]) == 1
    out, err = capsys.readouterr()
    assert "6 images opened without a problem" in out
    assert "2 image(s) cannot be used" in err
    assert "000002.png: not an image file" in err and "000004.png: " in err
    assert main(["check-data", str(data / "train.json"), str(data / "train"), "--deep"]) == 0
    assert "24 images decoded without a problem" in capsys.readouterr().out


def test_check_data_opens_the_images_of_a_list_file(shapes_dir, tmp_path, capsys):
    data = _coco_set(shapes_dir, tmp_path)  # the list converter itself reads each image's size: a file that is
    shutil.copy(data / "val" / "000004.png", data / "val" / "000002.png")  # no image at all stops it there
    coco = json.loads((data / "val.json").read_text())
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    label = {c["id"]: k + 1 for k, c in enumerate(cats)}  # 0 is background
    lines = []
    for im in coco["images"]:
        boxes = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        fields = [f"{y:.1f} {x:.1f} {y + h:.1f} {x + w:.1f} {label[a['category_id']]}" for a in boxes
                  for x, y, w, h in [a["bbox"]]]
        lines.append(" ".join([im["file_name"], *fields]))
    (data / "val.txt").write_text("\n".join(lines) + "\n")
    (data / "names.txt").write_text("\n".join(["background", *[c["name"] for c in cats]]) + "\n")
    code = main(["check-data", "--format", "list", "--list", str(data / "val.txt"), "--images", str(data / "val"),
                 "--names", str(data / "names.txt")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "000002.png" in err and "000004.png" in err and "2 image(s) cannot be used" in err
