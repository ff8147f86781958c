"""An ipywidgets viewer of predictions: true positives, false positives and missed objects at IoU 0.5.

Predictions are computed once per image and cached; a redraw is PIL drawing + PNG encoding, which
takes a few milliseconds for a 640 px image. :meth:`PredictionViewer.render` is a plain function of
the widget state, so it is tested without a browser or kernel.
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw

from ..boxes import box_iou
from ..data import CocoDetection, read_image
from ..modeling.decode import one_class_per_object
from ..draw import FP_COLOUR, MISSED_COLOUR, TP_COLOUR, draw_labelled_box
from ..inference.predictor import Predictor



def match_detections(det: dict, gt: dict, iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy COCO-style matching within each class, detections in decreasing score order.

    Args:
        det: ``boxes`` float (N, 4) xyxy, ``scores`` (N,), ``labels`` int64 (N,).
        gt: ``boxes`` float (M, 4) xyxy, ``labels`` int64 (M,).
    Returns:
        is_tp bool (N,) and gt_found bool (M,).
    """
    n, m = len(det["scores"]), len(gt["labels"])
    is_tp, found = torch.zeros(n, dtype=torch.bool), torch.zeros(m, dtype=torch.bool)
    if n == 0 or m == 0:
        return is_tp, found
    iou = box_iou(det["boxes"].float(), gt["boxes"].float())  # (N, M)
    iou[det["labels"][:, None] != gt["labels"][None, :]] = -1
    for i in torch.argsort(det["scores"], descending=True, stable=True).tolist():
        candidates = torch.where(found, torch.full_like(iou[i], -1), iou[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            is_tp[i], found[j] = True, True
    return is_tp, found


class PredictionViewer:
    """Browse a model's predictions on a COCO-format dataset (and on uploaded images).

    ``PredictionViewer(predictor, dataset).widget`` is the ipywidgets layout to display.
    """

    def __init__(self, predictor: Predictor, dataset: Optional[CocoDetection] = None, score: float = 0.3,
                 max_width: int = 640):
        import ipywidgets as W

        self.predictor, self.dataset, self.max_width = predictor, dataset, max_width
        self.names = predictor.class_names
        self._cache: dict = {}
        self._uploads: list[tuple[str, Image.Image]] = []
        self._n_dataset = len(dataset) if dataset is not None else 0
        self.index = W.IntSlider(value=0, min=0, max=max(self._n_dataset - 1, 0), description="image")
        self.prev_button, self.next_button = W.Button(description="◀ prev"), W.Button(description="next ▶")
        self.score = W.FloatSlider(value=score, min=0.0, max=1.0, step=0.01, description="score ≥")
        self.classes = W.SelectMultiple(options=list(self.names), value=tuple(self.names), description="classes", rows=4)
        wide = dict(indent=False, layout=W.Layout(width="auto"))
        self.show_gt = W.Checkbox(value=True, description="ground truth (TP green, FP red, missed orange)", **wide)
        self.one_class = W.Checkbox(value=True, description="one class per object (class-agnostic NMS)", **wide)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="your image")
        self.image = W.Image(format="png")
        self.table = W.HTML()
        self.prev_button.on_click(lambda _: self._step(-1))
        self.next_button.on_click(lambda _: self._step(+1))
        for w in (self.index, self.score, self.classes, self.show_gt, self.one_class):
            w.observe(lambda _change: self.update(), names="value")
        self.upload.observe(self._on_upload, names="value")
        controls = W.VBox([W.HBox([self.prev_button, self.next_button, self.index]), self.score, self.classes,
                           self.show_gt, self.one_class, self.upload])
        self.widget = W.HBox([W.VBox([self.image]), W.VBox([controls, self.table])])
        self.update()

    # ------------------------------------------------------------------ data
    def _name(self, i: int) -> str:
        n = self._n_dataset
        return self._uploads[i - n][0] if i >= n else self.dataset.images[i]["file_name"]

    def _source(self, i: int) -> tuple[Image.Image, Optional[dict]]:
        n = self._n_dataset
        if i >= n:
            return self._uploads[i - n][1], None
        boxes, labels = self.dataset.targets[self.dataset.images[i]["id"]]
        gt = {"boxes": torch.as_tensor(boxes), "labels": torch.as_tensor(labels)}
        return self.dataset.load_image(i), gt

    def prediction(self, i: int) -> dict:
        """Detections of image ``i`` at score >= 0 (computed once, then cached)."""
        if i not in self._cache:
            image, _ = self._source(i)
            self._cache[i] = self.predictor([image])[0]
        return self._cache[i]

    # ------------------------------------------------------------------ drawing
    def render(self, i: int, score: float, classes: Sequence[str], show_gt: bool,
               one_class: bool = False) -> tuple[bytes, list[dict]]:
        """PNG bytes of image ``i`` with what the controls select, and the rows of the detection table.
        ``one_class`` keeps only the best of overlapping boxes of different classes."""
        image, gt = self._source(i)
        det = self.prediction(i)
        if one_class:
            det = one_class_per_object(det, self.predictor.cfg.decode.nms_thresh)
        wanted = torch.tensor([self.names[int(l)] in classes for l in det["labels"]], dtype=torch.bool)
        keep = (det["scores"] >= score) & wanted
        shown = {k: v[keep] for k, v in det.items()}
        is_tp = found = None
        if gt is not None and show_gt:
            gt_wanted = torch.tensor([self.names[int(l)] in classes for l in gt["labels"]], dtype=torch.bool)
            gt = {k: v[gt_wanted] for k, v in gt.items()}
            is_tp, found = match_detections(shown, gt)
        scale = min(1.0, self.max_width / image.width) if image.width > self.max_width else max(1.0, 320 / image.width)
        canvas = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        draw = ImageDraw.Draw(canvas)
        if found is not None:
            for box in gt["boxes"][~found].tolist():
                draw_labelled_box(draw, [v * scale for v in box], MISSED_COLOUR)
        rows = []
        for k, (box, s, l) in enumerate(zip(shown["boxes"].tolist(), shown["scores"].tolist(), shown["labels"].tolist())):
            colour = (TP_COLOUR if is_tp[k] else FP_COLOUR) if is_tp is not None else (0, 160, 255)
            draw_labelled_box(draw, [v * scale for v in box], colour, f"{self.names[l]} {s:.2f}", filled_label=False)
            rows.append({"class": self.names[l], "score": round(s, 3), "box": [round(v, 1) for v in box],
                         "result": ("TP" if is_tp[k] else "FP") if is_tp is not None else ""})
        if found is not None:
            rows += [{"class": self.names[int(l)], "score": None, "box": [round(v, 1) for v in b], "result": "missed"}
                     for b, l in zip(gt["boxes"][~found].tolist(), gt["labels"][~found].tolist())]
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), rows

    def update(self) -> None:
        if self.index.value >= self._n_dataset + len(self._uploads):
            self.table.value = "no images yet: upload one"
            return
        png, rows = self.render(self.index.value, self.score.value, self.classes.value, self.show_gt.value,
                                self.one_class.value)
        self.image.value = png
        name = self._name(self.index.value)
        cells = "".join(f"<tr><td>{r['class']}</td><td>{'' if r['score'] is None else r['score']}</td>"
                        f"<td>{r['box']}</td><td>{r['result']}</td></tr>" for r in rows)
        self.table.value = (f"<b>{name}</b>: {sum(r['result'] != 'missed' for r in rows)} detections shown"
                            f"<table><tr><th>class</th><th>score</th><th>box (xyxy px)</th><th>result</th></tr>{cells}</table>")

    def _step(self, delta: int) -> None:
        self.index.value = min(max(self.index.value + delta, self.index.min), self.index.max)

    def add_image(self, image: Image.Image, name: str = "upload") -> int:
        """Add a user's image (predicted on, without ground truth); returns its index and shows it."""
        self._uploads.append((name, image.convert("RGB")))
        n = self._n_dataset + len(self._uploads)
        self.index.max = n - 1
        self.index.value = n - 1
        return n - 1

    def _on_upload(self, change) -> None:
        value = change["new"]
        files = list(value.values()) if isinstance(value, dict) else list(value)  # ipywidgets 7 / 8
        for f in files:
            content = f["content"] if isinstance(f, dict) else f.content
            name = f.get("name", "upload") if isinstance(f, dict) else getattr(f, "name", "upload")
            self.add_image(read_image(io.BytesIO(bytes(content)), exif_transpose=True), name)
