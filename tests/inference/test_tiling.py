"""Tiled prediction: windows cover the image, detections come back to image pixels and merge by NMS."""

import numpy as np
import pytest
import torch
from PIL import Image

from fcoslab.config import DecodeConfig
from fcoslab.inference.tiling import merge_detections, predict_tiled, tile_windows


def test_windows_cover_the_image_with_the_overlap_and_end_at_its_edges():
    windows = tile_windows(1000, 600, 512, 0.2)
    assert windows == [(0, 0, 512, 512), (409, 0, 921, 512), (488, 0, 1000, 512),
                       (0, 88, 512, 600), (409, 88, 921, 600), (488, 88, 1000, 600)]
    covered = np.zeros((600, 1000), bool)
    for x0, y0, x1, y1 in windows:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tile_windows(300, 200, 512) == [(0, 0, 300, 200)]  # an image no larger than a tile is itself
    assert tile_windows(700, 300, 512, 0.0) == [(0, 0, 512, 300), (188, 0, 700, 300)]
    with pytest.raises(ValueError):
        tile_windows(100, 100, 64, 1.0)


def test_merge_shifts_windows_back_and_keeps_one_box_per_object():
    box = torch.tensor([[10.0, 10.0, 30.0, 40.0]])
    parts = [{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},  # window at (100, 0)
             {"boxes": box - torch.tensor([50.0, 0, 50, 0]), "scores": torch.tensor([0.8]), "labels": torch.tensor([1])},
             {"boxes": box, "scores": torch.tensor([0.7]), "labels": torch.tensor([2])}]  # another class: kept
    merged = merge_detections(parts, [(100, 0), (150, 0), (100, 0)], iou=0.6, max_detections=10)
    assert merged["boxes"].tolist() == [[110.0, 10.0, 130.0, 40.0]] * 2
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.7]) and merged["labels"].tolist() == [1, 2]
    assert len(merge_detections(parts, [(0, 0), (500, 0), (900, 0)], 0.6, max_detections=2)["boxes"]) == 2


class BlobDetector:
    """A stand-in for a trained model that sees exactly: each object has its own colour; its box is the
    box of its visible pixels, its score 0.9 times the visible fraction of the object."""

    def __init__(self, colours, areas):
        self.colours, self.areas = colours, areas
        self.cfg = type("Cfg", (), {"decode": DecodeConfig(nms_thresh=0.6, max_detections=100)})()

    def __call__(self, images):
        out = []
        for image in images:
            pixels = np.asarray(image)
            boxes, scores, labels = [], [], []
            for k, colour in enumerate(self.colours):
                ys, xs = np.nonzero((pixels == colour).all(-1))
                if len(xs):
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    scores.append(0.9 * len(xs) / self.areas[k])
                    labels.append(k % 3)
            order = np.argsort(scores)[::-1].copy()
            out.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)[order],
                        "scores": torch.tensor(scores, dtype=torch.float32)[order],
                        "labels": torch.tensor(labels, dtype=torch.int64)[order]})
        return out


def test_tiles_merge_to_the_boxes_of_the_untiled_prediction():
    rng = np.random.default_rng(0)
    pixels = np.zeros((300, 400, 3), np.uint8)
    colours, areas = [], []
    for k in range(25):
        w, h = rng.integers(6, 24, 2)
        x, y = rng.integers(0, 400 - w), rng.integers(0, 300 - h)
        colour = (40 + 8 * k, 255 - 8 * k, 100 + k)
        if (pixels[y:y + h, x:x + w] != 0).any():
            continue
        pixels[y:y + h, x:x + w] = colour
        colours.append(colour)
        areas.append(int(w * h))
    image = Image.fromarray(pixels)
    detector = BlobDetector(colours, areas)
    untiled = detector([image])[0]
    for whole in (True, False):
        tiled = predict_tiled(detector, image, tile=128, overlap=0.25, whole_image=whole)
        confident = tiled["scores"] >= 0.89  # whole objects; slivers cut by a tile's edge score less
        order = torch.argsort(tiled["boxes"][confident][:, 0] * 1000 + tiled["boxes"][confident][:, 1])
        expected = torch.argsort(untiled["boxes"][:, 0] * 1000 + untiled["boxes"][:, 1])
        assert torch.equal(tiled["boxes"][confident][order], untiled["boxes"][expected])
        assert torch.equal(tiled["labels"][confident][order], untiled["labels"][expected])


def test_predict_command_with_tiles(shapes_dir, tmp_path, capsys):
    import json

    from helpers import set_args
    from fcoslab.apps.cli import main

    assert main(["train", "--quiet", "--out", str(tmp_path / "run"), "--set", *set_args(shapes_dir)]) == 0
    big = Image.new("RGB", (200, 150))
    for k, name in enumerate(sorted((shapes_dir / "val").glob("*.png"))[:4]):
        big.paste(Image.open(name).convert("RGB"), (64 * (k % 3), 64 * (k // 3)))
    big.save(tmp_path / "big.png")
    args = ["predict", str(tmp_path / "run"), str(tmp_path / "big.png"), "--score", "0.05"]
    assert main(args + ["--out", str(tmp_path / "tiled"), "--tile", "64", "--overlap", "0.25"]) == 0
    dets = json.loads((tmp_path / "tiled" / "detections.json").read_text())[0]["detections"]
    assert all(0 <= d["box_xyxy"][0] <= d["box_xyxy"][2] <= 200 and d["box_xyxy"][3] <= 150 for d in dets)
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "bad"), "--tile", "64", "--overlap", "1.5"]) == 2
    assert "--overlap in [0, 1)" in capsys.readouterr().err
