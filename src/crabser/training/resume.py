"""Exact resuming: a run interrupted at any point and resumed with ``--resume`` ends with the same
weights and metrics as one that never stopped (tests/test_resume.py kills runs at several points).

What makes a resumed epoch differ from the uninterrupted one, and what we do about each:

- **Where the checkpoint is taken.** Lightning's ``ModelCheckpoint(save_last=True)`` writes
  ``last.ckpt`` only when the best checkpoint is written too (Lightning 2.6), and any
  ModelCheckpoint saves at the end of validation, before the epoch's training losses are logged and
  the LR schedule steps. :class:`EpochCheckpoint` writes ``last.ckpt`` instead when the next epoch
  starts (the previous one then has every hook, log row and scheduler step behind it) and when
  training ends, atomically (temporary file, then rename: a kill while writing leaves the previous
  one). A kill mid-epoch resumes at the start of that epoch: batches of an unfinished epoch are
  trained again from the same state, which is what makes the result exact.
- **Batch order.** Our batch samplers draw each epoch from ``seed + epoch`` and Lightning sets their
  epoch (:mod:`crabser.data.sampling`).
- **Randomness in training** (dropout, MixUp): Lightning does not save the random generators'
  states, so :class:`EpochSeed` seeds torch, numpy and ``random`` before every epoch's first step
  from ``(train.seed, epoch, rank)``. A resumed epoch draws what the uninterrupted one drew. The
  random crops and waveform mixup of fine-tuning happen in the loader, before that step: they
  draw from ``(train.seed, epoch, item)`` (:class:`crabser.training.finetune.RawDataset`).
- **An early stop.** Lightning does not save ``trainer.should_stop``: a fit stopped by
  ``train.patience``, then resumed (after a crash in evaluation or refit, say), would train on.
  :class:`EpochCheckpoint` records it in ``last.ckpt``, and :func:`crabser.training.fit.train`
  trains such a fit no further.
- **The training log.** ``CSVLogger`` deletes ``logs/metrics.csv`` when a run starts. On resume,
  :class:`ResumedCSVLogger` keeps the rows of the epochs in the checkpoint (those after it were
  trained again) and appends; rows are written as they are logged, so what the checkpoint holds is
  on disk too.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from crabser.training.checkpoint_io import STOPPED


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one rank (distinct ranks draw distinct dropout masks)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class EpochSeed(L.Callback):
    """Seed torch, numpy and ``random`` before the first training step of every epoch (see the
    module docstring). Not at the epoch's start: creating the loader's iterator draws from torch's
    generator, and a resumed run creates it before the epoch starts, a running one after."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        if batch_idx:
            return
        value = epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


def between_epochs(loops: dict[str, Any]) -> None:
    """Make a checkpoint's loop state read "``completed`` epochs done, the next not begun".

    Saved when an epoch starts, Lightning's state has that epoch "ready" and the batch counters of
    the one before: restored as is, Lightning takes the new epoch for done and skips it. Here the
    epoch counters are set back to the completed epochs and this epoch's batch counters to zero, the
    state between two epochs, from which Lightning starts the next epoch afresh (pinned by
    tests/test_resume.py against the Lightning version installed)."""
    fit = loops["fit_loop"]
    for counts in fit["epoch_progress"].values():
        counts["ready"] = counts["started"] = counts["processed"] = counts["completed"]
    batches = fit["epoch_loop.batch_progress"]
    batches["current"] = dict.fromkeys(batches["current"], 0)
    batches["is_last_batch"] = False


class EpochCheckpoint(L.Callback):
    """Write ``path`` (``last.ckpt``) when an epoch starts and when training ends (see the module
    docstring); ``path`` always holds whole epochs, and whether the fit was stopped early."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._saving = False

    def save(self, trainer: L.Trainer) -> None:
        """Save the trainer's state to ``path`` through a temporary file (every rank calls this)."""
        partial = self.path.with_name(self.path.name + ".partial")
        self._saving = True
        try:
            trainer.save_checkpoint(partial)  # rank 0 writes; every rank waits for it
        finally:
            self._saving = False
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier("EpochCheckpoint")  # no rank reads last.ckpt before it is in place

    def on_save_checkpoint(
        self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._saving:  # only ours: the best checkpoint keeps Lightning's state
            between_epochs(checkpoint["loops"])
            checkpoint[STOPPED] = trainer.should_stop

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.save(trainer)


class _KeepingWriter(ExperimentWriter):
    """A CSV writer that keeps the rows of epochs before ``keep_before`` and appends to them."""

    def __init__(self, log_dir: str, keep_before: int) -> None:
        self.keep_before = keep_before
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # called by __init__, where CSVLogger deletes the file
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            keys, rows = (
                list(reader.fieldnames or []),
                [row for row in reader if int(row["epoch"]) < self.keep_before],
            )
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, path)
        self.metrics_keys = keys


class ResumedCSVLogger(CSVLogger):
    """``CSVLogger`` that, resuming at epoch ``keep_before``, keeps the earlier epochs' rows of
    ``metrics.csv`` (None: a fresh run, the file starts empty). Rows are written as they are
    logged."""

    def __init__(self, save_dir: str, name: str, keep_before: int | None = None) -> None:
        super().__init__(save_dir, name=name, version="", flush_logs_every_n_steps=1)
        self.keep_before = keep_before

    @property
    @rank_zero_experiment  # as CSVLogger's: other ranks get a stand-in and leave the file alone
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.keep_before is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.keep_before)
        writer: ExperimentWriter = super().experiment
        return writer
