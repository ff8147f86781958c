"""Model FLOPs utilisation of a training step: FLOPs counted by ``torch.utils.flop_counter``, time measured.

    python benchmarks/gpu_efficiency.py [--preset imprv_coco_1x] [--size 800 1066] [--batch 8] [--iters 10]
    python benchmarks/gpu_efficiency.py --count-only            # FLOPs alone (any device, CPU included)

A step is forward, loss, backward and the optimiser, on random images of ``--size`` (padded as the preset
pads) with 10 random boxes each, in the preset's precision rule. MFU = step FLOPs / step time / the
device's matrix rate (``--peak-tflops``, default 790: an H200's measured dense bf16 rate, the figure the
issue states). The same step of torchvision's FCOS is timed beside it with ``--torchvision``.
FLOPs count multiply-adds as 2 and cover convolutions and matrix products (what the counter knows).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcoslab.config import load_config  # noqa: E402
from fcoslab.inference import choose_precision, cpu_name, resolve_device  # noqa: E402
from fcoslab.loss import FCOSCriterion  # noqa: E402
from fcoslab.model import build_model  # noqa: E402
from fcoslab.train import make_optimizer  # noqa: E402


def fcoslab_step(preset: str, batch: int, size: tuple[int, int], device: torch.device):
    """A closure running one training step of ``preset`` and the precision it runs in."""
    cfg = load_config(preset, {"train.device": str(device)})
    model = build_model(cfg, 80).to(device).train()
    precision = choose_precision(cfg.train.amp, device)
    d = cfg.model.size_divisibility
    images = torch.rand(batch, 3, -(-size[0] // d) * d, -(-size[1] // d) * d, device=device)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, 10, 2, generator=g) * torch.tensor([size[1] * 0.7, size[0] * 0.7])
    boxes = torch.cat([xy, xy + torch.rand(batch, 10, 2, generator=g) * size[0] * 0.3 + 4], -1).to(device)
    labels = torch.randint(0, 80, (batch, 10), generator=g).to(device)
    optimizer, criterion = make_optimizer(model, cfg.train), FCOSCriterion(cfg.assign, cfg.loss)

    def step():
        with precision.autocast(device):
            out = model(images)
        loss = criterion(out, boxes, labels)[0]["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, precision.name


def torchvision_step(batch: int, size: tuple[int, int], device: torch.device, dtype):
    from torchvision.models.detection import fcos_resnet50_fpn

    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80, min_size=size[0],
                              max_size=max(size)).to(device).train()
    images = [torch.rand(3, *size, device=device) for _ in range(batch)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 200.0, 300.0]] * 10, device=device),
                "labels": torch.randint(1, 80, (10,), device=device)} for _ in range(batch)]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def seconds_per_step(step, device: torch.device, iters: int) -> float:
    step()  # warm-up (cuDNN autotuning, allocator)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / iters


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="imprv_coco_1x")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1066], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="the device's dense bf16 matrix rate")
    p.add_argument("--count-only", action="store_true", help="count FLOPs of one image's step, time nothing")
    p.add_argument("--torchvision", action="store_true", help="also time torchvision's FCOS step")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# python benchmarks/gpu_efficiency.py {' '.join(argv)}")
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {name}, torch {torch.__version__}")
    size = tuple(args.size)
    step, precision = fcoslab_step(args.preset, 1, size, device)
    with FlopCounterMode(display=False) as counter:
        step()
    per_image = counter.get_total_flops()
    print(f"{args.preset} at {size[0]}x{size[1]}: {per_image / 1e9:.1f} GFLOPs per image per training step "
          "(forward and backward)")
    if args.count_only:
        return
    step, precision = fcoslab_step(args.preset, args.batch, size, device)
    t = seconds_per_step(step, device, args.iters)
    achieved = per_image * args.batch / t / 1e12
    print(f"fcoslab, batch {args.batch}, {precision}: {1000 * t:.1f} ms a step, {args.batch / t:.1f} images/s, "
          f"{achieved:.1f} TFLOP/s, MFU {100 * achieved / args.peak_tflops:.1f}% of {args.peak_tflops:g}")
    if args.torchvision:
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
        t_tv = seconds_per_step(torchvision_step(args.batch, size, device, dtype), device, args.iters)
        print(f"torchvision FCOS, same batch and precision: {1000 * t_tv:.1f} ms a step, {args.batch / t_tv:.1f} "
              f"images/s; fcoslab / torchvision step time {t / t_tv:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
