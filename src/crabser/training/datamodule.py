"""Cached features + manifest -> padded batches (frames/tokens and masks per modality, labels).

Features are read from the store once and kept in memory (a frozen-encoder run touches each file
once, not once per epoch). Utterances whose features are missing (their extraction failed) are left
out with a warning naming them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from crabser.data.manifest import Manifest
from crabser.features.encoders import pad_batch
from crabser.features.extract import content_hashes
from crabser.features.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class Utterance:
    """One utterance's cached features (modality -> ``(T, ...)`` array) and label index."""

    id: str
    features: dict[str, np.ndarray]
    label: int

    @property
    def frames(self) -> int:
        """Frames (and tokens) over all modalities: the padding cost of this utterance in a
        batch."""
        return sum(len(array) for array in self.features.values())


class FeatureDataset(Dataset[Any]):
    """A list of :class:`Utterance` as a torch Dataset."""

    def __init__(self, items: list[Utterance]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Utterance:
        return self.items[index]

    @property
    def labels(self) -> torch.Tensor:
        """All label indices, in order."""
        return torch.tensor([u.label for u in self.items], dtype=torch.long)


class FeatureBatch(TypedDict):
    """A batch of cached features (:func:`collate`)."""

    ids: list[str]
    features: dict[str, torch.Tensor]  #: modality -> (B, T, D), or (B, T, L, D) for L layers
    masks: dict[str, torch.Tensor]  #: modality -> (B, T), True on real frames
    labels: torch.Tensor  #: (B,) class indices


class _RawInputs(TypedDict):
    ids: list[str]
    waves: list[Any]  #: float32 16 kHz waves (None where a text-only model needs no audio)
    texts: list[str]
    labels: torch.Tensor  #: (B,) class indices


class RawBatch(_RawInputs, total=False):
    """A batch of raw audio and text for a fine-tuning run (:func:`crabser.training.finetune.
    collate_raw`); under EAM, each utterance's mixed-in label and its weight too."""

    mix_labels: torch.Tensor
    mix_lambdas: torch.Tensor


Batch = FeatureBatch | RawBatch  #: what the Lightning modules take


def collate(items: list[Utterance]) -> FeatureBatch:
    """Pad a list of utterances into a batch: ``features`` and ``masks`` per modality,
    ``labels``."""
    features, masks = {}, {}
    for modality in items[0].features:
        padded = pad_batch([u.features[modality] for u in items])
        features[modality], masks[modality] = padded.features, padded.mask
    return {
        "ids": [u.id for u in items],
        "features": features,
        "masks": masks,
        "labels": torch.tensor([u.label for u in items], dtype=torch.long),
    }


def load_utterances(
    manifest: Manifest, store: FeatureStore, cache_ids: dict[str, str], labels: list[str]
) -> tuple[list[Utterance], list[str]]:
    """Utterances with every modality's features cached (``cache_ids``: modality -> encoder cache
    id), and the ids left out for lack of them."""
    index = {label: i for i, label in enumerate(labels)}
    hashes = {modality: content_hashes(manifest, modality) for modality in cache_ids}
    items, missing = [], []
    for row in manifest.frame.itertuples(index=False):
        digests = {modality: hashes[modality].get(row.id) for modality in cache_ids}
        known = {m: d for m, d in digests.items() if d is not None}
        if len(known) < len(digests) or not all(
            store.has(cache_ids[m], d) for m, d in known.items()
        ):
            missing.append(row.id)
            continue
        features = {m: store.get(cache_ids[m], d) for m, d in known.items()}
        items.append(Utterance(row.id, features, index[row.label]))
    if missing:
        log.warning(
            "%d utterances have no cached features and are left out: %s",
            len(missing),
            ", ".join(missing[:10]),
        )
    return items, missing


class FeatureDataModule(L.LightningDataModule):
    """Train and validation loaders over in-memory cached features (evaluation reads its split
    itself)."""

    def __init__(
        self,
        splits: dict[str, list[Utterance]],
        batch_size: int = 32,
        seed: int = 0,
        train_sampler: Iterable[list[int]] | None = None,
    ) -> None:
        """``train_sampler``: a batch sampler for the training split (:mod:`crabser.data.sampling`);
        None = plain shuffling (:class:`~crabser.data.sampling.ShuffleBatchSampler`: resumable and
        shared among processes like the others)."""
        super().__init__()
        self.datasets = {name: FeatureDataset(items) for name, items in splits.items()}
        self.batch_size = batch_size
        self.seed = seed
        self.train_sampler = train_sampler

    def train_dataloader(self) -> DataLoader[Any]:
        from crabser.data.sampling import ShuffleBatchSampler

        sampler = self.train_sampler
        if sampler is None:
            sampler = ShuffleBatchSampler(len(self.datasets["train"]), self.batch_size, self.seed)
        return DataLoader(self.datasets["train"], batch_sampler=sampler, collate_fn=collate)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches sorted by length (least padding; the scores do not depend on the
        order)."""
        from crabser.data.sampling import LengthBucketSampler

        items = self.datasets["val"].items
        sampler = LengthBucketSampler([u.frames for u in items], self.batch_size, shuffle=False)
        return DataLoader(self.datasets["val"], batch_sampler=sampler, collate_fn=collate)
