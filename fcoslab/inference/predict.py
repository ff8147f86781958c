"""Prediction on image files with a trained run, and drawing of detections (:class:`Predictor` lives in
:mod:`fcoslab.inference.predictor`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..files import write_json
from ..data import read_image
from ..data.formats.coco import IMAGE_SUFFIXES
from ..modeling.decode import one_class_per_object
from ..draw import draw_detections
from ..errors import FcoslabError
from .predictor import Predictor
from .tiling import predict_tiled

__all__ = ["Predictor", "UnreadableImages", "images_to_show", "list_images", "predict_files"]
log = logging.getLogger("fcoslab")

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


class UnreadableImages(FcoslabError):
    """Some input images could not be read; the others were predicted and written. ``failed``: ``(file,
    reason)`` pairs, ``records``: what ``detections.json`` holds."""

    def __init__(self, failed: list[tuple[Path, str]], records: list[dict], out: Path):
        self.failed, self.records = failed, records
        super().__init__(f"{len(failed)} of {len(failed) + len(records)} images could not be read and were skipped "
                         f"(first: {failed[0][0]}: {failed[0][1]}); the detections of the other {len(records)} are in "
                         f"{out / 'detections.json'}")


def predict_files(predictor: Predictor, inputs: Sequence[str | Path], out_dir: str | Path,
                  score_thresh: float = 0.3, one_class: bool = False, tile: int = 0, overlap: float = 0.2) -> list[dict]:
    """Predict on image files (EXIF orientation applied), write ``OUT/NAME.png`` with the boxes drawn and
    ``OUT/detections.json``. ``one_class`` keeps only the best of overlapping boxes of different classes
    (:func:`fcoslab.modeling.decode.one_class_per_object`); ``tile`` > 0 predicts from overlapping tiles of that
    side and the whole image (:func:`fcoslab.inference.tiling.predict_tiled`). Returns the records written to the json.

    An image that cannot be read is skipped with a one-line warning; the others are predicted and written,
    then :class:`UnreadableImages` is raised (the command line's exit status is then 2)."""
    if not 0 <= score_thresh <= 1:
        raise FcoslabError(f"score threshold (--score) must be in [0, 1], got {score_thresh}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, failed = [], []
    for path in list_images(inputs):
        try:
            image = read_image(path, exif_transpose=True)
        except FcoslabError as e:
            reason = str(e).split(": ", 1)[-1] if str(e).startswith("cannot read image") else str(e)
            log.warning("skipped %s: %s", path, reason)
            failed.append((path, reason))
            continue
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
    if failed:
        raise UnreadableImages(failed, records, out)
    return records


def images_to_show(predictor: Predictor, my_images: Sequence[str | Path] = ()):
    """The images to look at with a run: ``my_images`` (files, or folders searched one level deep) when
    given, as a dataset without ground truth; else the run's validation set, which must be on this machine
    (an imported torchvision model has COCO's paths, which another machine may not have)."""
    from ..data import CocoDetection
    from ..data.formats.convert import unlabelled_images

    if my_images:
        categories = [{"id": c, "name": n} for c, n in zip(predictor.cat_ids, predictor.class_names)]
        coco, root = unlabelled_images(list_images(my_images), categories)
        return CocoDetection(root / "images.json", root, data=coco)
    data = predictor.cfg.data
    if not (Path(data.val_ann).is_file() and Path(data.val_images).is_dir()):
        raise FcoslabError(f"the run's validation set ({data.val_ann}) is not on this machine: give your own "
                           "images (MY_IMAGES in notebook 05)")
    return CocoDetection(data.val_ann, data.val_images)
