"""Tiny training runs on fake cached text features: seconds per run, for resume and multi-process
tests.

The features are written to a real :class:`~crabser.features.store.FeatureStore` under the content
hash of each transcript, so :func:`crabser.training.fit.train` reads them exactly as it reads
extracted ones; only the encoder is a stand-in (training needs its ``cache_id``, nothing else).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd

from crabser.config import RunConfig
from crabser.data.manifest import Manifest
from crabser.features.store import FeatureStore
from crabser.io import text_sha256

LABELS = ["anger", "joy", "neutral", "sadness"]
CACHE_ID = "fake-text-8"
DIM = 8


@dataclass
class StubEncoder:
    """What training needs of an encoder: the id its features are cached under."""

    cache_id: str = CACHE_ID


def _split_of(index: int) -> str:
    return ("val", "test", "train", "train", "train")[index % 5]


def tiny_manifest(root: Path, utterances: int = 60, seed: int = 0) -> Manifest:
    """``utterances`` rows (train 3/5, val and test 1/5 each) whose text features, of varied
    lengths, lean towards their class; the features are written to ``root/cache``."""
    rng = np.random.default_rng(seed)
    store = FeatureStore(root / "cache")
    centres = rng.normal(size=(len(LABELS), DIM))
    rows = []
    for i in range(utterances):
        label = i % len(LABELS)
        text = f"utterance {i}"
        frames = int(rng.integers(3, 12))
        store.put(
            CACHE_ID,
            text_sha256(text),
            (centres[label] + rng.normal(size=(frames, DIM))).astype(np.float32),
        )
        rows.append(
            {
                "id": f"u{i:03d}",
                "audio": f"u{i:03d}.wav",
                "label": LABELS[label],
                "text": text,
                "speaker": f"s{i % 6}",
                "split": _split_of(i // len(LABELS)),
            }
        )
    return Manifest(pd.DataFrame(rows))


def tiny_config(root: Path, name: str = "tiny", model: dict | None = None, **train) -> RunConfig:
    """A text-only Crab small enough to train an epoch in well under a second; ``model`` and
    ``train`` override ``model.*`` and ``train.*`` settings."""
    settings = {
        "epochs": 4,
        "batch_size": 8,
        "accumulate": 1,
        "lr_head": 3e-3,
        "progress": False,
        "threads": 1,
        "accelerator": "cpu",
        "devices": 1,
        **train,
    }
    return RunConfig.model_validate(
        {
            "name": name,
            "output_dir": str(root / "runs"),
            "cache_dir": str(root / "cache"),
            "data": {"protocol": "given", "labels": LABELS},
            "model": {
                "modalities": ["text"],
                "hidden": 16,
                "leg_dim": 8,
                "leg_hidden": 8,
                "leg_hidden_unimodal": 8,
                "dropout": 0.3,
                "attention_dropout": 0.3,
                **(model or {}),
            },
            "train": settings,
        }
    )


def encoders() -> dict[str, StubEncoder]:
    """The encoders of a tiny run (text only)."""
    return {"text": StubEncoder()}


class Interrupt(Exception):
    """Stands for a crash at a chosen point of training."""


class KillAt(L.Callback):
    """Stop training at ``hook`` of ``epoch`` (batch ``batch``): by raising, or by SIGKILL
    (``hard``)."""

    def __init__(self, hook: str, epoch: int, batch: int = 0, hard: bool = False) -> None:
        self.hook, self.epoch, self.batch, self.hard = hook, epoch, batch, hard

    def _maybe_stop(self, trainer: L.Trainer, hook: str, batch: int = 0) -> None:
        if (hook, trainer.current_epoch, batch) != (self.hook, self.epoch, self.batch):
            return
        if self.hard:
            os.kill(os.getpid(), signal.SIGKILL)
        raise Interrupt(f"stopped at {hook} of epoch {self.epoch}")

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._maybe_stop(trainer, "train_batch", batch_idx)

    def on_validation_batch_start(
        self, trainer, module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._maybe_stop(trainer, "validation_batch", batch_idx)

    def on_train_epoch_start(self, trainer, module) -> None:
        self._maybe_stop(trainer, "epoch_start")

    def on_train_epoch_end(
        self, trainer, module
    ) -> None:  # validated, best.ckpt written, last.ckpt not yet
        self._maybe_stop(trainer, "epoch_end")
