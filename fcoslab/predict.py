"""Prediction on image files with a trained run, and drawing of detections (:class:`Predictor` lives in
:mod:`fcoslab.inference`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image


from .files import write_json
from .datasets import read_image
from .datasets.coco import to_rgb
from .decode import one_class_per_object
from .draw import draw_detections
from .errors import FcoslabError
from .inference import Predictor
from .tiling import predict_tiled

__all__ = ["Predictor", "images_to_show", "list_images", "predict_files"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files among the inputs (folders are searched one level deep, sorted)."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise FcoslabError(f"input {item} does not exist")
    if not files:
        raise FcoslabError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def predict_files(predictor: Predictor, inputs: Sequence[str | Path], out_dir: str | Path,
                  score_thresh: float = 0.3, one_class: bool = False, tile: int = 0, overlap: float = 0.2) -> list[dict]:
    """Predict on image files (EXIF orientation applied), write ``OUT/NAME.png`` with the boxes drawn and
    ``OUT/detections.json``. ``one_class`` keeps only the best of overlapping boxes of different classes
    (:func:`fcoslab.decode.one_class_per_object`); ``tile`` > 0 predicts from overlapping tiles of that
    side and the whole image (:func:`fcoslab.tiling.predict_tiled`). Returns the records written to the json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in list_images(inputs):
        image = read_image(path, exif_transpose=True)
        det = predict_tiled(predictor, image, tile, overlap) if tile else predictor([image])[0]
        if one_class:
            det = one_class_per_object(det, predictor.cfg.decode.nms_thresh)
        keep = det["scores"] >= score_thresh
        det = {k: v[keep] for k, v in det.items()}
        draw_detections(image, det, predictor.class_names).save(out / f"{path.stem}.png")
        records.append({"file": str(path), "width": image.width, "height": image.height,
                        "detections": [{"box_xyxy": [round(v, 2) for v in b], "score": round(s, 4),
                                        "label": predictor.class_names[l], "category_id": predictor.cat_ids[l]}
                                       for b, s, l in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                          det["labels"].tolist())]})
    write_json(out / "detections.json", records)
    return records


def images_to_show(predictor: Predictor, my_images: Sequence[str | Path] = ()):
    """The run's validation set when it is on this machine, else ``my_images`` as a dataset without ground
    truth (an imported torchvision model has COCO's paths, which another machine may not have)."""
    import os

    from .datasets import CocoDetection

    data = predictor.cfg.data
    if Path(data.val_ann).is_file() and Path(data.val_images).is_dir():
        return CocoDetection(data.val_ann, data.val_images)
    if not my_images:
        raise FcoslabError(f"the run's validation set ({data.val_ann}) is not on this machine: give your own "
                           "images (MY_IMAGES in notebook 05)")
    files = [f.resolve() for f in list_images(my_images)]
    root = Path(os.path.commonpath([f.parent for f in files]))
    images = []
    for i, f in enumerate(files, 1):
        with Image.open(f) as im:  # the header alone
            width, height = im.size
        images.append({"id": i, "file_name": str(f.relative_to(root)), "width": width, "height": height})
    categories = [{"id": c, "name": n} for c, n in zip(predictor.cat_ids, predictor.class_names)]
    return CocoDetection(root / "images.json", root, data={"images": images, "annotations": [], "categories": categories})
