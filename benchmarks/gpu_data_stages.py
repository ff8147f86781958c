"""The data side of the GPU check (``benchmarks/gpu_stages.py evalshare|decode``).

``evalshare``: the per-epoch COCO evaluation (5000 images, ``eval.backend=faster``) against an epoch of
training. Its inference is measured on ``--eval-images`` generated COCO-like images (``fcoslab
make-cocolike`` sizes, ``mixed`` by default) through fcoslab's evaluation loader and ``predict_dataset``
with a random-weight model, and scaled to 5000 images; the scoring of 5000 images is measured in full on
a synthetic COCO ground truth and detections (``benchmarks/evaluation.py``'s generators, 100 detections
an image). The epoch is 118,287 images at the training rate of the ``steps`` stage (or one measured here).

``decode``: JPEG files (make-cocolike's) decoded to uint8 (3, H, W) by ``torchvision.io.decode_jpeg`` on
one CPU thread, on a pool of one thread per core, and on the GPU (nvjpeg) one file at a time and in
batches of 32 (bytes in host memory, decoding and the host-to-device copy timed, no resize).
"""

from __future__ import annotations

import json
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import common
from gpu_efficiency import FcoslabStep, StepOptions, measure

from fcoslab.data.synthetic.cocolike import MIXED_SIZES, make_cocolike, parse_sizes

COCO_TRAIN_IMAGES, COCO_VAL_IMAGES = 118287, 5000


def cocolike_images(work: Path, count: int, sizes: str) -> tuple[Path, float]:
    """``count`` make-cocolike val images in ``WORK/cocolike`` (made once; reused when there), and the
    seconds the generation took (0 when reused)."""
    out = work / "cocolike"
    ann = out / "val.json"
    if ann.is_file() and len(json.loads(ann.read_text())["images"]) == count:
        return out, 0.0
    sizes = MIXED_SIZES if sizes == "mixed" else parse_sizes(sizes)
    return out, common.once(lambda: make_cocolike(out, train=0, val=count, sizes=sizes), device=None)[1]


def evaluation_share(args, rec, device: torch.device, clock) -> None:
    """The evaluation table (each row saved when measured) and the share-of-an-epoch table."""
    from evaluation import coco_like_detections, coco_like_ground_truth

    from fcoslab.config import load_config
    from fcoslab.data import CocoDetection, build_transforms
    from fcoslab.evaluation.coco import coco_backend, predict_dataset, score_results, to_coco_results
    from fcoslab.inference.predictor import choose_precision, inference_layout
    from fcoslab.modeling.model import build_model

    preset, precision = args.presets[0], args.precisions[0]
    folder, generated = cocolike_images(Path(args.work), args.eval_images, args.eval_sizes)
    amp = {"bf16": "bf16", "fp32": "off"}.get(precision)
    cfg = load_config(preset, {"runtime.device": str(device), "eval.backend": args.backend,
                               **({"runtime.precision": amp} if amp else {})})
    coco_backend(args.backend)  # a missing faster-coco-eval fails here, before the timing
    val = CocoDetection(folder / "val.json", folder / "val", build_transforms(cfg.data, train=False))
    model = build_model(cfg.model, len(val.index.cat_ids)).to(device).eval()
    inference_layout(model, device)
    prec = choose_precision(cfg.runtime.precision, device)
    n, column = len(val), f"seconds for {COCO_VAL_IMAGES}"
    scale = COCO_VAL_IMAGES / n
    table = rec.table("evaluation", f"One evaluation of {COCO_VAL_IMAGES} images (fcoslab {preset}, {prec.name}, "
                      f"eval.backend={args.backend}, eval.batch_size {cfg.eval.batch_size}, "
                      f"{cfg.data.num_workers} loader workers)",
                      ("part", "measured on images", "seconds", "ms/image", column),
                      [f"Inference ran on {n} generated make-cocolike images ({args.eval_sizes} sizes, made in "
                       f"{generated:.1f} s) and is scaled x{scale:g} to {COCO_VAL_IMAGES}: a measured rate, not a "
                       f"{COCO_VAL_IMAGES}-image run."])

    def row(part: str, images: int, seconds: float, factor) -> None:
        rec.add_row(table, {"part": part, "measured on images": images, "seconds": seconds,
                            "ms/image": 1000 * seconds / max(images, 1),
                            column: None if factor is None else seconds * factor})

    detections, t_predict = common.once(lambda: predict_dataset(model, val, cfg, device, prec), device)
    row("inference + loading (predict_dataset)", n, t_predict, scale)
    results, t_convert = common.once(lambda: to_coco_results(detections, val.index.cat_ids), device)
    row("COCO results conversion", n, t_convert, scale)
    rec.note(f"Random weights: {len(results) / max(n, 1):.0f} detections an image (the cap is "
             f"{cfg.decode.max_detections}); a trained model has no more, so NMS and scoring cost no more.", table)
    _, t_small = common.once(lambda: score_results(val.data, results, list(val.index.names), "coco", args.backend),
                             device)
    row(f"scoring these {n} images", n, t_small, None)
    t_score, score_images = t_small * scale, n  # replaced by the synthetic 5000-image scoring when it runs
    if clock.left() > 30:
        with common.stopwatch(None) as generation:
            gt = coco_like_ground_truth(args.score_images)
            synthetic = coco_like_detections(gt)
        t_generate = generation.seconds
        _, seconds = common.once(lambda: score_results(gt, synthetic, [c["name"] for c in gt["categories"]], "coco",
                                                  args.backend), device)
        score_images, t_score = args.score_images, seconds * COCO_VAL_IMAGES / args.score_images
        row("scoring (load + evaluate + accumulate + summarize)", score_images, seconds,
            COCO_VAL_IMAGES / args.score_images)
        rec.note(f"Scoring: {args.score_images} synthetic images (benchmarks/evaluation.py's ground truth and 100 "
                 f"detections an image, generated in {t_generate:.1f} s, untimed).", table)
    else:
        rec.note(f"Scoring: no time left for the synthetic {args.score_images}-image scoring; the {n} images' "
                 f"scoring is scaled x{scale:g} instead.", table)
    t_eval = (t_predict + t_convert) * scale + t_score
    rec.add_row(table, {"part": "evaluation in all", column: t_eval})
    rec.set("eval_seconds_5000", t_eval)
    epoch_share(args, rec, device, clock, t_eval, precision)


