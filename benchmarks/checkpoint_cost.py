"""What a checkpoint costs at the COCO presets' sizes, and so what ``train.checkpoint_minutes`` costs. A
benchmark, not a test.

    python benchmarks/checkpoint_cost.py [--presets imprv_coco_1x seed_coco_2x tv_fcos_r50] [--repeat 3] [--dir DIR]

For each preset: its model (80 classes), its optimizer with a momentum buffer for every trainable
parameter (as after the first step), and the trainer's other state, saved the way training saves it
(:meth:`fcoslab.runfolder.RunFolder.save`: a temporary file, then a rename, then ``history.json``) into
``--dir`` (default: a temporary folder on the disk that holds this checkout's ``runs/``). Prints the file's
size, the median seconds of a save, and the share of training time that saving every
``checkpoint_minutes`` minutes (10, the default, and 1) takes. Saving blocks training, so that share is
the overhead; a GPU step rate does not change it, only the disk does.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import common
from fcoslab.config import load_config
from fcoslab.modeling.model import build_model
from fcoslab.engine.optim import make_optimizer
from fcoslab.runfolder import RunFolder, rng_state


def trainer_state(preset: str) -> dict:
    cfg = load_config(preset)
    model = build_model(cfg.model, 80)
    optimizer = make_optimizer(model, cfg.train)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()  # momentum buffers exist from the first step on
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {}, "epoch": 0,
            "step": 1000, "batch_in_epoch": 1000, "config": cfg.to_dict(), "num_classes": 80,
            "cat_ids": list(range(1, 81)), "class_names": [f"c{i}" for i in range(80)], "history": [],
            "nonfinite_total": 0, "elapsed": 0.0, "rng": rng_state(), "epoch_sums": {"loss": 1.0},
            "epoch_count": 1000, "epoch_losses": {}, "pending_eval": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["imprv_coco_1x", "seed_coco_2x", "tv_fcos_r50"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", help="where to write (default: a temporary folder beside runs/)")
    args = parser.parse_args()
    base = Path(args.dir) if args.dir else common.ROOT
    common.print_header()
    print(f"# writing under {base}")
    print("| preset | parameters | last.pt | save (median of {}) | every 10 min | every 1 min |".format(args.repeat))
    print("|---|---:|---:|---:|---:|---:|")
    for preset in args.presets:
        state = trainer_state(preset)
        params = sum(v.numel() for v in state["model"].values() if v.is_floating_point())
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            folder = RunFolder(tmp)
            s = common.timed(lambda: folder.save(state), args.repeat, warmup=0, device="cpu").median
            size = folder.checkpoint.stat().st_size / 2 ** 20
        print(f"| {preset} | {params / 1e6:.1f} M | {size:.0f} MiB | {s:.2f} s | {100 * s / 600:.3f}% | "
              f"{100 * s / 60:.2f}% |")


if __name__ == "__main__":
    main()
