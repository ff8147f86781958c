import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcoslab.config import load_config
from fcoslab.data import (CocoDetection, EpochBatchSampler, build_transforms, check_coco_dict, collate,
                              make_shapes, read_coco_json, read_image)
from fcoslab.errors import FcoslabError


def test_make_shapes_is_deterministic(tmp_path):
    a, b = make_shapes(tmp_path / "a", 6, 2, 64, seed=3), make_shapes(tmp_path / "b", 6, 2, 64, seed=3)
    assert a["train"].read_text().replace("/a", "") == b["train"].read_text().replace("/b", "")
    assert (tmp_path / "a/train/000004.png").read_bytes() == (tmp_path / "b/train/000004.png").read_bytes()
    c = make_shapes(tmp_path / "c", 6, 2, 64, seed=4)
    assert c["train"].read_text() != a["train"].read_text()


def test_shapes_cover_classes_and_sizes(tmp_path):
    paths = make_shapes(tmp_path, 120, 0, 128, seed=0)
    data = json.loads(paths["train"].read_text())
    assert len({c["id"] for c in data["categories"]}) >= 4
    sides = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    assert sides.min() >= 0.12 * 128 - 1 and sides.min() < 24 and sides.max() > 64  # P3..P5 of the preset
    assert "min_side=0.12" in data["info"]["generator"]
    assert len({a["category_id"] for a in data["annotations"]}) == 4
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=121)[1:]
    assert per_image.max() >= 4


def test_shapes_min_side_sets_the_smallest_objects(tmp_path):
    harder = json.loads(make_shapes(tmp_path / "h", 120, 0, 128, seed=0, min_side=0.08)["train"].read_text())
    sides = np.array([max(a["bbox"][2:]) for a in harder["annotations"]])
    assert sides.min() < 0.12 * 128 - 1  # objects below the default's smallest
    assert "min_side=0.08" in harder["info"]["generator"]
    with pytest.raises(FcoslabError, match="min_side 0.9 must lie between"):
        make_shapes(tmp_path / "bad", 2, 0, 128, min_side=0.9)


def coco(images=None, annotations=None, categories=None):
    return {"images": images if images is not None else [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}],
            "annotations": annotations if annotations is not None else [],
            "categories": categories if categories is not None else [{"id": 7, "name": "x"}]}


@pytest.mark.parametrize("data,message", [
    ([], "top level must be a JSON object"),
    ({"images": [], "annotations": []}, "missing key 'categories'"),
    (coco(categories=[]), "'categories' is empty"),
    (coco(images=[{"id": 1}]), r"images\[0\] \(id 1\) needs a 'file_name'"),
    (coco(annotations=[{"image_id": 2, "category_id": 7, "bbox": [0, 0, 1, 1]}]), "image_id 2, which is not in 'images'"),
    (coco(annotations=[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}]), "category_id 3"),
    (coco(annotations=[{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1]}]), "needs 'bbox' as 4 finite numbers"),
    (coco(annotations=[{"image_id": 1, "category_id": 7, "bbox": [0, "a", 1, 1]}]), "needs 'bbox'"),
    (coco(annotations="x"), "'annotations' must be a list"),
])
def test_bad_coco_dicts_are_named(data, message):
    with pytest.raises(FcoslabError, match=message):
        check_coco_dict(data, "file.json")


