"""The COCO-like generator, and JPEG reading through decode_jpeg against PIL."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.transforms.v2 import functional as F

from fcoslab.data import CocoDetection, make_cocolike, read_image, read_pixels
from fcoslab.data.formats.coco import decode_plain_jpeg, make_sample
from fcoslab.data.synthetic.cocolike import (COCO_CATEGORY_IDS, FILL, SHAPES, class_frequencies, draw_shape,
                                       sample_objects)
from fcoslab.errors import FcoslabError


@pytest.fixture(scope="module")
def cocolike_dir(tmp_path_factory):
    """12 train and 3 val images of 640x480."""
    out = tmp_path_factory.mktemp("cocolike")
    make_cocolike(out, train=12, val=3, seed=5)
    return out


def test_cocolike_is_deterministic(cocolike_dir, tmp_path):
    again = make_cocolike(tmp_path / "a", train=12, val=3, seed=5)
    assert again["train"].read_text() == (cocolike_dir / "train.json").read_text()
    assert (tmp_path / "a/val/000000000002.jpg").read_bytes() == (cocolike_dir / "val/000000000002.jpg").read_bytes()
    fewer = make_cocolike(tmp_path / "b", train=4, val=0, seed=5)  # image i does not depend on the count
    name = "train/000000000003.jpg"
    assert (tmp_path / "b" / name).read_bytes() == (cocolike_dir / name).read_bytes()
    assert json.loads(fewer["train"].read_text())["annotations"] == [
        a for a in json.loads(again["train"].read_text())["annotations"] if a["image_id"] <= 4]
    other = make_cocolike(tmp_path / "c", train=4, val=0, seed=6)
    assert other["train"].read_text() != fewer["train"].read_text()


def test_cocolike_is_a_coco_set_of_80_classes(cocolike_dir):
    data = json.loads((cocolike_dir / "train.json").read_text())
    assert [c["id"] for c in data["categories"]] == list(COCO_CATEGORY_IDS) and len(COCO_CATEGORY_IDS) == 80
    assert COCO_CATEGORY_IDS[-1] == 90 and 12 not in COCO_CATEGORY_IDS  # COCO's gaps
    assert [c["name"] for c in data["categories"][:2]] == ["class_00", "class_01"]
    ds = CocoDetection(cocolike_dir / "train.json", cocolike_dir / "train")
    assert len(ds) == 12 and ds.index.num_classes == 80
    image, target = ds[0]
    assert image.shape == (3, 480, 640) and image.dtype == torch.uint8
    crowd = sum(a["iscrowd"] for a in data["annotations"])
    assert ds.box_report == {"clipped": 0, "dropped": 0, "crowd": crowd}  # every box lies in its image
    assert sum(len(ds.targets[im["id"]][0]) for im in ds.images) == len(data["annotations"]) - crowd
    assert all(Image.open(ds.image_path(i)).format == "JPEG" for i in range(len(ds)))


def test_cocolike_objects_have_cocos_counts_sizes_and_classes():
    rng, freq = np.random.default_rng(0), class_frequencies(80)
    objects = [sample_objects(rng, 640, 480, freq) for _ in range(3000)]
    counts = np.array([len(o["cls"]) for o in objects])
    area = np.concatenate([o["area"] for o in objects])
    boxes = np.concatenate([o["box"] for o in objects])
    assert 6.8 < counts.mean() < 7.8 and counts.max() == 50 and 0.005 < (counts == 0).mean() < 0.02
    shares = [(area < 32 ** 2).mean(), ((area >= 32 ** 2) & (area < 96 ** 2)).mean(), (area >= 96 ** 2).mean()]
    assert np.allclose(shares, [0.41, 0.34, 0.25], atol=0.02)
    assert area.min() < 30 and area.max() > 0.3 * 640 * 480
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 480).all()
    assert (boxes[:, 2:] - boxes[:, :2] >= 2).all()
    assert 0.002 < np.concatenate([o["crowd"] for o in objects]).mean() < 0.012
    labels = np.bincount(np.concatenate([o["cls"] for o in objects]), minlength=80)
    assert (labels > 0).all() and labels[0] > 50 * labels[79]  # long-tailed, like COCO's person vs hair drier
    box_areas = [np.prod(o["box"][:, 2:] - o["box"][:, :2], axis=1) for o in objects]
    assert all((np.diff(a) <= 0).all() for a in box_areas)  # largest first, so small ones stay visible


def drawn_pixels(shape: int, box) -> np.ndarray:
    """bool (40, 64): the pixels of shape ``shape`` drawn into ``box`` (without a ring's hole)."""
    image = Image.new("RGB", (64, 40))
    draw_shape(ImageDraw.Draw(image), shape, box, (200, 100, 50))
    pixels = np.asarray(image)
    return pixels.any(2) & ~(pixels == (55, 155, 205)).all(2)


def test_every_shape_fills_its_box_and_area():
    for shape, name in enumerate(SHAPES):
        for box in [(3, 4, 43, 34), (10, 2, 14, 30), (1, 1, 60, 5), (7, 7, 9, 9)]:
            ys, xs = np.nonzero(drawn_pixels(shape, box))
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == box, name
        assert drawn_pixels(shape, (3, 4, 43, 34)).sum() == pytest.approx(FILL[shape] * 40 * 30, rel=0.1), name


@pytest.mark.parametrize("width,height", [(96, 96), (64, 48)])
def test_small_images_hold_only_objects_that_fit(width, height):
    rng = np.random.default_rng(3)
    for _ in range(200):
        objects = sample_objects(rng, width, height, class_frequencies(80))
        box = objects["box"]
        assert (box[:, 0] >= 0).all() and (box[:, 2] <= width).all() and (box[:, 3] <= height).all()
        assert (objects["area"] <= width * height).all()


def test_cocolike_rejects_bad_arguments(tmp_path):
    with pytest.raises(FcoslabError, match="classes 81 must lie between 1 and 80"):
        make_cocolike(tmp_path, train=1, val=0, classes=81)
    with pytest.raises(FcoslabError, match="too small"):
        make_cocolike(tmp_path, train=1, val=0, width=32)


def pil_pixels(path):
    return F.pil_to_tensor(read_image(path))


def test_jpeg_fast_path_gives_pils_pixels(cocolike_dir):
    for path in sorted((cocolike_dir / "train").glob("*.jpg")):
        assert decode_plain_jpeg(bytearray(path.read_bytes())) is not None  # the fast path, not the fallback
        assert torch.equal(read_pixels(path), pil_pixels(path)), path.name


@pytest.mark.parametrize("mode,options", [("RGB", {"progressive": True}), ("RGB", {"subsampling": 0}),
                                          ("L", {}), ("RGB", {"quality": 50, "optimize": True})])
def test_jpeg_variants_give_pils_pixels(tmp_path, mode, options):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (37, 53, 3 if mode == "RGB" else 1), dtype=np.uint8).squeeze()
    path = tmp_path / "x.jpg"
    Image.fromarray(pixels, mode).save(path, **options)
    assert decode_plain_jpeg(bytearray(path.read_bytes())) is not None
    out = read_pixels(path)
    assert out.shape == (3, 37, 53) and out.dtype == torch.uint8 and torch.equal(out, pil_pixels(path))
    if mode == "L":  # grayscale becomes RGB with three equal channels
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_other_files_go_through_pil(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (9, 7), (10, 200, 30, 40)).save(cmyk)
    assert decode_plain_jpeg(bytearray(cmyk.read_bytes())) is None
    png_named_jpg = tmp_path / "png.jpg"
    Image.new("RGBA", (9, 7), (10, 200, 30, 0)).save(png_named_jpg, format="PNG")
    assert decode_plain_jpeg(bytearray(png_named_jpg.read_bytes())) is None
    for path in (cmyk, png_named_jpg):
        assert read_pixels(path).shape == (3, 7, 9) and torch.equal(read_pixels(path), pil_pixels(path))
    assert read_pixels(png_named_jpg)[:, 0, 0].tolist() == [255, 255, 255]  # transparent on white, as read_image


