"""COCO AP on a dataset of one's own at equal wall time: fcoslab's ``shapes`` preset vs torchvision's FCOS,
float32 on the CPU. A benchmark, not a test.

    python benchmarks/own_data_vs_torchvision.py [--train 600] [--val 150] [--image-size 160] [--seed 7]
        [--min-side 0.10] [--out-dir /tmp/own_bench] [--json PATH]
        [--fcoslab-set KEY=VALUE ...] [--tv-optimizer adamw|sgd] [--tv-decay step|none]

The claim measured: the ``shapes_128`` preset (the walk-through's 128 px preset, with which the documented
figures were measured) trains a good model on any small dataset of one's own. The
yardstick: on data the preset was not tuned on, in the same wall time, float32 on the CPU, fcoslab's AP
should be at least 1.25x the AP of torchvision's FCOS.

1. The "own" dataset is made with fcoslab's generator (``fcoslab.data.make_shapes``) with other
   arguments than the preset's set (4608/128 images of 128 px, seed 0, smallest side 12%): by default
   600 train and 150 val images of 160 px, seed 7, smallest object side 10% (16 px). It is written to
   ``--out-dir`` and reused when the json files there carry the same generator arguments.
2. fcoslab is trained as a user would: the ``shapes`` preset plus the four data paths (which also turn
   the preset's shapes generation off) and ``runtime.precision=off`` (float32), through ``fcoslab.engine.trainer.train``.
   ``--fcoslab-set`` adds overrides (for smoke runs). T is the wall time of the whole ``train()`` call
   (``time.perf_counter``): model and data set-up, training, the per-epoch evaluations and checkpoints.
   The AP reported is that of the last epoch (the model the user is left with). The preset resizes
   every image to 128 px (``data.min_size``, ``data.test_min_size``); it is kept so.
3. torchvision's FCOS trains on the same data for T seconds of training alone (its image loading before
   the clock starts and its one evaluation afterwards are not counted), then is evaluated once on the
   val set with the same COCO evaluation (``fcoslab.evaluation.coco.coco_evaluate`` on the val json as
   ``read_coco_json`` reads it). The model, what a competent user would build for 160 px images on a CPU
   without pretrained weights (nothing is downloaded):

   * ``FCOS(resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d,
     trainable_layers=5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)),
     num_classes=K + 1, min_size=max_size=image size)``: P3-P7 with 256 channels, trainable BatchNorm
     (frozen BatchNorm with random weights would never learn its statistics), everything trainable;
     label 0 is background, so category ids map to labels 1..K and back. torchvision's defaults
     otherwise (4-conv GroupNorm heads, center sampling 1.5, NMS 0.6, 1000 candidates per level,
     100 detections per image); score threshold 0.2 in training (unused there), 0.05 for the
     evaluation, like fcoslab's ``decode.score_thresh``.
   * optimiser (``--tv-optimizer``): AdamW lr 1e-3, weight decay 1e-4 (default; the usual choice from
     scratch), or SGD lr 0.01 momentum 0.9 weight decay 1e-4 (torchvision's detection reference
     recipe); either with 100 linear warm-up steps from 0.1% of the lr, gradient-norm clipping at 5 and
     (``--tv-decay step``, the default) the lr x0.1 once 80% of T has passed, as the preset's schedule
     does after 4 of its 5 epochs (``--tv-decay none`` keeps it constant).
   * data: batch 16, shuffled epochs, horizontal flip with probability 0.5 (tensor and boxes), images
     read with PIL as float [0, 1] tensors (kept in memory, as the preset's ``data.cache_images``).
     Crowd boxes are skipped and boxes clipped to the image, those of non-positive size dropped (what
     fcoslab's dataset does). The clock is read after every step; training stops at the first step
     that ends at or after T (so it may overrun T by up to one step; the table gives its real time).

Both run in this one process with torch's default number of threads, fcoslab first. The script prints
a markdown table (train seconds, AP, AP50, AP75, the fcoslab / torchvision ratios) and the machine; with
``--json PATH`` it also writes every figure there.

Asymmetries to keep in mind when reading the result: T includes fcoslab's per-epoch evaluations and
set-up, so torchvision trains for the whole of fcoslab's wall time; fcoslab sees the images at 128 px
(its preset), torchvision at their own size (160 px by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.transforms.functional import pil_to_tensor

import common
from fcoslab.config import load_config, parse_overrides
from fcoslab.data import make_shapes, read_coco_json
from fcoslab.data.synthetic.shapes import generator_key
from fcoslab.evaluation.coco import STAT_NAMES, coco_evaluate
from fcoslab.engine.trainer import train

SEED = 0
TV_BATCH = 16
TV_WARMUP_STEPS = 100
TV_WARMUP_START = 0.001  # warm-up starts at this fraction of the lr (torchvision's detection reference)
TV_GRAD_CLIP = 5.0
TV_DECAY_AT = 0.8  # --tv-decay step: lr x0.1 after this fraction of T
TV_EVAL_SCORE_THRESH = 0.05
TV_EVAL_BATCH = 16
TV_OPTIMIZERS = {  # name -> (description, factory)
    "adamw": ("AdamW lr 1e-3, weight decay 1e-4",
              lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)),
    "sgd": ("SGD lr 0.01, momentum 0.9, weight decay 1e-4",
            lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)),
}


# --------------------------------------------------------------------------------------------- dataset
def own_dataset(out: Path, train_n: int, val_n: int, size: int, seed: int, min_side: float) -> dict[str, Path]:
    """The generated "own" dataset in ``out``: made, or reused when both json files name the same
    generator arguments (``make_shapes`` writes each json last, so a complete one means complete images)."""
    key = generator_key(train_n, val_n, size, seed, min_side)
    paths = {"train_ann": out / "train.json", "train_images": out / "train",
             "val_ann": out / "val.json", "val_images": out / "val"}

    def same(path: Path) -> bool:
        try:
            return json.loads(path.read_text()).get("info", {}).get("generator") == key
        except (OSError, ValueError):
            return False

    if same(paths["train_ann"]) and same(paths["val_ann"]):
        print(f"dataset: reusing {out} ({key})", flush=True)
    else:
        with common.stopwatch(None) as generation:
            for split in ("train", "val"):  # no stale images from an earlier, larger set
                shutil.rmtree(out / split, ignore_errors=True)
            make_shapes(out, train=train_n, val=val_n, image_size=size, seed=seed, min_side=min_side)
        print(f"dataset: generated {out} in {generation.seconds:.1f} s ({key})", flush=True)
    return paths


# --------------------------------------------------------------------------------------------- fcoslab
def run_fcoslab(paths: dict[str, Path], run_dir: Path, extra: dict[str, str]) -> dict:
    """Train the shapes_128 preset on ``paths`` in float32; returns T, the last epoch's stats and the history."""
    overrides: dict[str, object] = {f"data.{k}": str(v) for k, v in paths.items()}
    overrides["runtime.precision"] = "off"
    if torch.cuda.is_available():  # the comparison is on the CPU; "auto" would pick the GPU
        overrides["runtime.device"] = "cpu"
    overrides.update(extra)
    cfg = load_config("shapes_128", overrides)  # the preset the figures were measured with
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a continuation
    print(f"fcoslab: training the shapes_128 preset with {overrides}", flush=True)
    history, seconds = common.once(lambda: train(cfg, run_dir, progress=False), None)
    if not history:
        raise SystemExit("fcoslab: train() returned an empty history (no evaluation ran)")
    last = history[-1]
    return {"seconds": seconds, "stats": {k: last[k] for k in STAT_NAMES}, "history": history,
            "overrides": overrides, "epochs": cfg.train.epochs, "steps": last["step"],
            "images_per_epoch": cfg.train.images_per_epoch, "batch_size": cfg.train.batch_size,
            "train_image_size": list(cfg.data.min_size), "run_dir": str(run_dir)}


