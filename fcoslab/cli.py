"""The ``fcoslab`` command line: presets, make-shapes, check-data, train, evaluate, predict.

User mistakes print one line, ``fcoslab: error: ...``, and exit with status 2. Training runs under
torchrun unchanged: ``torchrun --nproc_per_node=8 -m fcoslab train ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import PRESET_DIR, list_presets, load_config, parse_overrides
from .errors import FcoslabError
from .runfolder import RunFolder


def _cmd_presets(args) -> None:
    for name in list_presets():
        doc = json.loads((PRESET_DIR / f"{name}.json").read_text()).get("_doc", "")
        print(f"{name:16s} {doc}")


def _cmd_make_shapes(args) -> None:
    from .datasets import make_shapes

    paths = make_shapes(args.out, args.train, args.val, args.image_size, args.seed, args.min_side)
    print(f"wrote {args.train} train and {args.val} val images: {paths['train']}, {paths['val']}")


def _cmd_check_data(args) -> None:
    from .analysis import data_report

    summary, problems = data_report(args.ann, args.images)
    print(summary)
    for problem in problems:
        print(f"  - {problem}")


def _cmd_train(args) -> None:
    from . import distributed as dist
    from .train import train

    if args.resume:
        if args.config is not None:
            raise FcoslabError("--resume continues a run with its own saved config; drop --config "
                               "(--set may change training keys, e.g. train.epochs=24)")
        overrides = parse_overrides(args.set)
        history = train(None, args.resume, resume=True, progress=not args.quiet, resume_overrides=overrides)
        out = args.resume
    else:
        if args.out is None:
            raise FcoslabError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        if RunFolder(args.out).has_checkpoint() and not args.force:
            raise FcoslabError(f"{args.out} already holds a run ({RunFolder.CHECKPOINT}); use --resume {args.out} to continue it, "
                               "--force to start over, or another --out")
        cfg = load_config(args.config or "shapes", args.set)
        history = train(cfg, args.out, progress=not args.quiet)
        out = args.out
    if dist.is_main() and history:
        last = history[-1]
        print(f"done: epoch {last['epoch']}, AP {last['AP']:.3f}, AP50 {last['AP50']:.3f}, AP75 {last['AP75']:.3f}; "
              f"run folder {out}")
    dist.cleanup()


def _cmd_evaluate(args) -> None:
    from .evaluate import evaluate_checkpoint, summary_text

    ckpt = Path(args.checkpoint)
    out = args.out or (ckpt if ckpt.is_dir() else ckpt.parent) / "results.json"
    evaluation = evaluate_checkpoint(ckpt, args.ann, args.images, out, device=args.device)
    print(summary_text(evaluation.stats))
    print(f"{len(evaluation.results)} detections written to {out}")


def _cmd_predict(args) -> None:
    from .predict import Predictor, predict_files

    predictor = Predictor(args.checkpoint, device=args.device)
    records = predict_files(predictor, args.inputs, args.out, args.score, one_class=args.one_class)
    n = sum(len(r["detections"]) for r in records)
    print(f"{n} detections in {len(records)} images; drawings and detections.json in {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcoslab", description="FCOS research kit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the named configs")
    p.set_defaults(func=_cmd_presets)

    shapes = load_config("shapes").shapes  # make-shapes defaults to the set the shapes preset trains on
    p = sub.add_parser("make-shapes", help="generate the synthetic shapes dataset (COCO format)")
    p.add_argument("out", help="output folder (gets train/, val/, train.json, val.json)")
    p.add_argument("--train", type=int, default=shapes.train, help=f"default {shapes.train}")
    p.add_argument("--val", type=int, default=shapes.val, help=f"default {shapes.val}")
    p.add_argument("--image-size", type=int, default=shapes.image_size,
                   help=f"default {shapes.image_size}")
    p.add_argument("--seed", type=int, default=shapes.seed, help=f"default {shapes.seed}")
    p.add_argument("--min-side", type=float, default=shapes.min_side,
                   help=f"smallest object side as a fraction of the image size (default {shapes.min_side:g}; "
                        "0.08 is harder)")
    p.set_defaults(func=_cmd_make_shapes)

    p = sub.add_parser("check-data", help="validate a COCO annotation file and its images")
    p.add_argument("ann")
    p.add_argument("images")
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser("train", help="train a detector (works under torchrun)")
    p.add_argument("--config", help="preset name or JSON file (default: shapes)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.epochs=2")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--force", action="store_true", help="start over in a run folder that holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="COCO evaluation of a run or checkpoint")
    p.add_argument("checkpoint", help="run folder or .pt file")
    p.add_argument("--ann", help="annotation file (default: the run's validation set)")
    p.add_argument("--images", help="image folder for --ann")
    p.add_argument("--out", help="COCO results json (default: beside the checkpoint)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="draw detections on images")
    p.add_argument("checkpoint", help="run folder or .pt file")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--score", type=float, default=0.3, help="score threshold (default 0.3)")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--one-class", action="store_true",
                   help="keep only the best of overlapping boxes of different classes (class-agnostic NMS)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_predict)
    return parser


def _user_message(err: FcoslabError) -> str:
    """The error's own words; an error re-raised from a DataLoader worker carries a traceback to trim."""
    text = str(err)
    if text.startswith("Caught "):
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1].split("FcoslabError: ", 1)[-1] + " (in a data loader worker)"
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        args.func(args)
    except FcoslabError as e:
        print(f"fcoslab: error: {_user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcoslab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
