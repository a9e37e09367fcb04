"""Cached features + manifest -> padded batches (speech frames, text tokens, masks, labels).

Features are read from the store once and kept in memory (a frozen-encoder run touches each file
once, not once per epoch). Utterances whose features are missing (their extraction failed) are left
out with a warning naming them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
    """One utterance's cached features and label index."""

    id: str
    speech: np.ndarray
    text: np.ndarray
    label: int


class FeatureDataset(Dataset):
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


def collate(items: list[Utterance]) -> dict:
    """Pad a list of utterances into a batch dict with boolean masks."""
    speech = pad_batch([u.speech for u in items])
    text = pad_batch([u.text for u in items])
    return {
        "ids": [u.id for u in items],
        "speech": speech.features,
        "speech_mask": speech.mask,
        "text": text.features,
        "text_mask": text.mask,
        "labels": torch.tensor([u.label for u in items], dtype=torch.long),
    }


def load_utterances(
    manifest: Manifest, store: FeatureStore, speech_id: str, text_id: str, labels: list[str]
) -> tuple[list[Utterance], list[str]]:
    """Utterances with both features cached, and the ids left out for lack of them."""
    index = {label: i for i, label in enumerate(labels)}
    speech_hashes = content_hashes(manifest, "speech")
    text_hashes = content_hashes(manifest, "text")
    items, missing = [], []
    for row in manifest.frame.itertuples(index=False):
        s_hash, t_hash = speech_hashes.get(row.id), text_hashes.get(row.id)
        if s_hash is None or t_hash is None or not store.has(speech_id, s_hash) or not store.has(text_id, t_hash):
            missing.append(row.id)
            continue
        items.append(Utterance(row.id, store.get(speech_id, s_hash), store.get(text_id, t_hash), index[row.label]))
    if missing:
        log.warning("%d utterances have no cached features and are left out: %s", len(missing), ", ".join(missing[:10]))
    return items, missing


class FeatureDataModule(L.LightningDataModule):
    """Train and validation loaders over in-memory cached features (evaluation reads its split itself)."""

    def __init__(
        self, splits: dict[str, list[Utterance]], batch_size: int = 32, seed: int = 0
    ) -> None:
        super().__init__()
        self.datasets = {name: FeatureDataset(items) for name, items in splits.items()}
        self.batch_size = batch_size
        self.seed = seed

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
            collate_fn=collate, generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
