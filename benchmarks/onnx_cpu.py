"""onnxruntime against torch on the CPU, float32, the same number of threads: an exported run's network alone, and
its network with decoding and NMS. A benchmark, not a test.

    python benchmarks/onnx_cpu.py [--threads N] [--repeat 20] [--coco-size 512] [--presets shapes_128 tv_fcos_r50]

For each preset a run folder with seeded random weights is written to a temporary folder (nothing is
downloaded): ``shapes_128`` (the walk-through's previous preset, which the measured figures used) at its 128 px, and the COCO preset ``tv_fcos_r50`` (torchvision's FCOS R-50-FPN) with a
4:3 image resized to ``--coco-size`` (512: a 512x704 input). Random weights are made to behave as trained ones
do (batch-norm statistics of a trained network, a classifier whose scores spread), so that decoding has work.
``fcoslab.inference.onnx.export.export_onnx`` writes a static file of each kind (checked against fcoslab as always), then:

- torch: the model as fcoslab's inference runs it on a CPU (eval, channels-last, inference mode, float32),
  alone and followed by ``fcoslab.modeling.decode.decode``;
- onnxruntime: CPUExecutionProvider, ``intra_op_num_threads`` = the torch threads, all graph optimisations.

Prints the median (and least) milliseconds per image (batch 1) of ``--repeat`` runs after two warm-up runs,
torch and onnxruntime taking turns so that a load from elsewhere falls on both, with the command, date, CPU,
versions and load average (the machine may be shared: a load above the thread count means slow figures).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from torchvision.ops import FrozenBatchNorm2d

import common
from fcoslab.config import load_config
from fcoslab.data import resized_shape
from fcoslab.modeling.decode import decode
from fcoslab.inference.onnx.export import export_onnx, sample_input
from fcoslab.inference.predictor import Predictor
from fcoslab.modeling.model import build_model
from fcoslab.runfolder import RunFolder

PRESETS = {"shapes_128": 4, "tv_fcos_r50": 91}  # preset: classes (91: torchvision's COCO labels)


def random_run(name: str, out: Path, coco_size: int) -> tuple[Path, tuple[int, int]]:
    """A run folder of ``name`` with seeded random weights; returns it and the padded input (H, W)."""
    classes = PRESETS[name]
    cfg = load_config(name, {} if name == "shapes_128" else {"data.test_min_size": coco_size,
                                                         "data.max_size": coco_size * 5 // 3})
    h, w = resized_shape(480, 640, cfg.data.test_min_size, cfg.data.max_size) if name != "shapes_128" else (128, 128)
    d = cfg.model.size_divisibility
    torch.manual_seed(0)
    model = build_model(cfg.model, classes)
    with torch.no_grad():
        for m in model.modules():  # statistics as a trained network has them (identity ones make R-50 explode)
            if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 0.6)
        model.head.cls_logits.weight.normal_(0, 0.05)
    folder = RunFolder(out / name)
    folder.check_writable()
    folder.start(cfg.to_dict(), [])
    folder.save({"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": classes,
                 "cat_ids": list(range(classes)), "class_names": [f"c{k}" for k in range(classes)], "epoch": 0,
                 "history": []})
    return folder.path, (-(-h // d) * d, -(-w // d) * d)


def paired_ms(runs, repeat: int) -> list[tuple[float, float]]:
    """(median, min) milliseconds of each of ``runs``, timed in turn within each repetition (after two warm-up
    rounds), so that a load from another process falls on all of them alike."""
    return [(1000 * t.median, 1000 * t.best) for t in common.interleaved(runs, repeat, warmup=2, device="cpu")]


def bench(name: str, tmp: Path, coco_size: int, threads: int, repeat: int) -> list[str]:
    import onnxruntime as ort

    run, size = random_run(name, tmp, coco_size)
    net = export_onnx(run, tmp / f"{name}_net.onnx", image_size=size)
    det = export_onnx(run, tmp / f"{name}_det.onnx", image_size=size, with_decode=True)
    predictor = Predictor(run, device="cpu", amp="off")
    model, cfg = predictor.model, predictor.cfg  # channels-last, as fcoslab's CPU inference runs
    sample = sample_input(*size, cfg)
    images = sample["images"].contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def torch_net():
        return model(images)

    @torch.inference_mode()
    def torch_det():
        return decode(model(images), sample["image_sizes"], sample["orig_sizes"], cfg.decode)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sessions = {k: ort.InferenceSession(str(r["path"]), options, providers=["CPUExecutionProvider"])
                for k, r in (("net", net), ("det", det))}
    feeds = {"net": {"images": sample["images"].numpy()},
             "det": {k: sample[k].numpy() for k in ("images", "image_sizes", "orig_sizes")}}
    n_det = len(torch_det()[0]["scores"])
    rows = []
    for kind, torch_run, what in (("net", torch_net, "network"),
                                  ("det", torch_det, f"network + decode ({n_det} detections)")):
        (t_ms, t_min), (o_ms, o_min) = paired_ms([torch_run, lambda: sessions[kind].run(None, feeds[kind])], repeat)
        rows.append(f"| {name} | {size[0]}x{size[1]} | {what} | {t_ms:.1f} ({t_min:.1f}) | {o_ms:.1f} ({o_min:.1f}) "
                    f"| {t_ms / o_ms:.2f}x |")
    diffs = {**net["max_abs_diff"], **det["max_abs_diff"]}
    checked = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
    rows.append(f"| {name} | | export check, largest abs. differences: {checked} | | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per figure (default 20)")
    parser.add_argument("--coco-size", type=int, default=512, help="shorter side of the COCO preset's input")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    common.print_header()
    print(f"# load average before: {os.getloadavg()[0]:.2f}; onnxruntime {ort.__version__}; "
          f"{args.threads} threads each; float32, batch 1, median of {args.repeat} runs.\n")
    print("| preset | input | what | torch ms, median (min) | onnxruntime ms, median (min) | torch / onnxruntime |")
    print("|---|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            repeat = args.repeat if name == "shapes_128" else max(3, args.repeat // 4)
            for row in bench(name, Path(tmp), args.coco_size, args.threads, repeat):
                print(row, flush=True)
    print(f"\nLoad average after: {os.getloadavg()[0]:.2f} (COCO rows: median of {max(3, args.repeat // 4)} runs).")


if __name__ == "__main__":
    main()
