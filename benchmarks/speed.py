"""Training and inference images/s of each preset on the current device (random images at the preset's
test size; no data loading). A benchmark, not a test.

    python benchmarks/speed.py [--presets shapes imprv_coco_1x] [--batch 2] [--iters 5] [--device cpu]
                               [--set KEY=VALUE ...]

``--set`` times a variant of each preset (for example ``model.fpn_norm=gn 'model.strides=[8,16,32]'``).
"""

from __future__ import annotations

import argparse
import sys

import torch

import common
from fcoslab.config import list_presets, load_config, parse_overrides
from fcoslab.data import resized_shape
from fcoslab.errors import FcoslabError
from fcoslab.modeling.loss import FCOSCriterion
from fcoslab.modeling.model import build_model
from fcoslab.inference.predictor import choose_precision, resolve_device
from fcoslab.engine.trainer import make_optimizer


def bench_preset(name: str, batch: int, iters: int, device: torch.device, overrides: dict | None = None) -> dict:
    cfg = load_config(name, {"model.frozen_bn": False, "model.backbone_weights": "", "runtime.device": str(device),
                             **(overrides or {})})
    h, w = resized_shape(cfg.data.test_min_size, int(cfg.data.test_min_size * 4 / 3), cfg.data.test_min_size,
                         cfg.data.max_size)
    model = build_model(cfg.model, 80 if "coco" in name else 4).to(device)
    precision = choose_precision(cfg.runtime.precision, device)
    ctx = lambda: precision.autocast(device)  # noqa: E731
    d = cfg.model.size_divisibility
    images = torch.rand(batch, 3, -(-h // d) * d, -(-w // d) * d, device=device)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, 10, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    boxes = torch.cat([xy, xy + torch.rand(batch, 10, 2, generator=g) * h * 0.3 + 4], -1).to(device)
    labels = torch.randint(0, model.num_classes, (batch, 10), generator=g).to(device)
    optimizer = make_optimizer(model, cfg.train)
    criterion = FCOSCriterion(cfg.assign, cfg.loss)

    def train_step():
        with ctx():
            out = model(images)
        loss = criterion(out, boxes, labels)[0]["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer_step():
        from fcoslab.modeling.decode import decode

        with ctx():
            out = model(images)
        size = torch.tensor([[h, w]] * batch, device=device)
        decode(out, size, size, cfg.decode)

    result = {"preset": name, "input": f"{h}x{w}", "batch": batch, "precision": precision.name}
    for label, step, mode in (("train img/s", train_step, model.train), ("infer img/s", infer_step, model.eval)):
        mode()
        step()
        with common.stopwatch(device) as watch:
            for _ in range(iters):
                step()
        result[label] = batch * iters / watch.seconds
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=list_presets())
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config keys of every preset timed")
    args = parser.parse_args()
    device = resolve_device(args.device)
    overrides = parse_overrides(args.set)
    common.print_header()
    print(f"device: {device} ({common.device_name(device)}); batch {args.batch}, {args.iters} timed iterations"
          + (f"; --set {' '.join(args.set)}" if args.set else ""))
    print("| preset | input | train img/s | inference img/s |\n|---|---|---:|---:|")
    for preset in args.presets:
        try:
            r = bench_preset(preset, args.batch, args.iters, device, overrides)
        except FcoslabError as e:  # a misspelt --set key or value: the message names it
            print(f"speed.py: {e}", file=sys.stderr)
            return 2
        print(f"| {r['preset']} | {r['input']} | {r['train img/s']:.1f} | {r['infer img/s']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
