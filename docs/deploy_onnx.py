"""Detect objects with an fcoslab ONNX file and nothing of fcoslab or torch: numpy, Pillow and onnxruntime.

    python deploy_onnx.py model.onnx photo.jpg [more.png ...] [--score 0.3] [--out detections.json]

All it needs to know comes from the file's ``fcoslab.contract`` metadata (docs/deploy.md). A file exported
with ``--with-preprocess`` takes the image's RGB pixels as they are; one exported with ``--with-decode`` gets
them resized, scaled and padded here, as the contract says. The detections are printed (or written) as
``fcoslab predict`` writes its detections.json.
"""

import argparse
import json
import math

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def read_contract(session) -> dict:
    meta = session.get_modelmeta().custom_metadata_map
    if "fcoslab.contract" not in meta:
        raise SystemExit("this file has no fcoslab.contract metadata: export it again with fcoslab export")
    return json.loads(meta["fcoslab.contract"])


def load_rgb(path) -> Image.Image:
    """An image file as ``fcoslab predict`` reads it: EXIF orientation applied, transparency on white, RGB."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return im.convert("RGB")


def resized_size(h: int, w: int, resize: dict) -> tuple[int, int]:
    """The (h, w) the contract's resize rule gives an image of h x w pixels."""
    if resize["rule"] == "square":
        return tuple(resize["size"])
    scale = min(resize["min_size"] / min(h, w), resize["max_size"] / max(h, w))
    if resize["antialias"]:
        return max(1, round(h * scale)), max(1, round(w * scale))
    return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))


def bilinear(pixels: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of float (H, W, 3) pixels without antialiasing (half-pixel centres, edges clamped)."""
    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0)
        low = np.minimum(np.floor(src).astype(int), n_in - 1)
        return low, np.minimum(low + 1, n_in - 1), (src - low).astype(np.float32)

    (y0, y1, fy), (x0, x1, fx) = taps(pixels.shape[0], h), taps(pixels.shape[1], w)
    rows = pixels[y0] * (1 - fy)[:, None, None] + pixels[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def network_inputs(rgb: Image.Image, contract: dict) -> dict:
    """The inputs of a --with-decode file: the image resized, scaled to [0, 1] and padded as the contract says."""
    pre = contract["preprocess"]
    h, w = rgb.height, rgb.width
    size = resized_size(h, w, pre["resize"])
    scale = np.float32(pre["pixel_scale"]["multiply_by"])
    if pre["resize"]["antialias"]:  # on uint8 pixels: Pillow's bilinear resize antialiases as fcoslab's does
        pixels = np.asarray(rgb.resize(size[::-1], Image.BILINEAR) if size != (h, w) else rgb, np.float32) * scale
    else:
        pixels = np.asarray(rgb, np.float32) * scale
        pixels = bilinear(pixels, *size) if size != (h, w) else pixels
    m = pre["pad"]["multiple"]
    H, W = contract["image_size"] or (math.ceil(size[0] / m) * m, math.ceil(size[1] / m) * m)
    if size[0] > H or size[1] > W:
        raise SystemExit(f"a {w}x{h} image becomes a {size[1]}x{size[0]} input, larger than this file's {W}x{H}")
    canvas = np.empty((H, W, 3), np.float32)
    canvas[:] = np.asarray(pre["pad"]["value"], np.float32)  # bottom and right padding
    canvas[:size[0], :size[1]] = pixels
    return {"images": np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]),  # (1, 3, H, W)
            "image_sizes": np.array([size], np.int64), "orig_sizes": np.array([[h, w]], np.int64)}


def detect(session, contract: dict, path: str, score: float) -> dict:
    """One record of detections.json: the file, its size, and its detections scored at least ``score``."""
    rgb = load_rgb(path)
    if contract["kind"] == "with_preprocess":
        feed = {"image": np.asarray(rgb, np.uint8)}  # (H, W, 3)
    else:
        feed = network_inputs(rgb, contract)
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], feed)
    classes = contract["labels"]["classes"]  # label -> {"label", "name", "category_id"}
    return {"file": path, "width": rgb.width, "height": rgb.height, "detections": [
        {"box_xyxy": [round(float(v), 2) for v in box], "score": round(float(s), 4),
         "label": classes[label]["name"], "category_id": classes[label]["category_id"]}
        for box, s, label in zip(boxes, scores, labels) if s >= score]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX file from fcoslab export --with-preprocess (or --with-decode)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--score", type=float, default=0.3, help="score threshold (default 0.3)")
    parser.add_argument("--out", help="write the detections to this JSON file (default: print them)")
    args = parser.parse_args(argv)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    contract = read_contract(session)
    if contract["kind"] == "network":
        raise SystemExit("this file holds the network alone: decode its outputs as contract['decode'] says, or "
                         "export with --with-preprocess")
    records = [detect(session, contract, path, args.score) for path in args.images]
    text = json.dumps(records, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
