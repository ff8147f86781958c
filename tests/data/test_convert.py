"""Converters of VOC, YOLO and list annotations to COCO (fcoslab.data.formats.voc, yolo, boxlist) and the
``convert`` and ``check-data --format`` commands.

Each format is written from the shapes set's COCO file by the small writers below (they stand for other
tools and stay out of the package), converted back and compared with the original; hand-made files cover
the conventions and every user mistake.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import tiny_overrides
from fcoslab.apps.cli import main
from fcoslab.data import (SHAPES_CLASSES, VOC_CLASSES, CocoDetection, list_to_coco, read_coco_json,
                              read_yolo_names, voc_to_coco, yolo_to_coco)
from fcoslab.errors import FcoslabError

# ---------------------------------------------------------------- writers of the other formats


def coco_boxes(data: dict, prefix: str = "") -> dict[str, list]:
    """``{prefix + file stem: sorted [(class name, x1, y1, x2, y2), ...]}`` of a COCO dict (xyxy pixels)."""
    names = {c["id"]: c["name"] for c in data["categories"]}
    stems = {im["id"]: prefix + Path(im["file_name"]).stem for im in data["images"]}
    out = {stem: [] for stem in stems.values()}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        out[stems[a["image_id"]]].append((names[a["category_id"]], x, y, x + w, y + h))
    return {stem: sorted(boxes) for stem, boxes in out.items()}


def assert_same_dataset(original: dict, converted: dict, atol: float, prefix: str = "") -> None:
    """Same images (by stem, with sizes; ``prefix`` added to the original's), same class names, boxes equal
    within ``atol`` pixels."""
    assert [c["name"] for c in converted["categories"]] == [c["name"] for c in original["categories"]]
    assert [c["id"] for c in converted["categories"]] == list(range(1, len(original["categories"]) + 1))
    sizes = lambda d, p="": {p + Path(im["file_name"]).stem: (im["width"], im["height"]) for im in d["images"]}  # noqa: E731
    assert sizes(converted) == sizes(original, prefix)
    a, b = coco_boxes(original, prefix), coco_boxes(converted)
    for stem in a:
        assert [box[0] for box in a[stem]] == [box[0] for box in b[stem]], stem
        np.testing.assert_allclose(np.array([box[1:] for box in b[stem]]).reshape(-1, 4),
                                   np.array([box[1:] for box in a[stem]]).reshape(-1, 4), atol=atol, rtol=0)


def write_voc(root: Path, data: dict, image_dir: Path, split: str, prefix: str = "", size: bool = True,
              difficult: bool = False) -> None:
    """A VOC year folder as the devkit has it: integer 1-based inclusive pixel indices (xmin = round(x1) + 1,
    xmax = round(x2)), JPEG images, and ``prefix + stem`` listed in ``ImageSets/Main/{split}.txt``."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = {c["id"]: c["name"] for c in data["categories"]}
    ids = []
    for im in data["images"]:
        voc_id = prefix + Path(im["file_name"]).stem
        ids.append(voc_id)
        Image.open(image_dir / im["file_name"]).convert("RGB").save(root / "JPEGImages" / f"{voc_id}.jpg", quality=95)
        objects = "".join(
            f"<object><name>{names[a['category_id']]}</name><difficult>{int(difficult)}</difficult><bndbox>"
            f"<xmin>{round(a['bbox'][0]) + 1}</xmin><ymin>{round(a['bbox'][1]) + 1}</ymin>"
            f"<xmax>{round(a['bbox'][0] + a['bbox'][2])}</xmax><ymax>{round(a['bbox'][1] + a['bbox'][3])}</ymax>"
            "</bndbox></object>" for a in data["annotations"] if a["image_id"] == im["id"])
        size_xml = f"<size><width>{im['width']}</width><height>{im['height']}</height><depth>3</depth></size>"
        (root / "Annotations" / f"{voc_id}.xml").write_text(
            f"<annotation><filename>{voc_id}.jpg</filename>{size_xml if size else ''}{objects}</annotation>")
    with open(root / "ImageSets" / "Main" / f"{split}.txt", "a") as f:
        f.write("".join(f"{i}\n" for i in ids))


def write_yolo(out: Path, data: dict, image_dir: Path) -> tuple[Path, Path, Path]:
    """``out/images/*.png``, ``out/labels/*.txt`` (``class cx cy w h``, 7 decimals) and ``out/data.yaml``."""
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    class_of = {c["id"]: k for k, c in enumerate(data["categories"])}
    for im in data["images"]:
        (out / "images" / im["file_name"]).write_bytes((image_dir / im["file_name"]).read_bytes())
        lines = []
        for a in (a for a in data["annotations"] if a["image_id"] == im["id"]):
            x, y, w, h = a["bbox"]
            values = ((x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"], h / im["height"])
            lines.append(f"{class_of[a['category_id']]} " + " ".join(f"{v:.7f}" for v in values))
        (out / "labels" / f"{Path(im['file_name']).stem}.txt").write_text("".join(line + "\n" for line in lines))
    names = "".join(f"  - {c['name']}\n" for c in data["categories"])
    (out / "data.yaml").write_text(f"path: .\ntrain: images\nnames:\n{names}")
    return out / "images", out / "labels", out / "data.yaml"


def write_list(out: Path, data: dict, one_based: bool = False) -> tuple[Path, Path]:
    """A list file (``file ymin xmin ymax xmax label ...``, ``file 0 0 0 0 0`` for no objects) and its
    names file (``background`` first)."""
    label_of = {c["id"]: k + 1 for k, c in enumerate(data["categories"])}
    lines = []
    for im in data["images"]:
        fields = [im["file_name"]]
        for a in (a for a in data["annotations"] if a["image_id"] == im["id"]):
            x, y, w, h = a["bbox"]
            x1, y1 = (x + 1, y + 1) if one_based else (x, y)
            fields += [repr(y1), repr(x1), repr(y + h), repr(x + w), str(label_of[a["category_id"]])]
        lines.append(" ".join(fields if len(fields) > 1 else fields + ["0"] * 5))
    out.mkdir(parents=True, exist_ok=True)
    (out / "list.txt").write_text("\n".join(lines) + "\n")
    (out / "names.txt").write_text("background\n" + "".join(c["name"] + "\n" for c in data["categories"]))
    return out / "list.txt", out / "names.txt"


def hand_voc(root: Path, objects: str, size: str = "<size><width>40</width><height>30</height></size>",
             image=(40, 30)) -> Path:
    """One image ``a`` of ``image`` pixels with the given xml body; returns the root."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", image, (90, 120, 30)).save(root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{size}{objects}</annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return root


def obj(name="cat", box=(1, 2, 10, 20), difficult=0) -> str:
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box) if v is not None)
    return f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>"


@pytest.fixture(scope="module")
def shapes_train(shapes_dir):
    return read_coco_json(shapes_dir / "train.json")


# ---------------------------------------------------------------- VOC


def test_voc_round_trip(shapes_dir, shapes_train, tmp_path):
    write_voc(tmp_path / "VOC", shapes_train, shapes_dir / "train", "train")
    conv = voc_to_coco([tmp_path / "VOC"], "train", classes=SHAPES_CLASSES)
    assert_same_dataset(shapes_train, conv.coco, atol=1.0)  # VOC stores whole pixels
    assert conv.image_dir == tmp_path / "VOC" / "JPEGImages" and conv.coco["images"][0]["file_name"] == "000000.jpg"
    negatives = sum(not boxes for boxes in coco_boxes(shapes_train).values())
    assert conv.report == {"images": 24, "boxes": len(shapes_train["annotations"]), "difficult": 0,
                           "negatives": negatives, "sizes_from_images": 0}
    assert len(CocoDetection("voc", conv.image_dir, data=conv.coco)) == 24


def test_voc_pixel_convention_and_default_classes(tmp_path):
    """VOC pixel 1..10 is the continuous span [0, 10): x1 = xmin - 1, x2 = xmax."""
    conv = voc_to_coco(hand_voc(tmp_path / "r", obj("dog", (1, 2, 10, 20)) + obj("tvmonitor", (5, 5, 5, 5))), "train")
    assert [a["bbox"] for a in conv.coco["annotations"]] == [[0.0, 1.0, 10.0, 19.0], [4.0, 4.0, 1.0, 1.0]]
    assert [a["category_id"] for a in conv.coco["annotations"]] == [12, 20]
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    assert [c["name"] for c in conv.coco["categories"]] == list(VOC_CLASSES)


def test_voc_07_plus_12_file_names_relative_to_the_common_parent(shapes_dir, shapes_train, tmp_path):
    half = {**shapes_train, "images": shapes_train["images"][:12]}
    rest = {**shapes_train, "images": shapes_train["images"][12:]}
    write_voc(tmp_path / "VOCdevkit" / "VOC2007", half, shapes_dir / "train", "trainval")
    write_voc(tmp_path / "VOCdevkit" / "VOC2012", rest, shapes_dir / "train", "trainval")
    conv = voc_to_coco([tmp_path / "VOCdevkit" / "VOC2007", tmp_path / "VOCdevkit" / "VOC2012"],
                       classes=SHAPES_CLASSES)
    assert conv.image_dir == tmp_path / "VOCdevkit"
    names = [im["file_name"] for im in conv.coco["images"]]
    assert names[0] == "VOC2007/JPEGImages/000000.jpg" and names[12] == "VOC2012/JPEGImages/000012.jpg"
    assert [im["id"] for im in conv.coco["images"]] == list(range(1, 25))
    assert_same_dataset(shapes_train, conv.coco, atol=1.0)
    CocoDetection("07+12", conv.image_dir, data=conv.coco)  # every file_name resolves under image_dir
    with pytest.raises(FcoslabError, match="given twice"):
        voc_to_coco([tmp_path / "VOCdevkit" / "VOC2007"] * 2, classes=SHAPES_CLASSES)


def test_difficult_objects_become_crowd_and_a_missing_size_is_read_from_the_image(tmp_path):
    root = hand_voc(tmp_path / "r", obj("cat", (1, 1, 20, 20)) + obj("dog", (3, 3, 30, 25), difficult=1), size="")
    conv = voc_to_coco(root, "train")
    assert (conv.coco["images"][0]["width"], conv.coco["images"][0]["height"]) == (40, 30)  # not swapped
    assert [(a["iscrowd"], a["difficult"]) for a in conv.coco["annotations"]] == [(0, 0), (1, 1)]
    assert conv.report["difficult"] == 1 and conv.report["sizes_from_images"] == 1 and conv.report["boxes"] == 2
    ds = CocoDetection("voc", conv.image_dir, data=conv.coco)
    assert ds.box_report["crowd"] == 1 and len(ds.targets[1][0]) == 1  # training leaves the difficult box out


@pytest.mark.parametrize("objects,message", [
    (obj("unicorn"), "class name 'unicorn', which is not in the class list (known: aeroplane, bicycle"),
    (obj("cat", (1, 2, None, 20)), "object 1 (cat) has no <xmax> in <bndbox>"),
    (obj("cat", (1, 2, "ten", 20)), "object 1 (cat): <xmax> 'ten' is not a number"),
    (obj("cat", (12, 2, 10, 20)), "xmax 10 is smaller than xmin 12"),
    ("<object><name>cat</name></object>", "object 1 (cat) has no <bndbox>"),
    ("<object><bndbox/></object>", "object 1 has no <name>"),
    ("<object><name>cat</name>", "malformed XML"),
])
def test_voc_errors_name_the_xml_file(tmp_path, objects, message):
    root = hand_voc(tmp_path / "r", objects)
    with pytest.raises(FcoslabError) as e:
        voc_to_coco(root, "train")
    assert str(root / "Annotations" / "a.xml") in str(e.value) and message in str(e.value)


def test_voc_missing_files(tmp_path):
    root = hand_voc(tmp_path / "r", obj())
    with pytest.raises(FcoslabError, match=r"trainval.txt does not exist \(splits there: train\)"):
        voc_to_coco(root)
    with pytest.raises(FcoslabError, match="VOC root .*nowhere does not exist"):
        voc_to_coco(tmp_path / "nowhere")
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(FcoslabError, match="a.xml: image not found"):
        voc_to_coco(root, "train")
    Image.new("RGB", (40, 30)).save(root / "JPEGImages" / "a.jpg")
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    with pytest.raises(FcoslabError, match="b.xml does not exist"):
        voc_to_coco(root, "train")


# ---------------------------------------------------------------- YOLO


def test_yolo_round_trip_with_negatives_and_orphans(shapes_dir, shapes_train, tmp_path):
    images, labels, names = write_yolo(tmp_path, shapes_train, shapes_dir / "train")
    (labels / "000003.txt").unlink()  # an image without a label file: a negative
    (labels / "gone.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # a label file without its image
    (images / "notes.md").write_text("not an image")
    conv = yolo_to_coco(images, labels, names)
    stems = coco_boxes(shapes_train)
    expected = {**shapes_train, "annotations": [a for a in shapes_train["annotations"] if a["image_id"] != 4]}
    assert_same_dataset(expected, conv.coco, atol=1e-3)
    assert conv.image_dir == images and conv.coco["images"][3]["file_name"] == "000003.png"
    negatives = sum(not boxes for stem, boxes in stems.items() if stem != "000003") + 1
    assert conv.report == {"images": 24, "boxes": len(expected["annotations"]), "negatives": negatives,
                           "unlabelled": 1, "orphan_labels": 1, "skipped_files": 1}


def test_yolo_names_from_yaml_dict_list_or_text(tmp_path):
    forms = {"dict.yaml": "names:\n  0: ellipse\n  1: 'rectangle'\nnc: 2\n", "list.yaml": "names: [ellipse, rectangle]\n",
             "block.yml": "train: x\nnames:\n- ellipse\n- rectangle\n", "classes.txt": "ellipse\nrectangle\n\n"}
    for file, text in forms.items():
        (tmp_path / file).write_text(text)
        assert read_yolo_names(tmp_path / file) == ["ellipse", "rectangle"], file
    from fcoslab.data.formats.yolo import _names_as_list, _names_without_yaml  # the reader used without PyYAML

    for file in ("dict.yaml", "list.yaml", "block.yml"):
        parsed = _names_without_yaml((tmp_path / file).read_text(), tmp_path / file)
        assert _names_as_list(parsed, tmp_path / file) == ["ellipse", "rectangle"], file
    (tmp_path / "gap.yaml").write_text("names:\n  0: a\n  2: b\n")
    with pytest.raises(FcoslabError, match="gap.yaml: 'names' keys must be the class indices 0..1"):
        read_yolo_names(tmp_path / "gap.yaml")
    (tmp_path / "blank.txt").write_text("a\n\nb\n")
    with pytest.raises(FcoslabError, match="blank.txt:2: blank line"):
        read_yolo_names(tmp_path / "blank.txt")


@pytest.mark.parametrize("line,message", [
    ("0 0.5 0.5 0.2", "expected 5 fields 'class cx cy w h', got 4"),
    ("0 0.5 0.5 0.2 0.2 0.3 0.3", "got 7 (polygon/segment labels are not supported)"),
    ("0 0.5 half 0.2 0.2", "cy 'half' is not a number"),
    ("2 0.5 0.5 0.2 0.2", "class 2 is out of range: expected an integer 0..1"),
    ("0.5 0.5 0.5 0.2 0.2", "class 0.5 is out of range"),
    ("1 1.2 0.5 0.2 0.2", "cx 1.2 is outside [0, 1]"),
    ("1 0.5 0.5 0.2 -0.01", "h -0.01 is outside [0, 1]"),
])
def test_yolo_bad_lines_name_file_and_line(tmp_path, line, message):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (50, 20)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels" / "a.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(FcoslabError) as e:
        yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["a", "b"])
    assert str(e.value).startswith(f"{tmp_path / 'labels' / 'a.txt'}:2: ") and message in str(e.value)


def test_yolo_tolerance_and_pixel_convention(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (50, 20)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "images" / "a.txt").write_text("1 0.5 0.25 0.2 0.5\n0 1.0005 0.5 0.0 0.1\n")  # labels beside images
    (tmp_path / "images" / "classes.txt").write_text("a\nb\n")
    conv = yolo_to_coco(tmp_path / "images", tmp_path / "images", tmp_path / "images" / "classes.txt")
    assert [a["bbox"] for a in conv.coco["annotations"]] == [[20.0, 0.0, 10.0, 10.0], [50.0, 9.0, 0.0, 2.0]]
    assert conv.report["orphan_labels"] == 0 and conv.report["skipped_files"] == 0


def test_yolo_swapped_folders_or_no_images_exit_2_and_name_the_folders(tmp_path, capsys):
    images, labels, empty = tmp_path / "images", tmp_path / "labels", tmp_path / "empty"
    for folder in (images, labels, empty):
        folder.mkdir()
    Image.new("RGB", (50, 20)).save(images / "a.jpg")
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "n.txt").write_text("thing\n")
    swapped = ["--images", str(labels), "--labels", str(images)]
    code = main(["convert", "--from", "yolo", *swapped, "--names", str(tmp_path / "n.txt"), "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fcoslab: error: ") and "Traceback" not in err
    assert f"image folder {labels} holds 1 .txt label files and no images" in err
    assert f"label folder {images} holds 1 images" in err and "look swapped" in err
    assert not (tmp_path / "o.json").exists()
    with pytest.raises(FcoslabError, match=f"YOLO image folder {empty} holds no images") as e:
        yolo_to_coco(empty, labels, ["thing"])
    assert "look swapped" not in str(e.value)
    with pytest.raises(FcoslabError, match=f"YOLO image folder {labels} holds no images"):
        yolo_to_coco(labels, labels, ["thing"])  # label files only, and no images elsewhere: not a swap


# ---------------------------------------------------------------- list format


@pytest.mark.parametrize("one_based", [False, True])
def test_list_round_trip(shapes_dir, shapes_train, tmp_path, one_based):
    data = {**shapes_train, "annotations": [a for a in shapes_train["annotations"] if a["image_id"] != 2]}
    list_file, names = write_list(tmp_path, data, one_based=one_based)
    assert (list_file.read_text().splitlines()[1]) == "000001.png 0 0 0 0 0"
    conv = list_to_coco(list_file, shapes_dir / "train", names, one_based=one_based)
    assert_same_dataset(data, conv.coco, atol=1e-3)
    negatives = sum(not boxes for boxes in coco_boxes(data).values())
    assert conv.report == {"images": 24, "boxes": len(data["annotations"]), "negatives": negatives}


def test_list_reads_y_before_x(tmp_path):
    Image.new("RGB", (50, 20)).save(tmp_path / "a.jpg")
    (tmp_path / "names.txt").write_text("background\ncat\ndog\n")
    (tmp_path / "l.txt").write_text("a.jpg 1.5 2.5 10 30 2\n")
    conv = list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt")
    assert conv.coco["annotations"][0]["bbox"] == [2.5, 1.5, 27.5, 8.5] and conv.coco["annotations"][0]["category_id"] == 2
    one = list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt", one_based=True)
    assert one.coco["annotations"][0]["bbox"] == [1.5, 0.5, 28.5, 9.5]


# VOC's XML box xmin 48, ymin 240, xmax 195, ymax 371 (1-based inclusive) is continuous x1 47, y1 239,
# x2 195, y2 371: COCO [47, 239, 148, 132]. Each line below is that box as one convention writes it
# (ymin xmin ymax xmax): continuous (the reference's COCO list converter), 1-based as in VOC's XML,
# 0-based (the reference's VOC list converter: every VOC value minus 1).
@pytest.mark.parametrize("pixels,line", [("continuous", "239 47 371 195"), ("one-based", "240 48 371 195"),
                                         ("zero-based", "239 47 370 194")])
def test_list_pixel_conventions_map_a_voc_box(tmp_path, pixels, line):
    Image.new("RGB", (500, 400)).save(tmp_path / "a.jpg")
    (tmp_path / "names.txt").write_text("background\ncat\n")
    (tmp_path / "l.txt").write_text(f"a.jpg {line} 1\n")
    conv = list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt", pixels=pixels)
    assert conv.coco["annotations"][0]["bbox"] == [47.0, 239.0, 148.0, 132.0]
    assert conv.coco["info"]["pixels"] == pixels
    if pixels == "one-based":  # the older keyword is an alias
        alias = list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt", one_based=True)
        assert alias.coco["annotations"] == conv.coco["annotations"]
    else:  # the other conventions read the same numbers one pixel off
        assert list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt", one_based=True
                            ).coco["annotations"][0]["bbox"] != [47.0, 239.0, 148.0, 132.0]


def test_list_pixel_convention_errors(tmp_path):
    (tmp_path / "names.txt").write_text("background\ncat\n")
    (tmp_path / "l.txt").write_text("")
    with pytest.raises(FcoslabError, match="pixels 'zero' is unknown; use one of continuous, one-based, zero-based"):
        list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt", pixels="zero")
    with pytest.raises(FcoslabError, match="means pixels one-based, not zero-based"):
        list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt", one_based=True, pixels="zero-based")


def test_convert_list_pixels_option(tmp_path, capsys):
    Image.new("RGB", (500, 400)).save(tmp_path / "a.jpg")
    (tmp_path / "names.txt").write_text("background\ncat\n")
    (tmp_path / "l.txt").write_text("a.jpg 239 47 370 194 1\n")
    base = ["convert", "--from", "list", "--list", str(tmp_path / "l.txt"), "--images", str(tmp_path),
            "--names", str(tmp_path / "names.txt"), "--out", str(tmp_path / "o.json")]
    assert main(base + ["--pixels", "zero-based"]) == 0
    assert read_coco_json(tmp_path / "o.json")["annotations"][0]["bbox"] == [47.0, 239.0, 148.0, 132.0]
    assert main(base + ["--one-based"]) == 0  # the alias of --pixels one-based
    assert read_coco_json(tmp_path / "o.json")["annotations"][0]["bbox"] == [46.0, 238.0, 148.0, 132.0]
    assert main(base + ["--one-based", "--pixels", "zero-based"]) == 2
    assert "means pixels one-based, not zero-based" in capsys.readouterr().err


@pytest.mark.parametrize("line,message", [
    ("c.jpg 1 2 3 4", "expected 5 numbers per box (ymin xmin ymax xmax label) after the file name, got 4"),
    ("c.jpg 1 2 x 4 1", "box 1 ymax 'x' is not a number"),
    ("c.jpg 1 2 3 4 0", "box 1 label 0 is background"),
    ("c.jpg 1 2 3 4 1 1 2 3 4 3", "box 2 label 3 is out of range 1..2"),
    ("c.jpg 5 2 3 4 1", "box 1: ymax 3 is smaller than ymin 5"),
    ("b.jpg 0 0 0 0 0", "image {tmp}/b.jpg does not exist"),
    ("a.jpg 0 0 0 0 0", "image a.jpg is listed again (first on line 1)"),
])
def test_list_bad_lines_name_file_and_line(tmp_path, line, message):
    Image.new("RGB", (50, 20)).save(tmp_path / "a.jpg")
    Image.new("RGB", (50, 20)).save(tmp_path / "c.jpg")
    (tmp_path / "names.txt").write_text("background\ncat\ndog\n")
    (tmp_path / "l.txt").write_text(f"a.jpg 1 2 3 4 1\n{line}\n")
    with pytest.raises(FcoslabError) as e:
        list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt")
    assert str(e.value).startswith(f"{tmp_path / 'l.txt'}:2: ") and message.format(tmp=tmp_path) in str(e.value)


def test_list_names_file_starts_with_background(tmp_path):
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    (tmp_path / "l.txt").write_text("")
    with pytest.raises(FcoslabError, match="names.txt:1: the first name must be 'background'"):
        list_to_coco(tmp_path / "l.txt", tmp_path, tmp_path / "names.txt")


# ---------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def voc_copy(shapes_dir, tmp_path_factory):
    """The shapes set as one VOC root with train and val splits, and its class names file."""
    root = tmp_path_factory.mktemp("voc") / "VOC"
    for split in ("train", "val"):
        data = read_coco_json(shapes_dir / f"{split}.json")
        write_voc(root, data, shapes_dir / split, split, prefix=f"{split}_")
    (root.parent / "classes.txt").write_text("".join(f"{c}\n" for c in SHAPES_CLASSES))
    return root


def test_convert_and_check_data_every_format(shapes_dir, shapes_train, voc_copy, tmp_path, capsys):
    images, labels, names = write_yolo(tmp_path / "yolo", shapes_train, shapes_dir / "train")
    list_file, list_names = write_list(tmp_path / "list", shapes_train)
    sources = {"voc": ["--root", str(voc_copy), "--split", "train", "--classes", str(voc_copy.parent / "classes.txt")],
               "yolo": ["--images", str(images), "--labels", str(labels), "--names", str(names)],
               "list": ["--list", str(list_file), "--images", str(shapes_dir / "train"), "--names", str(list_names)]}
    folders = {"voc": voc_copy / "JPEGImages", "yolo": images, "list": shapes_dir / "train"}
    for fmt, options in sources.items():
        out = tmp_path / f"{fmt}.json"
        assert main(["convert", "--from", fmt, *options, "--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert "24 images" in text and f"image folder (data.train_images or data.val_images): {folders[fmt]}" in text
        assert_same_dataset(shapes_train, read_coco_json(out), atol=1.0 if fmt == "voc" else 1e-3,
                            prefix="train_" if fmt == "voc" else "")
        assert main(["check-data", "--format", fmt, *options]) == 0
        text = capsys.readouterr().out
        assert "24 images" in text and f"{len(shapes_train['annotations'])} boxes, 4 classes" in text
    assert main(["check-data", str(tmp_path / "yolo.json"), str(images)]) == 0  # the COCO form still works


@pytest.mark.parametrize("args,message", [
    (["convert", "--from", "voc", "--out", "{tmp}/o.json"], "--from voc needs --root"),
    (["convert", "--from", "yolo", "--images", "{tmp}", "--out", "{tmp}/o.json"], "--from yolo needs --labels --names"),
    (["convert", "--from", "voc", "--root", "{tmp}", "--labels", "x", "--out", "{tmp}/o.json"],
     "--from voc does not take --labels (it is for yolo)"),
    (["convert", "--from", "yolo", "--images", "{tmp}/images", "--labels", "{tmp}/labels", "--names", "{tmp}/n.txt",
      "--out", "{tmp}/o.json"], "{tmp}/labels/a.txt:1: expected 5 fields"),
    (["convert", "--from", "voc", "--root", "{tmp}/none", "--out", "{tmp}/o.json"], "VOC root {tmp}/none does not exist"),
    (["check-data"], "check-data needs ANN IMAGES"),
    (["check-data", "a.json", "--format", "voc", "--root", "{tmp}"], "check-data --format voc takes no ANN IMAGES"),
    (["check-data", "a.json", "b", "--one-based"], "--format coco does not take --one-based (it is for list)"),
    (["check-data", "a.json", "b", "--pixels", "zero-based"], "--format coco does not take --pixels (it is for list)"),
])
def test_convert_errors_exit_2_and_write_nothing(tmp_path, args, message, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5\n")
    (tmp_path / "n.txt").write_text("thing\n")
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("fcoslab: error: ") and "Traceback" not in err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert not list(tmp_path.glob("o.json*"))


def test_convert_makes_the_folders_of_out(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (50, 20)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "images" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    out = tmp_path / "new" / "deeper" / "train.json"
    code = main(["convert", "--from", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "images"),
                 "--names", str(tmp_path / "names.txt"), "--out", str(out)])
    assert code == 2 and not (tmp_path / "new").exists()  # no names file: nothing converted, no folder made
    (tmp_path / "names.txt").write_text("thing\n")
    code = main(["convert", "--from", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "images"),
                 "--names", str(tmp_path / "names.txt"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert len(read_coco_json(out)["annotations"]) == 1 and f"wrote {out}" in capsys.readouterr().out
    (tmp_path / "file").write_text("")
    code = main(["convert", "--from", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "images"),
                 "--names", str(tmp_path / "names.txt"), "--out", str(tmp_path / "file" / "o.json")])
    assert code == 2 and f"cannot create the folder {tmp_path / 'file'} of --out" in capsys.readouterr().err


def converted_splits(fmt: str, shapes_dir: Path, voc_copy: Path, tmp: Path) -> dict[str, tuple[str, str]]:
    """Train and val splits of the shapes set converted back to COCO from a ``fmt`` copy: {split: (json, images)}."""
    out = {}
    for split in ("train", "val"):
        data = read_coco_json(shapes_dir / f"{split}.json")
        if fmt == "voc":
            args = ["--root", str(voc_copy), "--split", split, "--classes", str(voc_copy.parent / "classes.txt")]
            images = str(voc_copy / "JPEGImages")
        elif fmt == "yolo":
            image_dir, labels, names = write_yolo(tmp / f"yolo_{split}", data, shapes_dir / split)
            args, images = ["--images", str(image_dir), "--labels", str(labels), "--names", str(names)], str(image_dir)
        else:
            list_file, names = write_list(tmp / f"list_{split}", data)
            args = ["--list", str(list_file), "--images", str(shapes_dir / split), "--names", str(names)]
            images = str(shapes_dir / split)
        assert main(["convert", "--from", fmt, *args, "--out", str(tmp / f"{split}.json")]) == 0
        out[split] = (str(tmp / f"{split}.json"), images)
    return out


@pytest.mark.parametrize("fmt", ["voc", "yolo", "list"])
def test_train_and_evaluate_on_a_converted_copy(fmt, voc_copy, shapes_dir, tmp_path, capsys):
    splits = converted_splits(fmt, shapes_dir, voc_copy, tmp_path)
    extra = {"data.train_ann": splits["train"][0], "data.train_images": splits["train"][1],
             "data.val_ann": splits["val"][0], "data.val_images": splits["val"][1], "eval.metrics": "both"}
    if fmt == "voc":  # the seed_voc pipeline: random square crops, small boxes dropped
        extra.update({"data.square_size": 64, "data.min_box_area": 32})
    overrides = tiny_overrides(shapes_dir, **extra)
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
    assert main(["train", "--quiet", "--out", str(tmp_path / "run"), "--set", *sets]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 1 and history[0]["step"] == 6 and 0 <= history[0]["AP"] <= 1
    assert set(history[0]["voc_per_class"]) == set(SHAPES_CLASSES)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "res.json")]) == 0
    assert capsys.readouterr().out.count("Average Precision") == 6
    results = json.loads((tmp_path / "res.json").read_text())
    assert all(r["category_id"] in (1, 2, 3, 4) for r in results)


def test_seed_voc_preset_reads_the_converted_layout_and_makes_squares(voc_copy):
    from fcoslab.config import load_config
    from fcoslab.data import CocoDetection, build_transforms

    cfg = load_config("seed_voc")
    assert cfg.data.train_images.endswith("data/voc") and cfg.eval.metrics == "both"
    data = cfg.data
    dataset = CocoDetection(voc_copy / "x.json", voc_copy / "JPEGImages", check_images=False,
                            data=voc_to_coco([voc_copy], "train", SHAPES_CLASSES).coco)
    for train in (True, False):
        image, target = build_transforms(data, train)(*dataset.raw_item(0))
        assert tuple(image.shape[-2:]) == (641, 641)
        boxes = target["boxes"]
        assert train is False or bool(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= 32).all())