# ----------------------------------------------------------------------------------------- torchvision
class TensorSet:
    """A COCO json and its images as in-memory tensors: uint8 (3, H, W) images, xyxy float boxes and
    labels 1..K (category ids sorted, 0 left to the background)."""

    def __init__(self, ann_file: Path, image_dir: Path):
        self.data = read_coco_json(ann_file)
        self.cat_ids = sorted(c["id"] for c in self.data["categories"])
        to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        per_image: dict[int, list] = {im["id"]: [] for im in self.data["images"]}
        for a in self.data["annotations"]:
            if not a["iscrowd"]:
                per_image[a["image_id"]].append(a)
        self.image_ids, self.images, self.boxes, self.labels = [], [], [], []
        for info in sorted(self.data["images"], key=lambda im: im["id"]):
            with Image.open(image_dir / info["file_name"]) as pil:
                image = pil_to_tensor(pil.convert("RGB"))
            h, w = image.shape[-2:]
            anns = per_image[info["id"]]
            boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            labels = torch.tensor([to_label[a["category_id"]] for a in anns], dtype=torch.int64)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            self.image_ids.append(info["id"])
            self.images.append(image)
            self.boxes.append(boxes[keep])
            self.labels.append(labels[keep])

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)


def torchvision_fcos(num_classes: int, image_size: int, kind: str = "r18") -> FCOS:
    """torchvision's FCOS from random weights with trainable BatchNorm.

    ``r18``: ResNet-18-FPN P3-P7 with 256 channels and 4-conv heads at ``image_size``, torchvision's
    defaults otherwise. ``matched``: the network of fcoslab's shapes_128 preset in torchvision's FCOS class
    (torchvision's ResNet class with one BasicBlock per stage at width 32, FPN and P6/P7 of 64 channels,
    2-conv GroupNorm heads) at the preset's 128 px, so that only the two libraries' training and
    post-processing differ."""
    if kind == "matched":
        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        from torchvision.models.detection.fcos import FCOSHead

        from fcoslab.config import load_config
        from fcoslab.modeling.model import build_resnet

        cfg = load_config("shapes_128")
        width, channels, size = cfg.model.backbone_width, cfg.model.fpn_channels, cfg.data.max_size
        body = build_resnet(cfg.model.backbone, nn.BatchNorm2d, width)
        backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"},
                                   [2 * width, 4 * width, 8 * width], channels,
                                   extra_blocks=LastLevelP6P7(channels, channels), norm_layer=None)
        head = FCOSHead(channels, 1, num_classes + 1, num_convs=cfg.model.head_convs)
        return FCOS(backbone, num_classes=num_classes + 1, min_size=size, max_size=size, head=head)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d,
                                   trainable_layers=5, returned_layers=[2, 3, 4],
                                   extra_blocks=LastLevelP6P7(256, 256))
    return FCOS(backbone, num_classes=num_classes + 1, min_size=image_size, max_size=image_size)


