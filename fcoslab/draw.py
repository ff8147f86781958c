"""Drawing boxes: one palette for every picture (matplotlib figures, PIL images, the viewer)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

# one colour per class label (cycled), 0-255 RGB
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
# the viewer's verdicts at IoU 0.5
TP_COLOUR, FP_COLOUR, MISSED_COLOUR = (40, 200, 40), (230, 30, 30), (255, 150, 0)


def class_colour(label: int) -> tuple[int, int, int]:
    return PALETTE[label % len(PALETTE)]


def draw_boxes(ax, boxes, labels, names: Sequence[str], scores=None, dashed: bool = False) -> None:
    """Boxes (xyxy pixels) on a matplotlib axis, coloured by class, with the class name (and score)."""
    import matplotlib.pyplot as plt

    for i, (box, label) in enumerate(zip(np.asarray(boxes).tolist(), np.asarray(labels).tolist())):
        x1, y1, x2, y2 = box
        colour = tuple(c / 255 for c in class_colour(label))
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, color=colour,
                                   ls="--" if dashed else "-"))
        text = names[label] + (f" {float(scores[i]):.2f}" if scores is not None else "")
        ax.text(x1, y1, text, fontsize=7, color="black", va="bottom",
                bbox=dict(facecolor=colour, alpha=0.8, pad=0.5, lw=0))


def draw_labelled_box(draw: ImageDraw.ImageDraw, box: Sequence[float], colour, text: str = "", width: int = 2,
                      filled_label: bool = True) -> None:
    """One box (xyxy pixels of the canvas) on a PIL canvas, with ``text`` at its top left: black on a
    band of the box's colour (``filled_label``), or in the box's colour."""
    draw.rectangle(list(box), outline=colour, width=width)
    if not text:
        return
    x, y = box[0], max(0, box[1] - 11)
    if filled_label:
        draw.rectangle([x, y, x + draw.textlength(text) + 2, y + 10], fill=colour)
        draw.text((x + 1, y - 1), text, fill=(0, 0, 0))
    else:
        draw.text((box[0] + 2, box[1] + 1), text, fill=colour)


def draw_detections(image: Image.Image, det: dict, class_names: Sequence[str], score_thresh: float = 0.0,
                    gt: Optional[dict] = None, width: int = 2) -> Image.Image:
    """A copy of ``image`` with detections (coloured by class, with label and score) and optional
    ground truth (``{"boxes", "labels"}``, drawn white and thin) drawn on it."""
    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    draw = ImageDraw.Draw(out)
    if gt is not None:
        for box in gt["boxes"].tolist():
            draw.rectangle(box, outline=(255, 255, 255), width=1)
    for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        if score >= score_thresh:
            draw_labelled_box(draw, box, class_colour(label), f"{class_names[label]} {score:.2f}", width)
    return out
