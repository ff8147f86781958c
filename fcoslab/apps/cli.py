"""The ``fcoslab`` command line: presets, config, make-shapes, make-cocolike, convert, check-data, train, evaluate, compare,
predict, export.

User mistakes print one line, ``fcoslab: error: ...``, and exit with status 2. Training runs under
torchrun unchanged: ``torchrun --nproc_per_node=8 -m fcoslab train ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..config import PRESET_DIR, list_presets, load_config, parse_overrides
from ..errors import FcoslabError
from ..runfolder import RunFolder
from ..engine.stopping import TrainingStopped
from .cli_predict import add_prediction_commands
from .cli_research import add_research_commands


def _cmd_presets(args) -> None:
    for name in list_presets():
        doc = json.loads((PRESET_DIR / f"{name}.json").read_text()).get("_doc", "")
        print(f"{name:16s} {doc}")


def _cmd_config(args) -> None:
    from ..config.docs import explain_text

    cfg = load_config(args.config, args.set)
    print(explain_text(cfg) if args.explain else json.dumps(cfg.to_dict(), indent=2))


def _cmd_make_shapes(args) -> None:
    from ..data import make_shapes

    paths = make_shapes(args.out, args.train, args.val, args.image_size, args.seed, args.min_side)
    print(f"wrote {args.train} train and {args.val} val images: {paths['train']}, {paths['val']}")


def _cmd_make_cocolike(args) -> None:
    from ..data import make_cocolike
    from ..data.synthetic.cocolike import parse_sizes

    paths = make_cocolike(args.out, args.train, args.val, args.seed, args.width, args.height, args.classes,
                          sizes=parse_sizes(args.sizes) if args.sizes else None)
    print(f"wrote {args.train} train and {args.val} val images: {paths['train']}, {paths['val']}")


# Options that name a dataset in another format (convert --from, check-data --format): dest -> (flag, formats).
SOURCE_OPTIONS = {"root": ("--root", "voc"), "split": ("--split", "voc"), "classes": ("--classes", "voc"),
                  "images_dir": ("--images", "yolo list"), "labels": ("--labels", "yolo"),
                  "names": ("--names", "yolo list"), "list_file": ("--list", "list"), "one_based": ("--one-based", "list"),
                  "pixels": ("--pixels", "list")}
SOURCE_REQUIRED = {"voc": ("root",), "yolo": ("images_dir", "labels", "names"), "list": ("list_file", "images_dir", "names")}


def _check_source_options(args, fmt: str, flag: str) -> None:
    given = [dest for dest in SOURCE_OPTIONS if getattr(args, dest) not in (None, [], False)]
    foreign = [SOURCE_OPTIONS[d] for d in given if fmt not in SOURCE_OPTIONS[d][1].split()]
    if foreign:
        raise FcoslabError(f"{flag} {fmt} does not take " + ", ".join(
            f"{option} (it is for {formats.replace(' ', ' and ')})" for option, formats in foreign))
    missing = [SOURCE_OPTIONS[d][0] for d in SOURCE_REQUIRED.get(fmt, ()) if d not in given]
    if missing:
        raise FcoslabError(f"{flag} {fmt} needs {' '.join(missing)}")


def _convert_source(args, flag: str):
    """The VOC, YOLO or list dataset named by the command's options, as a Conversion (COCO in memory)."""
    from ..data import list_to_coco, read_class_names, voc_to_coco, yolo_to_coco

    _check_source_options(args, args.fmt, flag)
    if args.fmt == "voc":
        classes = read_class_names(args.classes, "--classes file") if args.classes else None
        return voc_to_coco(args.root, args.split or "trainval", classes)
    if args.fmt == "yolo":
        return yolo_to_coco(args.images_dir, args.labels, args.names)
    return list_to_coco(args.list_file, args.images_dir, args.names, one_based=args.one_based, pixels=args.pixels)


def _cmd_convert(args) -> None:
    from ..files import write_json

    conversion = _convert_source(args, "--from")
    out = Path(args.out)
    try:  # as predict does: the folder is made, once there is something to write into it
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FcoslabError(f"cannot create the folder {out.parent} of --out: {e.strerror or e}") from None
    write_json(out, conversion.coco)
    print(conversion.summary())
    print(f"wrote {args.out}; its image folder (data.train_images or data.val_images): {conversion.image_dir}")