def train_batch(data: TensorSet, indices: list[int], rng: random.Random) -> tuple[list, list]:
    """Float [0, 1] images and their targets, each image flipped left-right with probability 0.5."""
    images, targets = [], []
    for i in indices:
        image, boxes = data.images[i].float().div_(255), data.boxes[i].clone()
        if rng.random() < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        images.append(image)
        targets.append({"boxes": boxes, "labels": data.labels[i]})
    return images, targets


def lr_factor(step: int, elapsed: float, budget: float, decay: str) -> float:
    warm = 1.0
    if step < TV_WARMUP_STEPS:
        alpha = step / TV_WARMUP_STEPS
        warm = TV_WARMUP_START * (1 - alpha) + alpha
    return warm * (0.1 if decay == "step" and elapsed >= TV_DECAY_AT * budget else 1.0)


def run_torchvision(train_set: TensorSet, val_set: TensorSet, image_size: int, budget: float,
                    optimizer_name: str, decay: str, kind: str = "r18") -> dict:
    """Train for ``budget`` seconds (checked after every step), then one COCO evaluation on ``val_set``."""
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    model = torchvision_fcos(train_set.num_classes, image_size, kind)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = TV_OPTIMIZERS[optimizer_name][1](params)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    model.train()
    step, epoch, images_seen = 0, 0, 0
    loss_sum, loss_count = 0.0, 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < budget:
        order = list(range(len(train_set)))
        rng.shuffle(order)
        partial = False
        for s in range(0, len(order), TV_BATCH):
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(step, elapsed, budget, decay)
            indices = order[s:s + TV_BATCH]
            images, targets = train_batch(train_set, indices, rng)
            loss = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, TV_GRAD_CLIP)
                optimizer.step()
                loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            step += 1
            images_seen += len(indices)
            elapsed = time.perf_counter() - started
            if elapsed >= budget:
                partial = s + TV_BATCH < len(order)
                break
        epoch += 1
        print(f"torchvision: epoch {epoch}{' (partial, time is up)' if partial else ''}, step {step}, "
              f"mean loss {loss_sum / max(loss_count, 1):.3f}, {elapsed:.0f}/{budget:.0f} s", flush=True)
        loss_sum, loss_count = 0.0, 0
    train_seconds = elapsed

    started = time.perf_counter()
    model.eval()
    model.score_thresh = TV_EVAL_SCORE_THRESH
    results = []
    with torch.no_grad():
        for s in range(0, len(val_set), TV_EVAL_BATCH):
            ids = range(s, min(s + TV_EVAL_BATCH, len(val_set)))
            outputs = model([val_set.images[i].float().div_(255) for i in ids])
            for i, out in zip(ids, outputs):
                xywh = out["boxes"].clone()
                xywh[:, 2:] -= xywh[:, :2]
                for box, score, label in zip(xywh.tolist(), out["scores"].tolist(), out["labels"].tolist()):
                    if label == 0:  # the background logit (never a target, so rarely above threshold)
                        continue
                    results.append({"image_id": val_set.image_ids[i], "category_id": val_set.cat_ids[label - 1],
                                    "bbox": [round(v, 2) for v in box], "score": round(score, 5)})
    stats, _ = coco_evaluate(val_set.data, results)
    total, trainable = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in params)
    return {"seconds": train_seconds, "eval_seconds": time.perf_counter() - started, "stats": stats,
            "steps": step, "epochs": epoch, "images_seen": images_seen, "detections": len(results),
            "parameters": total, "trainable_parameters": trainable,
            "optimizer": f"{TV_OPTIMIZERS[optimizer_name][0]}, {TV_WARMUP_STEPS} warm-up steps, grad clip "
                         f"{TV_GRAD_CLIP:g}, lr decay: " + (f"x0.1 after {TV_DECAY_AT:.0%} of T" if decay == "step" else "none")}


