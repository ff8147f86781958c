"""The multi-GPU plumbing on one GPU, end to end: run under ``torchrun --nproc_per_node=1``.

    python -m torch.distributed.run --nproc_per_node=1 benchmarks/gpu_ddp_check.py --work DIR
        [--preset shapes] [--images 512] [--val 64] [--device auto]

Checks, each a row of ``WORK/ddp.json`` (pass / FAIL / skipped, seconds, detail), each run even when an
earlier one failed:

1. torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR).
2. A process group with NCCL on CUDA (gloo on a CPU), opened here: at WORLD_SIZE=1 fcoslab's
   ``distributed.init`` opens none, so without this NCCL would not be touched at all.
3. Collectives: all_reduce, broadcast, all_gather_object, barrier.
4. One DistributedDataParallel step of the preset's model (device_ids=[LOCAL_RANK]).
5. One epoch of the preset (``train.images_per_epoch=--images`` on a generated shapes set of that size)
   through ``fcoslab.engine.trainer``: train, evaluate, checkpoint (``last.pt``, ``history.json``).
6. ``fcoslab.evaluation.coco`` of the run: the same AP as the epoch's record in the history.
7. Resume with ``train.epochs=2``: a second epoch, the step counter continued, two records.

fcoslab itself trains in one process here (it wraps in DDP only when WORLD_SIZE > 1, and NCCL cannot put
two ranks on one GPU), so checks 2-4 are what exercise NCCL.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as tdist

import common
from gpu_report import StageRecord


class Checks:
    """Rows of the check table; ``run(name, fn)`` records pass (fn's detail), FAIL (its error) or skipped."""

    def __init__(self, rec: StageRecord):
        self.rec = rec
        self.table = rec.table("ddp", "torchrun --nproc_per_node=1: process group, collectives, DDP, and one epoch "
                               "of training, evaluation, checkpoint and resume", ("check", "result", "seconds", "detail"))
        self.failed: set[str] = set()

    def run(self, name: str, fn, needs: tuple[str, ...] = ()) -> None:
        missing = [n for n in needs if n in self.failed]
        if missing:
            self.failed.add(name)
            self.rec.add_row(self.table, {"check": name, "result": "skipped", "detail": f"needs {', '.join(missing)}"})
            return
        with common.stopwatch(None) as watch:
            try:
                detail, result = fn(), "pass"
            except Exception as e:  # noqa: BLE001 (every check is reported; the next ones still run)
                self.failed.add(name)
                traceback.print_exc()
                lines = str(e).strip().splitlines()
                detail, result = f"{type(e).__name__}: {lines[0][:240] if lines else ''}", "FAIL"
        self.rec.add_row(self.table, {"check": name, "result": result, "seconds": watch.seconds, "detail": detail})


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="shapes")
    p.add_argument("--images", type=int, default=512, help="training images (and images per epoch)")
    p.add_argument("--val", type=int, default=64, help="validation images")
    args = p.parse_args(argv)

    from fcoslab.config import load_config
    from fcoslab.evaluation.coco import coco_backend, evaluate
    from fcoslab.engine.trainer import train
    from fcoslab.inference.predictor import resolve_device
    from fcoslab.modeling.model import build_model

    device = resolve_device(args.device)
    work = Path(args.work)
    rec = StageRecord(work, "ddp", "torchrun", f"torchrun --nproc_per_node=1 benchmarks/gpu_ddp_check.py {' '.join(argv)}",
                      common.gpu_name(device) if device.type == "cuda" else "cpu")
    checks = Checks(rec)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)

    def launched():
        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
        found = {k: os.environ.get(k) for k in keys}
        if any(v is None for v in found.values()):
            raise RuntimeError(f"not started by torchrun: {found}")
        return ", ".join(f"{k}={v}" for k, v in found.items())

    def group():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not tdist.is_initialized():
            import datetime

            extra = {"device_id": device} if backend == "nccl" else {}
            tdist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=120), **extra)
        nccl = ""
        if backend == "nccl":
            v = torch.cuda.nccl.version()
            nccl = f", NCCL {'.'.join(map(str, v)) if isinstance(v, tuple) else v}"
        return f"backend {tdist.get_backend()}, world {tdist.get_world_size()}, rank {tdist.get_rank()}{nccl}"

    def collectives():
        t = torch.ones(4, device=device)
        tdist.all_reduce(t)
        b = torch.arange(3.0, device=device)
        tdist.broadcast(b, src=0)
        gathered = [None] * tdist.get_world_size()
        tdist.all_gather_object(gathered, {"rank": tdist.get_rank()})
        tdist.barrier()
        if t.tolist() != [float(tdist.get_world_size())] * 4 or b.tolist() != [0.0, 1.0, 2.0] or gathered[0] != {"rank": 0}:
            raise RuntimeError(f"wrong results: {t.tolist()}, {b.tolist()}, {gathered}")
        return "all_reduce, broadcast, all_gather_object, barrier"

    def ddp_step():
        from torch.nn.parallel import DistributedDataParallel

        cfg = load_config(args.preset)
        model = build_model(cfg.model, 4).to(device).train()
        ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        out = ddp(torch.rand(2, 3, 128, 128, device=device))
        loss = out["cls_logits"].float().mean() + out["bbox_ltrb"].float().mean()
        loss.backward()
        grads = [q.grad for q in model.parameters() if q.requires_grad and q.grad is not None]
        if not grads or not all(torch.isfinite(g).all() for g in grads):
            raise RuntimeError("missing or non-finite gradients")
        return f"{len(grads)} gradients all-reduced by DDP"

    data, run = work / "ddp_data", work / "ddp_run"
    backend = "faster" if _has("faster_coco_eval") else "pycocotools"
    overrides = {"runtime.device": str(device), "train.epochs": 1, "train.images_per_epoch": args.images,
                 "shapes.train": args.images, "shapes.val": args.val, "data.train_ann": str(data / "train.json"),
                 "data.train_images": str(data / "train"), "data.val_ann": str(data / "val.json"),
                 "data.val_images": str(data / "val"), "eval.backend": backend}
    history: list = []

    def one_epoch():
        coco_backend(backend)
        cfg = load_config(args.preset, overrides)
        history[:] = train(cfg, run, progress=False)
        if len(history) != 1 or "AP" not in history[0] or not (run / "last.pt").is_file():
            raise RuntimeError(f"expected one evaluated epoch and last.pt, got {len(history)} records, "
                               f"files {sorted(p.name for p in run.iterdir())}")
        return f"1 epoch, {args.images} images, AP {history[0]['AP']:.4f} (eval.backend={backend}); {run}/last.pt"

    def evaluate_run():
        evaluation = evaluate(run, device=str(device))
        ap, recorded = round(evaluation.stats["AP"], 5), history[0]["AP"]
        if ap != recorded:
            raise RuntimeError(f"fcoslab.evaluate gives AP {ap}, the history {recorded}")
        return f"AP {ap} equals the history's"

    def resume():
        steps_before = torch.load(run / "last.pt", map_location="cpu", weights_only=False)["step"]
        again = train(None, run, resume=True, resume_overrides={"train.epochs": 2}, progress=False)
        steps_after = torch.load(run / "last.pt", map_location="cpu", weights_only=False)["step"]
        if len(again) != 2 or steps_after != 2 * steps_before:
            raise RuntimeError(f"after resume: {len(again)} records, step {steps_after} (before {steps_before})")
        return f"epoch 2 after resume: step {steps_before} -> {steps_after}, AP {again[-1]['AP']:.4f}"

    checks.run("launched by torchrun", launched)
    checks.run("process group", group)
    checks.run("collectives", collectives, needs=("process group",))
    checks.run("DDP step", ddp_step, needs=("process group",))
    checks.run("train one epoch (train, evaluate, checkpoint)", one_epoch)
    checks.run("fcoslab.evaluate of the run", evaluate_run, needs=("train one epoch (train, evaluate, checkpoint)",))
    checks.run("resume for a second epoch", resume, needs=("train one epoch (train, evaluate, checkpoint)",))
    if tdist.is_initialized():
        tdist.destroy_process_group()
    return 1 if checks.failed else 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
