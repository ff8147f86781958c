"""Model FLOPs utilisation of a training step: FLOPs counted by ``torch.utils.flop_counter``, time measured.

    python benchmarks/gpu_efficiency.py [--preset imprv_coco_1x] [--size 800 1066] [--batch 8] [--iters 10]
                                        [--precision preset|bf16|fp32] [--torchvision]
    python benchmarks/gpu_efficiency.py --count-only            # FLOPs alone (any device, CPU included)

A step is forward, loss, backward and the optimiser (``fcoslab.engine.optim.make_optimizer``), on random uint8
images of ``--size`` (padded as the preset pads) with 10 random boxes each, in the precision asked
(``preset``: the preset's ``runtime.precision`` rule). MFU = step FLOPs / step time / :data:`PEAK_BF16_TFLOPS`,
whatever the precision (fp32 steps are held to the same bf16 rate). The same step of torchvision's FCOS
(frozen BatchNorm, layers 2-4 trainable, as its builder makes it for a pretrained backbone) is timed
beside it with ``--torchvision``. FLOPs count multiply-adds as 2 and cover convolutions and matrix products
(what the counter knows), forward and backward. :class:`FcoslabStep` and :class:`TorchvisionStep` are the
steps that ``benchmarks/gpu_stages.py`` and ``benchmarks/gpu_levers.py`` time.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

import common
from fcoslab.config import load_config
from fcoslab.inference.predictor import choose_precision, resolve_device
from fcoslab.modeling.loss import FCOSCriterion
from fcoslab.modeling.model import build_model
from fcoslab.engine.optim import make_optimizer

# The H200's dense BF16 Tensor Core rate, 989 TFLOP/s: NVIDIA's H200 (SXM) datasheet lists 1,979 TFLOP/s
# "with sparsity", i.e. 989 dense. (An 8192^3 bf16 matmul reached 769-798 TFLOP/s on this workplace's
# H200, .library/device/KINDS.md; the env stage of gpu_check.sh measures that rate again beside it.)
PEAK_BF16_TFLOPS = 989.0
BOXES_PER_IMAGE = 10
PRECISIONS = {"preset": None, "bf16": "bf16", "fp32": "off"}  # --precision -> runtime.precision (None: the preset's)


@dataclass(frozen=True)
class StepOptions:
    """What a lever changes in :class:`FcoslabStep` (the defaults are the trainer's step)."""

    precision: str = "preset"  # preset | bf16 | fp32
    channels_last: bool = False  # model.channels_last=true
    optimizer: str = "foreach"  # foreach (make_optimizer's) | loop (foreach=False) | fused (fused=True)
    compile_model: bool = False  # torch.compile(model)
    compile_loss: bool = False  # torch.compile(criterion)
    trainer_syncs: bool = False  # the two host syncs of fcoslab.engine.trainer.Trainer.train_step (.tolist())
    cuda_graph: bool = False  # the network's forward and backward replayed from CUDA graphs


def random_targets(batch: int, size: tuple[int, int], device: torch.device, seed: int = 0):
    """``BOXES_PER_IMAGE`` random boxes per image: float32 (B, M, 4) xyxy pixels inside ``size`` (H, W)
    and int64 (B, M) labels in [0, 80)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    wh = torch.tensor([w, h]) * (0.05 + 0.55 * torch.rand(batch, BOXES_PER_IMAGE, 2, generator=g))
    xy = (torch.tensor([w, h]) - wh) * torch.rand(batch, BOXES_PER_IMAGE, 2, generator=g)
    labels = torch.randint(0, 80, (batch, BOXES_PER_IMAGE), generator=g)
    return torch.cat([xy, xy + wh], -1).to(device), labels.to(device)


def rebuilt_optimizer(optimizer: torch.optim.Optimizer, kind: str) -> torch.optim.Optimizer:
    """``make_optimizer``'s optimizer (same class, groups and settings) with foreach (its own), a plain
    loop (``foreach=False``) or ``fused=True``."""
    if kind == "foreach":
        return optimizer
    if kind not in ("loop", "fused"):
        raise ValueError(f"optimizer kind must be foreach, loop or fused, got {kind!r}")
    groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in optimizer.param_groups]
    flags = {"foreach": False} if kind == "loop" else {"fused": True}
    return type(optimizer)(groups, **flags)


class _NetworkTensors(torch.nn.Module):
    """The model's three per-image outputs as a tuple (what ``make_graphed_callables`` can capture)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model(images)
        return out["cls_logits"], out["bbox_ltrb"], out["centerness"]


class FcoslabStep:
    """One training step of a preset on a fixed random batch: ``step()`` runs forward, loss, backward and
    the optimiser; each phase is a method too (:meth:`forward`, :meth:`loss`, :meth:`backward`,
    :meth:`update`), for timing phases. ``set_batch(b)`` makes a new batch for the same model."""

    def __init__(self, preset: str, batch: int, size: tuple[int, int], device: torch.device,
                 options: StepOptions = StepOptions(), num_classes: int = 80):
        amp = PRECISIONS[options.precision]
        overrides = {"runtime.device": str(device), "model.channels_last": options.channels_last}
        cfg = load_config(preset, overrides if amp is None else {**overrides, "runtime.precision": amp})
        self.cfg, self.device, self.size, self.options, self.name = cfg, device, tuple(size), options, preset
        torch.manual_seed(0)
        self.model = build_model(cfg.model, num_classes).to(device).train()
        if cfg.model.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.precision = choose_precision(cfg.runtime.precision, device)
        self.optimizer = rebuilt_optimizer(make_optimizer(self.model, cfg.train), options.optimizer)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.dtype == torch.float16)
        criterion = FCOSCriterion(cfg.assign, cfg.loss)
        self.criterion = torch.compile(criterion.__call__) if options.compile_loss else criterion
        self.network = torch.compile(self.model) if options.compile_model else self.model
        self._graphed = None
        self.set_batch(batch)

    def set_batch(self, batch: int) -> None:
        d = self.cfg.model.size_divisibility
        h, w = self.size
        self.batch, self.input_shape = batch, (-(-h // d) * d, -(-w // d) * d)
        g = torch.Generator().manual_seed(1)
        self.images = torch.randint(0, 256, (batch, 3, *self.input_shape), generator=g, dtype=torch.uint8).to(self.device)
        self.boxes, self.labels = random_targets(batch, self.size, self.device)
        self.outputs = self.losses = None
        if self.options.cuda_graph:
            self._capture()

    def _capture(self) -> None:
        """Capture the network's forward and backward for this batch shape (CUDA only)."""
        if self.device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        with torch.no_grad(), self.precision.autocast(self.device):
            fixed = self.model(self.images)  # points, strides and level sizes depend on the shape alone
        self._fixed = {k: fixed[k] for k in ("points", "strides", "level_sizes")}
        with torch.autocast("cuda", dtype=self.precision.dtype, enabled=self.precision.dtype is not None,
                            cache_enabled=False):
            self._graphed = torch.cuda.make_graphed_callables(_NetworkTensors(self.model), (self.images,))

    def forward(self) -> None:
        if self._graphed is not None:
            logits, ltrb, ctr = self._graphed(self.images)
            self.outputs = {"cls_logits": logits, "bbox_ltrb": ltrb, "centerness": ctr, **self._fixed}
            return
        with self.precision.autocast(self.device):
            self.outputs = self.network(self.images)

    def loss(self) -> None:
        self.losses = self.criterion(self.outputs, self.boxes, self.labels)[0]
        if self.options.trainer_syncs:  # Trainer._agree: a finiteness flag (and stop/save flags) to the host
            torch.isfinite(self.losses["loss"]).float().expand(3).tolist()

    def backward(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(self.losses["loss"]).backward()

    def update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.options.trainer_syncs:  # Trainer.train_step: the loss parts to the host for the log
            torch.stack([v.detach().float() for v in self.losses.values()]).tolist()

    def __call__(self) -> None:
        self.forward()
        self.loss()
        self.backward()
        self.update()


class TorchvisionStep:
    """The same step of torchvision's ``fcos_resnet50_fpn`` (91 classes, random weights, frozen BatchNorm and
    layers 2-4 trainable as for a pretrained backbone, ``make_optimizer`` of the tv_fcos_r50 preset), its
    transform (normalise, resize at scale 1, pad to 32) inside the step as in torchvision."""

    def __init__(self, batch: int, size: tuple[int, int], device: torch.device, precision: str = "bf16"):
        from torchvision.models.detection import fcos_resnet50_fpn
        from vs_torchvision import freeze_like_pretrained

        torch.manual_seed(0)
        self.device, self.size, self.name = device, tuple(size), "torchvision"
        self.model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, min_size=min(size),
                                       max_size=max(size))
        freeze_like_pretrained(self.model)
        self.model.to(device).train()
        amp = PRECISIONS[precision] or "auto"
        self.precision = choose_precision(amp, device)
        self.optimizer = make_optimizer(self.model, load_config("tv_fcos_r50").train)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.dtype == torch.float16)
        self.set_batch(batch)

    def set_batch(self, batch: int) -> None:
        h, w = self.size
        self.batch, self.input_shape = batch, (-(-h // 32) * 32, -(-w // 32) * 32)
        g = torch.Generator().manual_seed(1)
        self.images = list(torch.rand(batch, 3, h, w, generator=g).to(self.device).unbind(0))
        boxes, labels = random_targets(batch, self.size, self.device)
        self.targets = [{"boxes": b, "labels": l + 1} for b, l in zip(boxes, labels)]

    def __call__(self) -> None:
        with self.precision.autocast(self.device):
            loss = sum(self.model(self.images, self.targets).values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def count_flops(step) -> int:
    """FLOPs of one call of ``step`` (run once, eagerly, under ``FlopCounterMode``)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure(step, device: torch.device, iters: int, warmup: int = 2) -> dict:
    """Seconds per step (mean of ``iters`` after ``warmup`` steps) and the peak memory of the timed steps
    (CUDA: ``max_memory_allocated`` and ``max_memory_reserved`` in MiB; None on a CPU)."""
    for _ in range(warmup):
        step()
    common.sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with common.stopwatch(device) as watch:  # synchronised at the ends only, as training runs
        for _ in range(iters):
            step()
    seconds = watch.seconds / iters
    peak = reserved = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
        reserved = torch.cuda.max_memory_reserved(device) / 2 ** 20
    return {"seconds": seconds, "images_per_s": step.batch / seconds, "peak_mib": peak, "reserved_mib": reserved}


def mfu(flops: float, seconds: float, peak_tflops: float = PEAK_BF16_TFLOPS) -> tuple[float, float]:
    """(achieved TFLOP/s, MFU in % of ``peak_tflops``)."""
    achieved = flops / seconds / 1e12
    return achieved, 100.0 * achieved / peak_tflops


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="imprv_coco_1x")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1066], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="preset", choices=sorted(PRECISIONS))
    p.add_argument("--peak-tflops", type=float, default=PEAK_BF16_TFLOPS, help="the device's dense bf16 rate")
    p.add_argument("--count-only", action="store_true", help="count FLOPs of one image's step, time nothing")
    p.add_argument("--torchvision", action="store_true", help="also time torchvision's FCOS step")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    common.print_header(__file__, argv)
    print(f"# device: {device} ({common.device_name(device)})")
    size = tuple(args.size)
    options = StepOptions(precision=args.precision)
    step = FcoslabStep(args.preset, 1, size, device, options)
    per_image = count_flops(step)
    print(f"{args.preset} at {size[0]}x{size[1]}: {per_image / 1e9:.1f} GFLOPs per image per training step "
          "(forward and backward)")
    if args.count_only:
        return
    step.set_batch(args.batch)
    r = measure(step, device, args.iters)
    achieved, util = mfu(per_image * args.batch, r["seconds"], args.peak_tflops)
    print(f"fcoslab, batch {args.batch}, {step.precision.name}: {1000 * r['seconds']:.1f} ms a step, "
          f"{r['images_per_s']:.1f} images/s, {achieved:.1f} TFLOP/s, MFU {util:.1f}% of {args.peak_tflops:g}")
    if args.torchvision:
        tv = TorchvisionStep(args.batch, size, device, args.precision)
        t = measure(tv, device, args.iters)
        print(f"torchvision FCOS, same batch and precision: {1000 * t['seconds']:.1f} ms a step, "
              f"{t['images_per_s']:.1f} images/s; fcoslab / torchvision step time {r['seconds'] / t['seconds']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