def _cmd_check_data(args) -> int:
    from ..evaluation.reports import data_report

    if args.fmt == "coco":
        _check_source_options(args, "coco", "--format")
        if args.ann is None or args.images is None:
            raise FcoslabError("check-data needs ANN IMAGES (a COCO file and its image folder), or --format "
                               "voc|yolo|list with that format's options")
        summary, problems, bad = data_report(args.ann, args.images, deep=args.deep)
    else:
        if args.ann is not None:
            raise FcoslabError(f"check-data --format {args.fmt} takes no ANN IMAGES arguments: name the data "
                               "with the format's options (see fcoslab check-data -h)")
        conversion = _convert_source(args, "--format")
        print(conversion.summary())
        summary, problems, bad = data_report(conversion.source, conversion.image_dir, data=conversion.coco,
                                             deep=args.deep)
    print(summary)
    for problem in problems:
        print(f"  - {problem}")
    if bad:
        print(f"{len(bad)} image(s) cannot be used:", file=sys.stderr)
        for path, reason in bad:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def _cmd_train(args) -> None:
    from .. import distributed as dist
    from ..engine.trainer import train

    if args.resume:
        if args.config is not None:
            raise FcoslabError("--resume continues a run with its own saved config; drop --config "
                               "(--set may change training keys, e.g. train.epochs=24)")
        overrides = parse_overrides(args.set)
        history = train(None, args.resume, resume=True, progress=not args.quiet, resume_overrides=overrides,
                        reschedule=args.reschedule)
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
        shown = [k for k in ("AP", "AP50", "AP75", "voc_mAP50", "voc_mAP") if last.get(k) is not None]
        print(f"done: epoch {last['epoch']}, " + ", ".join(f"{k} {last[k]:.3f}" for k in shown) + "; "
              f"run folder {out}")
    dist.cleanup()


def _cmd_evaluate(args) -> None:
    from ..evaluation.reports import per_class_table, per_class_text
    from ..evaluation.coco import evaluate_checkpoint, summary_text

    ckpt = Path(args.checkpoint)
    folder = ckpt if ckpt.is_dir() else ckpt.parent
    out = args.out or folder / "results.json"
    evaluation = evaluate_checkpoint(ckpt, args.ann, args.images, out, device=args.device, metrics=args.metrics,
                                     overrides=parse_overrides(args.set))
    if evaluation.stats:
        print(summary_text(evaluation.stats))
    if evaluation.voc is not None:
        voc = evaluation.voc
        print(" VOC mAP@0.50 (all-point) = {:.3f}, (11-point) = {:.3f}, mAP@0.75 = {:.3f}, mAP@[.50:.95] = {:.3f}".format(
            *[voc[k] or 0.0 for k in ("mAP50", "mAP50_11pt", "mAP75", "mAP")]))
    print(per_class_text(per_class_table(evaluation)))
    print(f"{len(evaluation.results)} detections written to {out}")
    if args.analysis:
        _write_analysis(evaluation, Path(args.analysis_out or folder / "analysis"), args.iou, args.score)


