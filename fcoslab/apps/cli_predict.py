"""The command line's prediction and deployment commands: ``fcoslab predict`` (drawn detections and
``detections.json``, from a run or an ONNX file) and ``fcoslab export`` (ONNX)."""

from __future__ import annotations

from ..errors import FcoslabError


MIN_TILE = 32  # px: the backbone's coarsest feature stride; a smaller tile holds no object worth finding


def _cmd_predict(args) -> None:
    from ..inference.predict import Predictor, UnreadableImages, predict_files

    if not 0 <= args.score <= 1:
        raise FcoslabError(f"--score must be a score threshold in [0, 1], got {args.score}")
    if args.tile != 0 and args.tile < MIN_TILE or not 0 <= args.overlap < 1:
        raise FcoslabError(f"--tile must be 0 (off) or a side of at least {MIN_TILE} pixels, and --overlap in [0, 1); "
                           f"got --tile {args.tile}, --overlap {args.overlap}")
    inputs = args.inputs
    if args.onnx and args.set:
        raise FcoslabError("--set changes a run's config: it takes a checkpoint, not --onnx")
    if args.onnx:  # every positional is an image: argparse gives the first to checkpoint when there are several
        from ..inference.onnx.export import OnnxPredictor

        predictor = OnnxPredictor(args.onnx)
        inputs = ([args.checkpoint] if args.checkpoint else []) + inputs
    elif args.checkpoint is None:
        raise FcoslabError("predict needs CHECKPOINT (a run folder or .pt file) before the images, or --onnx FILE")
    else:
        from ..config import parse_overrides

        predictor = Predictor(args.checkpoint, device=args.device, overrides=parse_overrides(args.set))
    try:
        records = predict_files(predictor, inputs, args.out, args.score, one_class=args.one_class, tile=args.tile,
                                overlap=args.overlap)
    except UnreadableImages as e:
        records = e.records
        _print_predictions(records, args.out)
        raise
    _print_predictions(records, args.out)


def _print_predictions(records: list[dict], out) -> None:
    n = sum(len(r["detections"]) for r in records)
    print(f"{n} detections in {len(records)} images; drawings and detections.json in {out}")


def _cmd_export(args) -> None:
    from ..inference.onnx.export import export_onnx

    result = export_onnx(args.checkpoint, args.out, dynamic=args.dynamic, with_decode=args.with_decode,
                         image_size=args.image_size, opset=args.opset, with_preprocess=args.with_preprocess)
    size = "dynamic" if result["image_size"] is None else "x".join(map(str, result["image_size"]))
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in result["max_abs_diff"].items())
    print(f"wrote {result['path']} ({result['kind']}, opset {result['opset']}, input {size}; inputs "
          f"{', '.join(result['inputs'])}; outputs {', '.join(result['outputs'])}); onnxruntime vs fcoslab, largest "
          f"differences: {diffs}; the deployment contract is the file's fcoslab.contract metadata (docs/deploy.md)")


def add_prediction_commands(sub) -> None:
    p = sub.add_parser("predict", help="draw detections on images")
    p.add_argument("checkpoint", nargs="?", help="run folder or .pt file (none with --onnx)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--onnx", metavar="FILE", help="instead of a checkpoint: an fcoslab export --with-decode or --with-preprocess file")
    p.add_argument("--score", type=float, default=0.3, help="score threshold (default 0.3)")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--one-class", action="store_true",
                   help="keep only the best of overlapping boxes of different classes (class-agnostic NMS)")
    p.add_argument("--tile", type=int, default=0, help="predict from overlapping tiles of this side (px) and the "
                                                        "whole image, merged by NMS (large images, small objects)")
    p.add_argument("--overlap", type=float, default=0.2, help="tile overlap, a fraction of --tile (default 0.2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="test-time overrides of the run's config, e.g. eval.tta=true")
    p.set_defaults(func=_cmd_predict)

    _add_export_command(sub)


def _add_export_command(sub) -> None:
    p = sub.add_parser("export", help="export a run to ONNX (the network, with --with-decode boxes from a padded "
                                      "image, with --with-preprocess boxes from any uint8 image)")
    p.add_argument("checkpoint", help="run folder or .pt file")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="only onnx")
    p.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch (network alone), height and width; the "
                                                         "graph pads H and W to the size divisibility itself")
    p.add_argument("--with-decode", action="store_true",
                   help="include decoding and NMS: one padded image and its sizes in, boxes, scores, labels out")
    p.add_argument("--with-preprocess", action="store_true",
                   help="include evaluation's resize, scaling and padding, decoding and NMS: a uint8 (H, W, 3) RGB "
                        "image of any size in, boxes in its pixels, scores, labels out")
    p.add_argument("--opset", type=int, help="ONNX opset, 17 to 20 (default 17; 18 with --with-preprocess, whose "
                                             "antialiased resize needs it)")
    p.add_argument("--image-size", type=int, nargs="+", metavar="N",
                   help="H [W] of the (static) input; default the run's test size padded to its size divisibility")
    p.set_defaults(func=_cmd_export)
