"""Small objects: a P2 pyramid and tiled prediction, measured on generated data (nothing downloaded).

    python benchmarks/small_objects.py pyramids --out /tmp/small      # train P3-P7 and P2-P6, compare APs
    python benchmarks/small_objects.py tiles RUN_DIR --out /tmp/small  # large mosaics, untiled vs tiled

``pyramids`` generates a shapes set whose smallest objects are 6% of 128 px (8 px, one P3 stride), trains
the ``shapes_128`` preset (the walk-through's previous one, 128 px) on it as is (P3-P7) and with P2-P6 (strides 4-64, regress ranges halved), and prints
each run's APs, seconds and step time. ``tiles`` pastes 4 x 4 validation images of a run into 512 px
mosaics (every object keeps its size in pixels), then evaluates the run on them once as usual (the whole
mosaic shrunk to the run's test size) and once from 128 px tiles with 20% overlap plus the whole image
(``fcoslab predict --tile 128 --overlap 0.2``), printing AP, APs, AP50 and seconds per image of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

import common
from fcoslab.config import load_config
from fcoslab.data import make_shapes, read_coco_json
from fcoslab.evaluation.coco import coco_evaluate, to_coco_results
from fcoslab.inference.predictor import Predictor
from fcoslab.inference.tiling import predict_tiled
from fcoslab.engine.trainer import train

KEYS = ("AP", "AP50", "APs", "APm", "APl")


def pyramids(out: Path, epochs: int) -> None:
    data = out / "data"
    if not (data / "val.json").exists():
        make_shapes(data, train=4608, val=128, image_size=128, seed=3, min_side=0.06)
    paths = {"data.train_ann": str(data / "train.json"), "data.train_images": str(data / "train"),
             "data.val_ann": str(data / "val.json"), "data.val_images": str(data / "val"), "train.epochs": epochs,
             "train.lr_steps": [epochs - 1]}
    variants = {"P3-P7 (the preset)": {},
                "P2-P6": {"model.strides": [4, 8, 16, 32, 64],
                          "assign.regress_ranges": [[-1, 16], [16, 32], [32, 64], [64, 128], [128, 1e8]]}}
    for name, extra in variants.items():
        run = out / name.split()[0]
        history, seconds = common.once(lambda: train(load_config("shapes_128", {**paths, **extra}), run, progress=False))
        last = history[-1]
        steps = last["step"]
        print(f"{name:20s} " + " ".join(f"{k} {last[k]:.3f}" for k in KEYS)
              + f"  {seconds:.0f} s for {steps} steps ({1000 * seconds / steps:.0f} ms a step, evaluations included)")


def mosaics(run: Path, out: Path, grid: int = 4) -> tuple[dict, Path]:
    """Validation images of ``run`` pasted ``grid`` x ``grid`` into larger images, with their boxes."""
    cfg = Predictor(run, device="cpu").cfg
    gt = read_coco_json(cfg.data.val_ann)
    images = sorted(gt["images"], key=lambda im: im["id"])
    side = images[0]["width"]
    folder = out / "mosaics"
    folder.mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    new_images, annotations = [], []
    for m in range(len(images) // grid ** 2):
        canvas = Image.new("RGB", (grid * side, grid * side))
        for k, im in enumerate(images[m * grid ** 2:(m + 1) * grid ** 2]):
            dx, dy = (k % grid) * side, (k // grid) * side
            canvas.paste(Image.open(Path(cfg.data.val_images) / im["file_name"]).convert("RGB"), (dx, dy))
            for a in by_image.get(im["id"], []):
                x, y, w, h = a["bbox"]
                annotations.append({**a, "id": len(annotations) + 1, "image_id": m + 1, "bbox": [x + dx, y + dy, w, h]})
        canvas.save(folder / f"{m:04d}.png")
        new_images.append({"id": m + 1, "file_name": f"{m:04d}.png", "width": grid * side, "height": grid * side})
    return {"images": new_images, "annotations": annotations, "categories": gt["categories"]}, folder


def tiles(run: Path, out: Path, tile: int, overlap: float) -> None:
    gt, folder = mosaics(run, out)
    predictor = Predictor(run)
    pictures = [Image.open(folder / im["file_name"]).convert("RGB") for im in gt["images"]]
    ids = [im["id"] for im in gt["images"]]
    print(f"{len(pictures)} mosaics of {pictures[0].width} px, {len(gt['annotations'])} objects; "
          f"precision {predictor.precision.name}")
    for name, run_one in (("untiled", lambda p: predictor([p])[0]),
                          (f"tiles {tile} px, overlap {overlap}", lambda p: predict_tiled(predictor, p, tile, overlap))):
        dets, seconds = common.once(lambda: [run_one(p) for p in pictures])
        seconds /= len(pictures)
        stats, _ = coco_evaluate(gt, to_coco_results(zip(ids, dets), predictor.cat_ids))
        print(f"{name:32s} " + " ".join(f"{k} {stats[k]:.3f}" for k in KEYS) + f"  {1000 * seconds:.0f} ms an image")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pyramids")
    p.add_argument("--out", type=Path, default=Path("/tmp/fcoslab_small"))
    p.add_argument("--epochs", type=int, default=6)
    t = sub.add_parser("tiles")
    t.add_argument("run", type=Path)
    t.add_argument("--out", type=Path, default=Path("/tmp/fcoslab_small"))
    t.add_argument("--tile", type=int, default=128)
    t.add_argument("--overlap", type=float, default=0.2)
    args = parser.parse_args(argv)
    common.print_header(__file__, argv)
    if args.what == "pyramids":
        pyramids(args.out, args.epochs)
    else:
        tiles(args.run, args.out, args.tile, args.overlap)


if __name__ == "__main__":
    main(sys.argv[1:])