def _write_analysis(evaluation, out: Path, iou: float, score: float) -> None:
    """Confusion matrix and TIDE error breakdown as ``analysis.json``, ``confusion_matrix.png`` and ``errors.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from ..evaluation.reports import error_report, per_class_table
    from ..files import atomic_write, write_json
    from ..viz.plots import plot_confusion_matrix, plot_error_breakdown

    if not 0 < iou < 1:
        raise FcoslabError(f"--iou must be between 0 and 1, got {iou}")
    report = error_report(evaluation, iou=iou, score=score)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "analysis.json", {**report, "per_class": per_class_table(evaluation)})
    for name, fig in (("confusion_matrix.png", plot_confusion_matrix(report["confusion"])),
                      ("errors.png", plot_error_breakdown(report["errors"]))):
        atomic_write(out / name, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    errors = report["errors"]
    print("errors (TIDE, AP50 recovered if fixed): " + ", ".join(
        f"{k} {100 * (v or 0):.1f} ({errors['counts'][k]})" for k, v in errors["dAP"].items()))
    print(f"analysis written to {out}: analysis.json, confusion_matrix.png, errors.png")


def _cmd_import_torchvision(args) -> None:
    from ..data import read_class_names
    from ..inference.torchvision_import import import_torchvision

    names = read_class_names(args.names) if args.names else None
    folder = import_torchvision(args.weights, args.out, names, parse_overrides(args.set), force=args.force)
    print(f"wrote run folder {folder.path}: fcoslab evaluate/predict {folder.path}, notebooks 04/05 with "
          f"RUN_DIR={folder.path}, or fine-tune with --set model.init_from={folder.path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcoslab", description="FCOS research kit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the named configs")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("config", help="print a resolved config (--explain: every key's value, default, type, meaning)")
    p.add_argument("config", nargs="?", default="shapes", help="preset name or JSON file (default: shapes)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    p.add_argument("--explain", action="store_true", help="a key a line, with default, type and meaning")
    p.set_defaults(func=_cmd_config)

    _add_generator_commands(sub)

    _add_data_commands(sub)

    p = sub.add_parser("train", help="train a detector (works under torchrun)")
    p.add_argument("--config", help="preset name or JSON file (default: shapes)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.epochs=2")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--force", action="store_true", help="start over in a run folder that holds a run")
    p.add_argument("--reschedule", action="store_true",
                   help="with --resume: accept --set values that change the part of the schedule already trained")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="COCO evaluation of a run or checkpoint")
    p.add_argument("checkpoint", help="run folder or .pt file")
    p.add_argument("--ann", help="annotation file (default: the run's validation set)")
    p.add_argument("--images", help="image folder for --ann")
    p.add_argument("--out", help="COCO results json (default: beside the checkpoint)")
    p.add_argument("--device", default="auto")
    p.add_argument("--metrics", choices=["coco", "voc", "both"], help="default: the run's eval.metrics")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="test-time overrides of the run's config, e.g. eval.tta=true eval.tta_sizes=[96,160]")
    p.add_argument("--analysis", action="store_true",
                   help="also write the confusion matrix and the error breakdown (JSON and PNG)")
    p.add_argument("--analysis-out", help="folder for --analysis (default: RUN/analysis)")
    p.add_argument("--score", type=float, default=0.3, help="score threshold of the confusion matrix (default 0.3)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU of a hit in the confusion matrix and the error "
                                                          "breakdown (default 0.5)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("import-torchvision", help="torchvision FCOS weights -> an fcoslab run folder (same detections)")
    p.add_argument("weights", help="state_dict of torchvision's fcos_resnet50_fpn, e.g. fcos_resnet50_fpn_coco-99b0c9b7.pth")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--names", help="class names, one a line (default: COCO's 91 torchvision labels)")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of the tv_fcos_r50 preset, e.g. the data paths for evaluation")
    p.set_defaults(func=_cmd_import_torchvision)

    add_prediction_commands(sub)
    add_research_commands(sub)
    return parser


def _add_generator_commands(sub) -> None:
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

    p = sub.add_parser("make-cocolike", help="generate a COCO-like synthetic set: 640x480 JPEGs, 80 classes, "
                                             "COCO's object counts and sizes (for loading benchmarks)")
    p.add_argument("out", help="output folder (gets train/, val/, train.json, val.json)")
    p.add_argument("--train", type=int, default=1000, help="default 1000")
    p.add_argument("--val", type=int, default=100, help="default 100")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--width", type=int, default=640, help="default 640")
    p.add_argument("--height", type=int, default=480, help="default 480")
    p.add_argument("--classes", type=int, default=80, help="at most 80 (default 80)")
    p.add_argument("--sizes", help="a size per image drawn from WxH,WxH,... or 'mixed' (sizes common in COCO); "
                                   "replaces --width and --height")
    p.set_defaults(func=_cmd_make_cocolike)


def _add_data_commands(sub) -> None:
    """The convert and check-data commands, which share the options naming a VOC, YOLO or list dataset."""
    p = sub.add_parser("convert", help="convert VOC, YOLO or list annotations to a COCO json")
    p.add_argument("--from", dest="fmt", required=True, choices=["voc", "yolo", "list"])
    p.add_argument("--out", required=True, help="COCO json to write")
    _add_source_options(p)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("check-data", help="validate annotations (COCO, or VOC/YOLO/list with --format) and images")
    p.add_argument("ann", nargs="?", help="COCO annotation file (for --format coco)")
    p.add_argument("images", nargs="?", help="its image folder")
    p.add_argument("--format", dest="fmt", default="coco", choices=["coco", "voc", "yolo", "list"],
                   help="annotation format (default coco); others are converted in memory")
    p.add_argument("--deep", action="store_true", help="decode every image in full (default: each image's header "
                                                         "and the end of its file); exit status 1 if any is bad")
    _add_source_options(p)
    p.set_defaults(func=_cmd_check_data)


def _add_source_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dataset in another format")
    g.add_argument("--root", action="append", default=[], help="voc: a VOC year folder (repeat for 07+12)")
    g.add_argument("--split", help="voc: ImageSets/Main/SPLIT.txt (default trainval)")
    g.add_argument("--classes", metavar="FILE", help="voc: class names, one a line (default: the 20 VOC classes)")
    g.add_argument("--images", dest="images_dir", help="yolo, list: image folder")
    g.add_argument("--labels", help="yolo: label folder")
    g.add_argument("--names", help="yolo: data.yaml or classes.txt; list: names file, first line background")
    g.add_argument("--list", dest="list_file", help="list: the list file")
    g.add_argument("--pixels", choices=["continuous", "one-based", "zero-based"],
                   help="list: how the numbers count pixels (default continuous; the reference's VOC lists are "
                        "zero-based: x2 = xmax + 1, its COCO lists continuous)")
    g.add_argument("--one-based", action="store_true", help="list: the same as --pixels one-based (1-based "
                                                             "inclusive indices, as VOC's XML)")


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
        return args.func(args) or 0
    except FcoslabError as e:
        print(f"fcoslab: error: {_user_message(e)}", file=sys.stderr)
        return 2
    except TrainingStopped as e:  # training saved what it had: say what and how to go on
        print(f"fcoslab: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fcoslab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