def epoch_share(args, rec, device: torch.device, clock, t_eval: float, precision: str) -> None:
    share = rec.table("share", f"Evaluation's share of an epoch ({COCO_TRAIN_IMAGES} training images, one evaluation "
                      f"of {COCO_VAL_IMAGES})", ("preset", "precision", "train img/s", "rate from", "epoch training s",
                                                 "evaluation s", "evaluation % of epoch"),
                      ["Training time from the step benchmark's images/s (no data loading, batch "
                       f"{args.batch}): a lower bound on the epoch, so the share is an upper bound. The evaluation "
                       f"is that of {args.presets[0]} for every row."])
    rates = {}
    steps_json = Path(args.work) / "steps.json"
    if steps_json.is_file():
        rates = json.loads(steps_json.read_text()).get("data", {}).get("rates", {})
    for name in args.presets:
        source = "steps stage"
        rate = rates.get(f"{name}/{precision}")
        if rate is None and clock.left() > 20:
            step = FcoslabStep(name, args.batch, tuple(args.size), device, StepOptions(precision=precision))
            rate, source = measure(step, device, max(1, args.iters // 2), args.warmup)["images_per_s"], "measured here"
            del step
        if rate is None:
            rec.note(f"{name}: no training rate (steps stage missing, no time left)", share)
            continue
        epoch = COCO_TRAIN_IMAGES / rate
        rec.add_row(share, {"preset": name, "precision": precision, "train img/s": rate, "rate from": source,
                            "epoch training s": epoch, "evaluation s": t_eval,
                            "evaluation % of epoch": 100 * t_eval / (epoch + t_eval)})


def _rate(fn, items: int, repeat: int = 3) -> float:
    """Best images/s of ``repeat`` runs of ``fn`` (which handles ``items`` images)."""
    return items / common.timed(fn, repeat, warmup=0, device=None).best


def decode_throughput(args, rec, device: torch.device, clock) -> None:
    import warnings

    warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    folder = Path(args.work) / "cocolike"  # the evalshare stage's images when it made them
    if not (folder / "val.json").is_file():
        folder, _ = cocolike_images(Path(args.work), max(args.decode_images, 1), args.eval_sizes)
    files = sorted((folder / "val").glob("*.jpg"))[: args.decode_images]
    datas = [read_file(str(p)) for p in files]
    n, mb = len(datas), sum(d.numel() for d in datas) / 2 ** 20
    table = rec.table("decode", f"JPEG decoding to uint8 (3, H, W): {n} make-cocolike files, {mb / max(n, 1) * 1024:.0f} "
                      "KB each on average (bytes already in memory)", ("decoder", "batch", "images/s", "ms/image"),
                      ["Best of 3 runs; GPU rows include the host-to-device copy and a synchronize; no resize.",
                       "fcoslab's loader decodes in its CPU workers (fcoslab.data.read_pixels); decoding on the "
                       "GPU would need the loader to hand over bytes (not done in fcoslab)."])

    def cpu_one():
        for d in datas:
            decode_jpeg(d, mode=ImageReadMode.RGB)

    threads = os.cpu_count() or 1

    def cpu_pool():
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda d: decode_jpeg(d, mode=ImageReadMode.RGB), datas))

    rows = [("CPU libjpeg-turbo, 1 thread", 1, cpu_one), (f"CPU, {threads} threads", 1, cpu_pool)]
    if device.type == "cuda":
        def gpu_one():
            for d in datas:
                decode_jpeg(d, mode=ImageReadMode.RGB, device=device)
            common.sync(device)

        def gpu_batched():
            for i in range(0, n, 32):
                decode_jpeg(datas[i:i + 32], mode=ImageReadMode.RGB, device=device)
            common.sync(device)

        rows += [("GPU nvjpeg, one file a call", 1, gpu_one), ("GPU nvjpeg, batched", 32, gpu_batched)]
    else:
        rec.note("GPU rows: n/a (no CUDA device)", table)
    for name, batch, fn in rows:
        if clock.left() < 5:
            rec.note(f"skipped {name}: stage time limit reached", table)
            continue
        try:
            fn()  # warm-up (nvjpeg handles, thread start)
            rate = _rate(fn, n)
        except Exception as e:  # noqa: BLE001 (a decoder that fails is a row that says so)
            rec.note(f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", table)
            continue
        rec.add_row(table, {"decoder": name, "batch": batch, "images/s": rate, "ms/image": 1000 / rate})
    if device.type == "cuda" and n:
        k = min(n, 16)
        diffs = [(decode_jpeg(d, mode=ImageReadMode.RGB, device=device).cpu().int()
                  - decode_jpeg(d, mode=ImageReadMode.RGB).int()).abs() for d in datas[:k]]
        rec.note(f"Pixels, GPU vs CPU decoder on {k} files: largest difference {max(int(x.max()) for x in diffs)}, "
                 f"mean {statistics.mean(float(x.float().mean()) for x in diffs):.3f} (of 255).", table)