# ------------------------------------------------------------------------------------------------ main
def ratio(a: float, b: float) -> Optional[float]:
    return a / b if b > 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=600, help="training images to generate (default 600)")
    parser.add_argument("--val", type=int, default=150, help="validation images to generate (default 150)")
    parser.add_argument("--image-size", type=int, default=160, help="image side in pixels (default 160)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7; the preset's set is 0)")
    parser.add_argument("--min-side", type=float, default=0.10,
                        help="smallest object side as a fraction of the image (default 0.10; the preset's 0.12)")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/own_bench"),
                        help="dataset and run folder (default /tmp/own_bench); OUT/fcoslab_run is replaced")
    parser.add_argument("--fcoslab-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra fcoslab config overrides, e.g. train.epochs=1 (for smoke runs)")
    parser.add_argument("--tv-optimizer", choices=sorted(TV_OPTIMIZERS), default="adamw",
                        help="torchvision's optimiser (default adamw)")
    parser.add_argument("--tv-decay", choices=("step", "none"), default="step",
                        help=f"torchvision's lr decay: x0.1 after {TV_DECAY_AT:.0%} of T (default) or none")
    parser.add_argument("--tv-model", choices=("r18", "matched"), default="r18",
                        help="torchvision's network: ResNet-18-FPN (default) or the preset's own network")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.train < 1 or args.val < 1 or args.image_size < 32:
        parser.error("--train and --val must be at least 1, --image-size at least 32")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("fcoslab").setLevel(logging.INFO)  # fcoslab's per-epoch AP lines

    machine = common.machine_info()  # at the start: its date is when the run began
    paths = own_dataset(args.out_dir, args.train, args.val, args.image_size, args.seed, args.min_side)
    dataset = {"train": args.train, "val": args.val, "image_size": args.image_size, "seed": args.seed,
               "min_side": args.min_side, "dir": str(args.out_dir)}

    fl = run_fcoslab(paths, args.out_dir / "fcoslab_run", parse_overrides(args.fcoslab_set))
    print(f"fcoslab: T = {fl['seconds']:.1f} s, AP {fl['stats']['AP']:.3f}", flush=True)

    with common.stopwatch(None) as loading:
        train_set = TensorSet(paths["train_ann"], paths["train_images"])
        val_set = TensorSet(paths["val_ann"], paths["val_images"])
    print(f"torchvision: {len(train_set)} + {len(val_set)} images loaded in {loading.seconds:.1f} s "
          f"(not counted); training for {fl['seconds']:.1f} s", flush=True)
    tv = run_torchvision(train_set, val_set, args.image_size, fl["seconds"], args.tv_optimizer, args.tv_decay,
                         args.tv_model)

    ratios = {k: ratio(fl["stats"][k], tv["stats"][k]) for k in ("AP", "AP50", "AP75")}

    def fmt_ratio(r: Optional[float]) -> str:
        return "n/a (torchvision 0)" if r is None else f"{r:.2f}x"

    print()
    print("\n".join(common.header_lines(machine, prefix="")))
    print(f"dataset: make_shapes train={args.train} val={args.val} image_size={args.image_size} seed={args.seed} "
          f"min_side={args.min_side:g} in {args.out_dir}; float32 on the CPU")
    print(f"fcoslab: shapes preset + the four data paths + runtime.precision=off"
          + (f" + {' '.join(args.fcoslab_set)}" if args.fcoslab_set else "")
          + f"; {fl['epochs']} epochs, {fl['steps']} steps of {fl['batch_size']}; seconds = the whole train() call "
          "(set-up, training, per-epoch evaluation)")
    tv_name = {"r18": "ResNet-18-FPN P3-P7", "matched": "the preset's network (ResNet-10 width 32, FPN 64, 2-conv heads, 128 px)"}[args.tv_model]
    print(f"torchvision: FCOS {tv_name} from scratch, trainable BatchNorm, {tv['parameters']:,} parameters; "
          f"{tv['optimizer']}; batch {TV_BATCH}, hflip 0.5; {tv['steps']} steps ({tv['images_seen']} images, "
          f"{tv['epochs']} epochs, the last one possibly partial); seconds = training only "
          f"(its evaluation took {tv['eval_seconds']:.1f} s more); eval score threshold {TV_EVAL_SCORE_THRESH}")
    print()
    print("| method | train seconds | AP | AP50 | AP75 |\n|---|---:|---:|---:|---:|")
    for name, side in (("fcoslab (shapes preset)", fl), (f"torchvision FCOS {'R18-FPN' if args.tv_model == 'r18' else 'same network'}", tv)):
        s = side["stats"]
        print(f"| {name} | {side['seconds']:.1f} | {s['AP']:.3f} | {s['AP50']:.3f} | {s['AP75']:.3f} |")
    print(f"| **fcoslab / torchvision** | | **{fmt_ratio(ratios['AP'])}** | {fmt_ratio(ratios['AP50'])} "
          f"| {fmt_ratio(ratios['AP75'])} |")
    goal_met = ratios["AP"] is not None and ratios["AP"] >= 1.25
    print(f"\ngoal (fcoslab AP >= 1.25x torchvision AP at equal wall time): {'met' if goal_met else 'NOT met'}")

    if args.json is not None:
        report = {"date": machine["date"], "machine": machine, "dataset": dataset, "precision": "float32", "device": "cpu",
                  "fcoslab": fl, "torchvision": tv, "ratios": ratios, "goal_ratio": 1.25, "goal_met": goal_met,
                  "command": sys.argv}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
