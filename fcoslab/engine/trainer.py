"""Training: SGD or AdamW with warm-up and step or cosine decay, AMP, checkpoints, resume, per-epoch COCO mAP history.

Runs in one process or under torchrun (DistributedDataParallel). Rank 0 alone writes ``config.json``,
``last.pt`` and ``history.json`` in the run folder.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from .. import distributed as dist
from ..runfolder import RunFolder, rng_state, set_rng_state
from ..config import Config, config_from_dict, validate
from ..data import (EpochBatchSampler, build_datasets, collate_fn, describe_repeats, ensure_shapes, make_loader,
                    train_repeat_factors)
from ..errors import FcoslabError
from ..evaluation.coco import Evaluation, coco_backend
from ..inference.predictor import choose_precision
from ..modeling.loss import FCOSCriterion
from ..modeling.finetune import apply_freeze
from .accumulate import accumulate_gradients, micro_batches
from .ema import ModelEMA
from .optim import lr_factor, make_optimizer
from .resume import check_change, resumed_config
from .setup import build_training_model, check_dataset_images, setup_device
from .stopping import StopRequests, TrainingStopped, agree, signal_name
from .tensorboard_log import TensorBoardLog
from .validation import early_stop_reason, epoch_evaluations, history_record, summary_line

log = logging.getLogger("fcoslab")

COUNTERS = {  # where a run is, saved in every checkpoint, with its value at the start of a run
    "epoch": 0, "step": 0, "batch_in_epoch": 0, "nonfinite_total": 0,
    "history": [],  # one record per evaluation
    "elapsed": 0.0,  # seconds of training and evaluation, summed over resumes
    "epoch_sums": {},  # loss parts summed over the current epoch's finite steps...
    "epoch_count": 0,  # ... and their number (saved mid-epoch, so a resumed epoch's means are exact)
    "epoch_losses": {},  # means of the last finished epoch, for its evaluation record
    "pending_eval": False}  # the last finished epoch is saved but not yet evaluated


class Trainer:
    """One training run in a run folder. ``run()`` trains to the configured number of epochs.

    ``Trainer(cfg, out)`` starts a run; ``Trainer.from_run(out)`` continues the one saved there.
    ``self.model`` is the bare model (what is trained); ``self.step_model`` is what a training step calls:
    DistributedDataParallel around it under torchrun, the model itself in one process. With ``train.ema``,
    ``self.ema.model`` is the average that is evaluated first and saved as the checkpoint's ``model``
    (``train_model`` then holds the trained weights).
    """

    def __init__(self, cfg: Config, out: str | Path | RunFolder, progress: bool = True,
                 on_step: Optional[Callable[[dict], None]] = None, on_eval: Optional[Callable[[dict], None]] = None,
                 checkpoint: Optional[dict] = None, reschedule: bool = False):
        validate(cfg)  # a config built in Python may not have been checked
        self.cfg, self.folder = cfg, out if isinstance(out, RunFolder) else RunFolder(out)
        self.progress, self.on_step, self.on_eval, self.reschedule = progress, on_step, on_eval, reschedule
        coco_backend(cfg.eval.backend)  # a missing faster-coco-eval is said now, not after an epoch
        self.device, self.rank, self.world = setup_device(cfg.runtime, cfg.train.batch_size)
        self.unsaved = dist.is_main() and not self.folder.has_checkpoint()  # cleaned up if it fails unsaved
        try:
            self._prepare(checkpoint)
        except BaseException:
            self.folder_cleanup()
            raise
        if dist.is_main():
            self.folder.start(cfg.to_dict(), self.history)

    def _prepare(self, checkpoint: Optional[dict]) -> None:
        """Data (checked), model, optimizer, precision and the run's counters, restored from ``checkpoint``."""
        cfg = self.cfg
        if dist.is_main():
            self.folder.check_writable()
            ensure_shapes(cfg.data, cfg.shapes)  # the generated set, where the config asks for it
        dist.barrier()
        torch.manual_seed(cfg.train.seed)
        self.train_set, self.val_set = build_datasets(cfg)
        check_dataset_images((self.train_set, self.val_set), cfg.data.check_images, self.rank, self.world)
        self.index = self.train_set.index
        self.model = build_training_model(cfg, list(self.index.names), self.device, self.world,
                                          pretrained=checkpoint is None)
        self.optimizer = make_optimizer(self.model, cfg.train)
        self.trainable = {name: p.requires_grad for name, p in self.model.named_parameters()}
        self.criterion = FCOSCriterion(cfg.assign, cfg.loss, all_reduce=dist.all_reduce_mean)
        self.ema = ModelEMA(self.model, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema else None
        self.precision = choose_precision(cfg.runtime.precision, self.device)
        if dist.is_main():
            log.info("precision: %s on %s (%s)", self.precision.name, self.device, self.precision.reason)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.dtype == torch.float16)
        self.repeat_factors = train_repeat_factors(self.train_set, cfg.data.repeat_threshold)
        if self.repeat_factors is not None and dist.is_main():
            log.info(describe_repeats(self.repeat_factors, cfg.data.repeat_threshold))
        self.batches_per_epoch = self._sampler(0, 1, epoch=0, start_batch=0).num_batches
        for name, start in COUNTERS.items():
            setattr(self, name, copy.copy(start))
        self.stop: Optional[StopRequests] = None  # while run() runs: the signals asked for
        self.stop_agreed, self.save_due, self.last_save = False, False, time.monotonic()  # see stopping.agree
        if checkpoint is not None:
            self._restore(checkpoint)
        self._wrap()
        self.tensorboard = (TensorBoardLog(self.folder.path, every=cfg.train.log_every)
                            if cfg.train.tensorboard and dist.is_main() else None)

    def _wrap(self) -> None:
        """``step_model``: DistributedDataParallel under torchrun (rebuilt when ``train.freeze`` changes which
        parameters train), the model itself in one process."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.step_model = DistributedDataParallel(self.model, device_ids=device_ids) if self.world > 1 else self.model

    @classmethod
    def from_run(cls, out: str | Path, overrides: Optional[dict] = None, **kwargs) -> "Trainer":
        """Continue the run saved in ``out`` (its config, with training ``overrides``)."""
        folder = RunFolder(out)
        if folder.path.is_dir() and not folder.has_checkpoint():
            raise FcoslabError(f"{out} holds no checkpoint ({RunFolder.CHECKPOINT}) to resume: the run stopped before it "
                               f"saved one; start it again with fcoslab train --out {out} --force")
        checkpoint = folder.load()
        if "optimizer" not in checkpoint:  # written by fcoslab import-torchvision
            raise FcoslabError(f"{out} holds imported weights, not a training run to continue: fine-tune from it with "
                               f"fcoslab train --config tv_fcos_r50 --out NEW_RUN --set model.init_from={out}")
        return cls(resumed_config(checkpoint, overrides), folder, checkpoint=checkpoint, **kwargs)

    def _state(self) -> dict:
        weights = {"model": self.model.state_dict()} if self.ema is None else \
            {"model": self.ema.state_dict(), "train_model": self.model.state_dict(), "ema_updates": self.ema.updates}
        return {**weights, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "config": self.cfg.to_dict(), "num_classes": self.model.num_classes, "cat_ids": list(self.index.cat_ids),
                "class_names": list(self.index.names), "rng": rng_state(),
                **{name: getattr(self, name) for name in COUNTERS}}

    def _restore(self, ckpt: dict) -> None:
        old = config_from_dict(ckpt["config"]).train
        if old != self.cfg.train:  # extending or changing the schedule: said, or refused where it rewrites the past
            change = check_change(old, self.cfg.train, self.batches_per_epoch, ckpt["step"], self.reschedule)
            if dist.is_main():
                log.info("%s", change)
        self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if self.ema is not None:  # a run that turns train.ema on when resumed starts its average here
            self.ema.load(ckpt["model"] if "train_model" in ckpt else self.model.state_dict(), ckpt.get("ema_updates", 0))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] and self.scaler.is_enabled():  # empty when the run was saved without float16
            self.scaler.load_state_dict(ckpt["scaler"])
        for name, start in COUNTERS.items():  # keys added later are missing from older checkpoints
            setattr(self, name, copy.copy(ckpt.get(name, start)))
        set_rng_state(ckpt["rng"])
        log.info("resumed %s at epoch %d, step %d%s", self.folder.path, self.epoch, self.step,
                 f" (evaluating epoch {self.epoch} first)" if self.pending_eval else "")

    def save(self) -> None:
        if dist.is_main():
            self.folder.save(self._state())
        dist.barrier()
        self.last_save, self.save_due = time.monotonic(), False
        self.unsaved = False  # the run folder now holds a checkpoint: never removed

    def folder_cleanup(self) -> None:
        """Remove what this run wrote when it fails before its first checkpoint (rank 0): no empty run folder."""
        if dist.is_main() and self.unsaved and not self.folder.has_checkpoint():
            self.folder.remove_unsaved()

    def _sampler(self, rank: int, world: int, epoch: int, start_batch: int) -> EpochBatchSampler:
        """The batches of ``epoch`` from ``start_batch`` on, process ``rank`` of ``world``."""
        t = self.cfg.train
        return EpochBatchSampler(len(self.train_set), t.batch_size, rank, world, t.seed, epoch=epoch,
                                 start_batch=start_batch, epoch_length=t.images_per_epoch,
                                 repeat_factors=self.repeat_factors)

    def _agree(self, finite: Tensor) -> float:
        """One all-reduce a step (the sync the loss check needs anyway) that also makes every rank agree on
        a stop request (any rank's signal) and on a time-based checkpoint (any rank's clock). Returns the
        mean of ``finite`` over ranks; sets ``stop_agreed`` and ``save_due``."""
        asked = self.stop is not None and self.stop.requested is not None
        mean_finite, self.stop_agreed, self.save_due = agree(finite, asked, self.last_save, self.cfg.train.checkpoint_minutes)
        return mean_finite

    def train_step(self, batch: dict) -> Optional[dict]:
        """One optimisation step. Returns the loss parts, or None when the loss was not finite."""
        lr = self.cfg.train.lr * lr_factor(self.step, self.cfg.train, self.batches_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = batch["images"].to(self.device, non_blocking=True)
        gt_boxes = batch["gt_boxes"].to(self.device, non_blocking=True)
        gt_labels = batch["gt_labels"].to(self.device, non_blocking=True)
        if self.cfg.model.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.cfg.train.accumulate > 1:
            losses = self._accumulated_step({**batch, "images": images, "gt_boxes": gt_boxes, "gt_labels": gt_labels})
            if losses is None:
                return None
        else:
            with self.precision.autocast(self.device):
                outputs = self.step_model(images)
            losses, _ = self.criterion(outputs, gt_boxes, gt_labels, batch["image_sizes"].to(self.device))
            if self._agree(torch.isfinite(losses["loss"]).float()) < 1.0:  # every rank skips together
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        names = list(losses)
        values = dist.all_reduce_mean(torch.stack([losses[k].detach().float() for k in names])).tolist()  # one sync
        return {**dict(zip(names, values)), "lr": lr}

    def _accumulated_step(self, batch: dict) -> Optional[dict]:
        """Gradients of ``batch`` from ``train.accumulate`` micro-batches (:mod:`fcoslab.engine.accumulate`);
        the loss parts, or None (gradients cleared) when a loss was not finite on any rank."""
        def forward(chunk):
            with self.precision.autocast(self.device):
                return self.step_model(chunk["images"])

        no_sync = self.step_model.no_sync if self.world > 1 else contextlib.nullcontext
        self.optimizer.zero_grad(set_to_none=True)
        losses, finite = accumulate_gradients(micro_batches(batch, self.cfg.train.accumulate), forward, self.criterion,
                                              lambda loss: self.scaler.scale(loss).backward(), no_sync, self.model)
        if self._agree(finite) < 1.0:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        return losses

    def train_epoch(self) -> None:
        """Train the rest of the current epoch (all of it, or what a resumed checkpoint left), summing the
        loss parts into ``epoch_sums``; returns early, between two steps, when a stop was agreed."""
        d, sampler = self.cfg.data, self._sampler(self.rank, self.world, self.epoch, self.batch_in_epoch)
        loader = make_loader(self.train_set, sampler, d, collate_fn(d, self.cfg.model.size_divisibility))
        consecutive_bad = 0
        bar = None
        if self.progress and dist.is_main():
            from tqdm.auto import tqdm

            bar = tqdm(total=self.batches_per_epoch, initial=self.batch_in_epoch, mininterval=1.0,
                       desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}", dynamic_ncols=True)
        for batch in loader:
            parts = self.train_step(batch)
            self.step += 1
            self.batch_in_epoch += 1
            if parts is None:
                self.nonfinite_total += 1
                consecutive_bad += 1
                log.warning("non-finite loss at step %d: step skipped (%d in a row, %d in all)",
                            self.step, consecutive_bad, self.nonfinite_total)
                if consecutive_bad >= self.cfg.train.max_nonfinite:
                    raise FcoslabError(f"training stopped: {consecutive_bad} non-finite losses in a row at step "
                                       f"{self.step} (lower train.lr or raise train.grad_clip); the last good "
                                       f"checkpoint {self.folder.checkpoint} is intact")
            else:
                consecutive_bad = 0
                self.epoch_count += 1
                for k, v in parts.items():
                    self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
                if bar is not None:
                    bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{parts['lr']:.4g}", refresh=False)
                if dist.is_main():
                    self._report_step(parts)
            if bar is not None:
                bar.update(1)
            if self.world == 1 and self.stop is not None and self.stop.requested:
                self.stop_agreed = True  # one process: a signal that came after the step's check stops here too
            if self.stop_agreed:
                break
            every = self.cfg.train.checkpoint_every
            if (self.save_due or every and self.step % every == 0) and self.batch_in_epoch < self.batches_per_epoch:
                self.save()
        if bar is not None:
            bar.close()

    def _report_step(self, parts: dict) -> None:
        record = {"epoch": self.epoch, "step": self.step, **parts}
        if self.on_step is not None:
            self.on_step(record)
        if self.tensorboard is not None:
            self.tensorboard.step(record)

    def _evaluations(self) -> tuple[Optional[Evaluation], dict]:
        """:func:`fcoslab.engine.validation.epoch_evaluations` of the saved weights (and the raw ones)."""
        saved, raw = (self.model, None) if self.ema is None else (self.ema.model, self.model)
        return epoch_evaluations(saved, raw, self.val_set, self.cfg, self.criterion, self.device, self.precision,
                                 self.rank, self.world)

    def run(self) -> list[dict]:
        """Train to ``train.epochs``. Each epoch's end is saved before it is evaluated, so a failed evaluation
        loses no training (a resumed run evaluates it first). SIGINT/SIGTERM save at the next step boundary and
        raise :class:`fcoslab.engine.stopping.TrainingStopped`."""
        cfg = self.cfg
        self.model.train()
        try:
            with StopRequests() as self.stop:
                while True:
                    if self.pending_eval:
                        self._evaluate_epoch()
                    if self.epoch >= cfg.train.epochs or self._early_stop():
                        break
                    started = time.time()
                    if apply_freeze(self.model, cfg.train, self.epoch, self.trainable) and self.world > 1:
                        self._wrap()
                    self.train_epoch()
                    self.elapsed += time.time() - started
                    if self.stop_agreed:
                        self._stop_saved()
                    self._end_epoch()
        except BaseException:
            self.folder_cleanup()
            raise
        finally:
            self.stop = None
        if self.tensorboard is not None:
            self.tensorboard.close()
        return self.history

    def _end_epoch(self) -> None:
        """Close the epoch's loss means and save, marking the evaluation this epoch owes as pending."""
        cfg = self.cfg
        self.epoch_losses = {k: v / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()}
        self.epoch += 1
        self.batch_in_epoch, self.epoch_sums, self.epoch_count = 0, {}, 0
        self.pending_eval = self.epoch % cfg.train.eval_every == 0 or self.epoch == cfg.train.epochs
        self.save()

    def _evaluate_epoch(self) -> None:
        """The evaluation owed by the last saved epoch: recorded in the history, saved, kept as best.pt."""
        started = time.time()

        def stop_now(signum: int):
            raise TrainingStopped(f"{signal_name(signum)}: evaluation of epoch {self.epoch} interrupted; "
                                  f"{self.folder.checkpoint} holds that epoch's weights: "
                                  f"fcoslab train --resume {self.folder.path} evaluates it and trains on", signum)

        with self.stop.immediately(stop_now) if self.stop is not None else contextlib.nullcontext():
            evaluation, extra = self._evaluations()
        self.elapsed += time.time() - started
        best = evaluation is not None and self._record(self.epoch_losses, evaluation, extra)
        self.pending_eval = False
        self.save()
        if best and dist.is_main():
            self.folder.keep_best()

    def _early_stop(self) -> bool:
        """``train.early_stop``: whether the history says to stop (said once, and recorded in its last record)."""
        if not self.cfg.train.early_stop:
            return False
        reason = early_stop_reason(self.history, self.cfg.eval.best_metric, self.cfg.train.early_stop)  # rank 0's
        if dist.all_reduce_mean(torch.tensor(float(reason is not None), device=self.device)).item() == 0:
            return False
        if dist.is_main():
            log.info("%s; the best weights are in %s", reason, self.folder.best)
            self.history[-1]["stopped"] = reason  # recorded in history.json and the checkpoint
        self.save()
        return True

    def _stop_saved(self) -> None:
        """Save at this step boundary and raise TrainingStopped, saying what was kept."""
        signum = self.stop.requested or signal.SIGTERM  # another rank's signal: say SIGTERM (torchrun's)
        self.save()
        raise TrainingStopped(f"{signal_name(signum)}: stopped after step {self.step} (epoch {self.epoch + 1}, batch "
                              f"{self.batch_in_epoch} of {self.batches_per_epoch}) and saved it in "
                              f"{self.folder.checkpoint}; continue with: fcoslab train --resume {self.folder.path}",
                              signum)

    def _record(self, losses: dict, evaluation: Evaluation, extra: dict) -> bool:
        """Append an evaluation to the history (rank 0); True if it is the best so far by ``eval.best_metric``."""
        metric = self.cfg.eval.best_metric
        previous = [h[metric] for h in self.history if h.get(metric) is not None]
        record = history_record(self.epoch, self.step, losses, evaluation, extra, self.elapsed)
        self.history.append(record)
        log.info("epoch %d: %s", self.epoch, summary_line(record, self.cfg.eval.metrics))
        if self.on_eval is not None:
            self.on_eval(record)
        if self.tensorboard is not None:
            self.tensorboard.evaluation(record, evaluation, self.val_set)
        value = record.get(metric)
        return value is not None and (not previous or value > max(previous) or not self.folder.best.exists())


def train(cfg: Optional[Config], out: str | Path, resume: bool = False, resume_overrides: Optional[dict] = None,
          **kwargs) -> list[dict]:
    """Train ``cfg`` into run folder ``out``, or continue the run there with ``resume=True`` (``cfg`` is
    then None: the saved config is used, with ``resume_overrides``; ``reschedule=True`` accepts overrides
    that rewrite the schedule already trained, :mod:`fcoslab.engine.resume`); returns the history."""
    if resume:
        if cfg is not None:
            raise FcoslabError("train(resume=True) continues the run with its saved config; pass cfg=None")
        return Trainer.from_run(out, resume_overrides, **kwargs).run()
    if cfg is None:
        raise FcoslabError("train: give a config, or resume=True with a run folder")
    return Trainer(cfg, out, **kwargs).run()