def test_exif_orientation_is_not_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated; annotations refer to the stored pixels
    Image.new("RGB", (40, 64), (200, 10, 10)).save(tmp_path / "photo.jpg", exif=exif)
    assert read_pixels(tmp_path / "photo.jpg").shape == (3, 64, 40)
    assert torch.equal(read_pixels(tmp_path / "photo.jpg"), pil_pixels(tmp_path / "photo.jpg"))


def test_unreadable_jpegs_are_named(tmp_path):
    with pytest.raises(FcoslabError, match="none.jpg is listed but does not exist"):
        read_pixels(tmp_path / "none.jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:300])
    with pytest.raises(FcoslabError, match="cannot read image .*cut.jpg"):
        read_pixels(tmp_path / "cut.jpg")


def test_items_equal_those_made_from_pil(cocolike_dir):
    ds = CocoDetection(cocolike_dir / "val.json", cocolike_dir / "val")
    cached = CocoDetection(cocolike_dir / "val.json", cocolike_dir / "val", cache_images=True)
    for i in range(len(ds)):
        boxes, labels = ds.targets[ds.images[i]["id"]]
        want_image, want = make_sample(ds.load_image(i), boxes, labels, ds.images[i]["id"])  # PIL, as before
        for image, target in (ds.raw_item(i), cached.raw_item(i), cached.raw_item(i)):
            assert type(image) is type(want_image) and torch.equal(image, want_image)
            assert target.keys() == want.keys() and target["image_id"] == want["image_id"]
            assert torch.equal(target["boxes"], want["boxes"]) and target["boxes"].canvas_size == (480, 640)
            assert torch.equal(target["labels"], want["labels"]) and torch.equal(target["orig_size"], want["orig_size"])
    cached.load_pixels(0).zero_()  # a caller's copy: the cache keeps its pixels
    assert torch.equal(cached.load_pixels(0), ds.load_pixels(0))


def test_make_cocolike_command(tmp_path, capsys):
    from fcoslab.apps.cli import main

    assert main(["make-cocolike", str(tmp_path / "c"), "--train", "2", "--val", "1", "--classes", "10"]) == 0
    assert "wrote 2 train and 1 val images" in capsys.readouterr().out
    data = json.loads((tmp_path / "c" / "train.json").read_text())
    assert len(data["categories"]) == 10 and len(list((tmp_path / "c" / "val").glob("*.jpg"))) == 1
    assert main(["make-cocolike", str(tmp_path / "d"), "--classes", "90"]) == 2


def test_cocolike_of_mixed_sizes(tmp_path):
    from fcoslab.apps.cli import main
    from fcoslab.data.synthetic.cocolike import MIXED_SIZES, parse_sizes

    assert parse_sizes("mixed") == MIXED_SIZES and parse_sizes("160x120,120X160") == ((160, 120), (120, 160))
    with pytest.raises(FcoslabError, match="WIDTHxHEIGHT"):
        parse_sizes("100,80")
    assert main(["make-cocolike", str(tmp_path / "m"), "--train", "8", "--val", "0", "--sizes", "160x120,120x160"]) == 0
    data = json.loads((tmp_path / "m" / "train.json").read_text())
    sizes = [(im["width"], im["height"]) for im in data["images"]]
    assert set(sizes) == {(160, 120), (120, 160)} and "size=160x120,120x160" in data["info"]["generator"]
    assert all(Image.open(tmp_path / "m" / "train" / im["file_name"]).size == (im["width"], im["height"])
               for im in data["images"])
    assert all(a["bbox"][0] + a["bbox"][2] <= sizes[a["image_id"] - 1][0] for a in data["annotations"])
    fewer = make_cocolike(tmp_path / "f", train=3, val=0, sizes=((160, 120), (120, 160)))  # per-image draws
    assert [(im["width"], im["height"]) for im in json.loads(fewer["train"].read_text())["images"]] == sizes[:3]
    with pytest.raises(FcoslabError, match="image size 60x100 is too small"):
        make_cocolike(tmp_path / "s", train=1, val=0, sizes=((160, 120), (60, 100)))
