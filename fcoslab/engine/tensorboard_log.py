"""Optional TensorBoard logging of a training run (``train.tensorboard=true``), into ``RUN/tensorboard``.

``history.json`` stays the record of a run; this mirrors it for people who watch runs in TensorBoard:
training losses and learning rate (every ``train.log_every`` steps), every metric of every evaluation
(per-class AP too), COCO's precision-recall curves at IoU 0.5 for each class, and a few validation images
with their detections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..config import TrainConfig
from ..draw import draw_detections
from ..errors import FcoslabError
from ..evaluation.coco import precision_recall_curves
from ..boxes import xywh_to_xyxy

IMAGES = 4  # validation images drawn at each evaluation
SCORE = 0.3  # detections drawn from this score


class TensorBoardLog:
    """A ``SummaryWriter`` fed by the trainer's steps and evaluations (rank 0 only).

    ``every`` is ``train.log_every``: the training loss, its parts and the learning rate are written at
    step 1, every ``every``-th step, and at the last step before each evaluation and before :meth:`close`,
    so that even a run shorter than ``every`` steps has its points.
    """

    def __init__(self, run_dir: Path, every: int = TrainConfig.log_every):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FcoslabError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
        if every < 1:
            raise FcoslabError(f"config key 'train.log_every' must be at least 1, got {every}")
        self.writer, self.every = SummaryWriter(str(Path(run_dir) / "tensorboard")), every
        self._unwritten: Optional[dict] = None  # the latest step's record, when it was not written

    def step(self, record: dict) -> None:
        """One training step's record (``step``, ``loss``, loss parts, ``lr``)."""
        if record["step"] == 1 or record["step"] % self.every == 0:
            self._write_step(record)
        else:
            self._unwritten = record

    def _write_step(self, record: dict) -> None:
        for key, value in record.items():
            if key not in ("epoch", "step"):
                self.writer.add_scalar(f"train/{key}", value, record["step"])
        self._unwritten = None

    def _write_unwritten(self) -> None:
        if self._unwritten is not None:
            self._write_step(self._unwritten)

    def evaluation(self, record: dict, evaluation, dataset) -> None:
        """An evaluation: its history ``record``, the :class:`fcoslab.evaluation.coco.Evaluation` and the validation set."""
        self._write_unwritten()
        step = record["step"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.writer.add_scalar(f"val/{key}", value, step)
        for name, value in record.get("per_class_AP", {}).items():
            if value is not None:
                self.writer.add_scalar(f"val_per_class_AP/{name}", value, step)
        if evaluation.evaluator is not None:
            self._pr_curves(evaluation, step)
        self._images(evaluation, dataset, step)
        self.writer.flush()

    def _pr_curves(self, evaluation, step: int) -> None:
        recall, precision = precision_recall_curves(evaluation.evaluator, iou=0.5)
        zeros = np.zeros_like(recall)
        for k, name in enumerate(evaluation.class_names):
            p = precision[:, k]
            if (p > -1).any():
                self.writer.add_pr_curve_raw(f"pr_iou50/{name}", zeros, zeros, zeros, zeros, np.clip(p, 0, 1)[::-1],
                                             recall[::-1], step, num_thresholds=len(recall))

    def _images(self, evaluation, dataset, step: int) -> None:
        to_label = dataset.index.cat_id_to_label()
        for i in range(min(IMAGES, len(dataset))):
            image_id = dataset.images[i]["id"]
            mine = [r for r in evaluation.results if r["image_id"] == image_id and r["score"] >= SCORE]
            det = {"boxes": xywh_to_xyxy([r["bbox"] for r in mine]), "scores": np.array([r["score"] for r in mine]),
                   "labels": np.array([to_label.get(r["category_id"], 0) for r in mine], dtype=np.int64)}
            picture = draw_detections(dataset.load_image(i), det, dataset.index.names)
            self.writer.add_image(f"val_images/{i}", np.asarray(picture), step, dataformats="HWC")

    def close(self) -> None:
        self._write_unwritten()
        self.writer.close()