def test_missing_iscrowd_and_area_are_filled():
    d = check_coco_dict(coco(annotations=[{"image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 5]}]), "f")
    assert d["annotations"][0]["iscrowd"] == 0 and d["annotations"][0]["area"] == 20.0


def test_annotation_file_errors(tmp_path):
    with pytest.raises(FcoslabError, match="does not exist"):
        read_coco_json(tmp_path / "none.json")
    (tmp_path / "t.json").write_text('{"images": [')
    with pytest.raises(FcoslabError, match="t.json is not valid JSON"):
        read_coco_json(tmp_path / "t.json")


def write_set(tmp_path, annotations, categories, n_images=2, size=(20, 10)):
    (tmp_path / "img").mkdir(exist_ok=True)
    images = []
    for i in range(n_images):
        Image.new("RGB", size, (i * 50, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": size[0], "height": size[1]})
    (tmp_path / "a.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return tmp_path / "a.json", tmp_path / "img"


def test_dataset_labels_crowd_clipping_and_negatives(tmp_path):
    anns = [{"image_id": 1, "category_id": 30, "bbox": [1, 1, 5, 5]},
            {"image_id": 1, "category_id": 4, "bbox": [15, 2, 10, 4]},  # runs out of the 20 px image: clipped
            {"image_id": 1, "category_id": 4, "bbox": [2, 2, 0, 3]},  # zero width: dropped
            {"image_id": 1, "category_id": 30, "bbox": [0, 0, 8, 8], "iscrowd": 1}]  # crowd: not a target
    ann, img = write_set(tmp_path, anns, [{"id": 30, "name": "b"}, {"id": 4, "name": "a"}])
    ds = CocoDetection(ann, img)
    assert ds.index.cat_ids == [4, 30] and ds.index.names == ["a", "b"]
    image, target = ds[0]
    assert image.shape == (3, 10, 20)
    assert target["labels"].tolist() == [1, 0]
    assert target["boxes"].tolist() == [[1, 1, 6, 6], [15, 2, 20, 6]]
    assert ds.box_report == {"clipped": 1, "dropped": 1, "crowd": 1}
    _, negative = ds[1]
    assert len(negative["boxes"]) == 0  # images without objects are kept


def test_missing_image_is_reported_before_training(tmp_path):
    ann, img = write_set(tmp_path, [], [{"id": 1, "name": "a"}])
    (img / "1.png").unlink()
    with pytest.raises(FcoslabError, match=r"1 image\(s\) listed in .*a.json are missing from .*img, e.g. 1.png"):
        CocoDetection(ann, img)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / ("x.tiff" if mode in ("I;16", "I", "F", "CMYK") else "x.png")
    im = Image.new(mode, (7, 5))
    im.save(path)
    out = read_image(path)
    assert out.mode == "RGB" and out.size == (7, 5)


def test_unreadable_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(FcoslabError, match="cannot read image .*bad.png"):
        read_image(tmp_path / "bad.png")


def test_transforms_and_padding(shapes_dir):
    cfg = load_config("shapes", ["data.min_size=[48,80]", "data.max_size=80"]).data
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train", build_transforms(cfg, train=True))
    torch.manual_seed(0)
    batch = collate([ds[i] for i in range(3)], size_divisibility=128)
    assert batch["images"].shape[-2:] == (128, 128) and batch["images"].dtype == torch.uint8  # the model makes floats
    assert batch["gt_boxes"].shape[:2] == batch["gt_labels"].shape and batch["gt_boxes"].shape[0] == 3
    for (h, w), boxes, labels in zip(batch["image_sizes"].tolist(), batch["gt_boxes"], batch["gt_labels"]):
        boxes = boxes[labels >= 0]  # the padded slots carry label -1
        assert h in (48, 80) and w == h
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes[:, :2] >= 0).all()
    assert batch["orig_sizes"].tolist() == [[64, 64]] * 3


def test_epoch_sampler_splits_batches_over_ranks():
    whole = list(EpochBatchSampler(20, 8, 0, 1, seed=5, epoch=2))
    parts = [list(EpochBatchSampler(20, 8, r, 2, seed=5, epoch=2)) for r in range(2)]
    assert len(whole) == 2
    for b in range(2):
        assert parts[0][b] + parts[1][b] == whole[b]
    assert list(EpochBatchSampler(20, 8, 0, 1, seed=5, epoch=2, start_batch=1)) == whole[1:]
    assert list(EpochBatchSampler(20, 8, 0, 1, seed=5, epoch=3)) != whole


def ensure(cfg):
    from fcoslab.data import ensure_shapes

    ensure_shapes(cfg.data, cfg.shapes)


def test_shapes_set_is_regenerated_when_its_parameters_change(tmp_path):
    root = tmp_path / "s"
    over = {"data.train_ann": str(root / "train.json"), "data.train_images": str(root / "train"),
            "data.val_ann": str(root / "val.json"), "data.val_images": str(root / "val"),
            "shapes.train": 3, "shapes.val": 2, "shapes.image_size": 48}
    ensure(load_config("shapes", over))
    first = (root / "train.json").stat().st_mtime_ns
    ensure(load_config("shapes", over))  # same parameters: left alone
    assert (root / "train.json").stat().st_mtime_ns == first
    ensure(load_config("shapes", dict(over, **{"shapes.train": 4})))
    assert len(json.loads((root / "train.json").read_text())["images"]) == 4
    ensure(load_config("shapes", dict(over, **{"shapes.train": 4, "shapes.min_side": 0.3})))
    assert "min_side=0.3" in json.loads((root / "train.json").read_text())["info"]["generator"]
    (root / "val.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(FcoslabError, match="was not generated by fcoslab make-shapes"):
        ensure(load_config("shapes", dict(over, **{"shapes.train": 5})))


def test_data_paths_alone_point_any_preset_at_own_data(tmp_path):
    own = tmp_path / "own"  # the generator's layout (OUT/train.json, OUT/train, ...) holding foreign files
    (own / "train").mkdir(parents=True)
    for name in ("train.json", "val.json"):
        (own / name).write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    paths = {"data.train_ann": str(own / "train.json"), "data.train_images": str(own / "train"),
             "data.val_ann": str(own / "val.json"), "data.val_images": str(own / "val")}
    for preset in ("shapes", "seed_coco_2x", "imprv_coco_1x"):
        cfg = load_config(preset, paths)
        assert cfg.shapes is None and cfg.data.train_ann == str(own / "train.json")
        ensure(cfg)  # neither generates nor refuses
    assert json.loads((own / "train.json").read_text())["images"] == []
    kept = load_config("shapes", dict(paths, **{"shapes.train": 5}))  # asked for explicitly: a real conflict
    assert kept.shapes.train == 5
    with pytest.raises(FcoslabError, match="was not generated by fcoslab make-shapes"):
        ensure(kept)


def test_epoch_of_a_fixed_number_of_images():
    one_pass = list(EpochBatchSampler(20, 4, 0, 1, seed=3, epoch=1))
    assert one_pass == list(EpochBatchSampler(20, 4, 0, 1, seed=3, epoch=1, epoch_length=20))
    long = EpochBatchSampler(20, 4, 0, 1, seed=3, epoch=0, epoch_length=50)
    batches = list(long)
    assert len(long) == len(batches) == 12  # 50 // 4
    indices = [i for b in batches for i, _ in b]
    assert sorted(indices[:20]) == list(range(20)) and sorted(indices[20:40]) == list(range(20))  # whole passes
    seeds = [s for b in batches for _, s in b]
    assert len(set(seeds)) == len(seeds)  # an image drawn twice is augmented differently
    nxt = [i for b in EpochBatchSampler(20, 4, 0, 1, seed=3, epoch=1, epoch_length=50) for i, _ in b]
    assert sorted(indices[40:] + nxt[:12]) == list(range(20))  # the next epoch continues the third pass
    halves = [list(EpochBatchSampler(20, 4, r, 2, seed=3, epoch=0, epoch_length=50)) for r in range(2)]
    assert [a + b for a, b in zip(*halves)] == batches


def test_shapes_section_is_optional_and_old_keys_still_load():
    from fcoslab.config import config_from_dict

    assert load_config("imprv_coco_1x").shapes is None and load_config("shapes").shapes.train == 4608
    assert load_config("shapes", ["shapes=none"]).shapes is None
    assert load_config("imprv_coco_1x", ["shapes.train=10"]).shapes.train == 10
    with pytest.raises(FcoslabError, match="config key 'shapes' alone"):
        load_config("shapes", ["shapes=3"])
    cfg = load_config("shapes")
    assert config_from_dict(cfg.to_dict()) == cfg and config_from_dict(load_config("seed_coco_2x").to_dict()).shapes is None
    old = cfg.to_dict()  # a run folder saved before the section existed
    del old["shapes"]
    old["data"].update({"shapes_train": 0, "shapes_val": 0, "shapes_image_size": 128, "shapes_seed": 0,
                        "shapes_min_side": 0.12})
    assert config_from_dict(old).shapes is None
    old["data"].update({"shapes_train": 96, "shapes_val": 8})
    assert config_from_dict(old).shapes.train == 96 and config_from_dict(old).shapes.val == 8


def test_an_empty_shapes_section_asks_for_the_default_set(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"data": {"train_ann": "x/train.json"}, "shapes": {}}))
    cfg = load_config(str(path))
    assert cfg.shapes is not None and cfg.shapes.train == 4608
    assert cfg.data.train_ann == str(tmp_path / "x" / "train.json")  # relative to the config file
