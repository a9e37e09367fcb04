"""Every loader a run uses, in one place: training and validation batches (cached features or raw
audio and text), the training batch samplers, and the batches of any split for a trained module.

Cached features come from the feature store (:func:`feature_splits`); a fine-tuning run reads raw
audio and text (:func:`raw_splits`) and batches it by duration (:func:`raw_loader`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crabser.config import RunConfig
from crabser.data.manifest import Manifest
from crabser.errors import CrabserError
from crabser.features.encoders import Encoder
from crabser.features.extract import content_hashes
from crabser.features.store import FeatureStore

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Sampler

    from crabser.data.sampling import EpochBatchSampler
    from crabser.models.blocks import InputStage
    from crabser.training.datamodule import Utterance
    from crabser.training.lit_module import CrabLitModule


def corpus_of(manifest: Manifest, ids: Iterable[str]) -> list[str]:
    """The ``corpus`` of each utterance id (the manifest must have the column)."""
    corpora: list[str] = (
        manifest.frame.set_index("id")["corpus"].astype(str).loc[list(ids)].tolist()
    )
    return corpora


def training_corpora(config: RunConfig, manifest: Manifest, ids: list[str]) -> list[str] | None:
    """The corpus of each training utterance (``ids``) where ``train.sampler: corpus_balanced``
    needs it, else None."""
    if config.train.sampler != "corpus_balanced":
        return None
    if "corpus" not in manifest.frame:
        raise CrabserError(
            "train.sampler corpus_balanced needs a 'corpus' column: list the corpora in "
            "data.corpora"
        )
    return corpus_of(manifest, ids)


def feature_splits(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    labels: list[str],
    names: tuple[str, ...],
) -> dict[str, Any]:
    """Cached features of the named splits, read from the store; an empty split is an error."""
    from crabser.training.datamodule import load_utterances

    store = FeatureStore(config.cache_dir)
    cache_ids = {modality: encoder.cache_id for modality, encoder in encoders.items()}
    splits = {}
    for split in names:
        splits[split] = load_utterances(manifest.subset(split), store, cache_ids, labels)[0]
        if not splits[split]:
            raise CrabserError(f"the {split} split has no utterance with cached features")
    return splits


def group_statistics(
    config: RunConfig, manifest: Manifest, encoders: dict[str, Encoder]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and std over all speech frames of each group's utterances in ``manifest`` (the group:
    ``model.normalize_per``, speaker or corpus), every split included; an utterance without cached
    features is left out."""
    from crabser.features.statistics import RunningMoments

    column = _group_column(config, manifest)
    store, cache_id = FeatureStore(config.cache_dir), encoders["speech"].cache_id
    hashes = content_hashes(manifest, "speech")
    moments: dict[str, RunningMoments] = {}
    for utterance, group in zip(manifest.frame["id"], manifest.frame[column].astype(str)):
        digest = hashes.get(utterance)
        if digest is not None and store.has(cache_id, digest):
            moments.setdefault(group, RunningMoments()).add(store.get(cache_id, digest))
    return {group: running.result() for group, running in moments.items()}


def normalize_per_group(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    splits: Iterable[list[Utterance]],
    input_stage: InputStage,
) -> None:
    """Speaker (corpus) normalisation of the utterances' speech frames, in place
    (``model.normalize_per``): each is z-normalised with its group's statistics
    (:func:`group_statistics`) and mapped onto the model's training-split statistics, so that the
    model's own normaliser hands it the group-normalised frames."""
    from crabser.features.statistics import to_reference

    statistics = group_statistics(config, manifest, encoders)
    mean, std = input_stage.statistics("speech")
    reference = (mean.numpy(), std.numpy())
    groups = manifest.frame.set_index("id")[_group_column(config, manifest)].astype(str)
    classes: dict[str, set[int]] = {}
    for items in splits:
        for item in items:
            classes.setdefault(groups[item.id], set()).add(item.label)
            group = statistics[groups[item.id]]
            item.features["speech"] = to_reference(item.features["speech"], group, reference)
    single = [group for group, labels in classes.items() if len(labels) == 1]
    if len(single) > len(classes) / 2:
        log.warning(
            "model.normalize_per %s: %d of %d %ss have clips of one class only; normalising "
            "each with its own statistics removes its emotion with its voice",
            config.model.normalize_per,
            len(single),
            len(classes),
            config.model.normalize_per,
        )


def _group_column(config: RunConfig, manifest: Manifest) -> str:
    """The manifest column ``model.normalize_per`` names; CrabserError if it lacks it."""
    column = str(config.model.normalize_per)
    if column not in manifest.frame:
        raise CrabserError(
            f"model.normalize_per {column} needs a '{column}' column in the manifest"
            + (": list the corpora in data.corpora" if column == "corpus" else "")
        )
    return column


def raw_splits(
    config: RunConfig, manifest: Manifest, labels: list[str], names: tuple[str, ...]
) -> dict[str, Any]:
    """Raw audio and text of the named splits (fine-tuning); an empty split is an error."""
    from crabser.training.finetune import load_raw_utterances

    splits = {}
    for split in names:
        splits[split] = load_raw_utterances(manifest.subset(split), labels, config.model.modalities)
        if not splits[split]:
            raise CrabserError(f"the {split} split has no usable utterance")
    return splits


def train_batch_sampler(
    config: RunConfig,
    labels: list[int],
    names: list[str],
    lengths: list[float],
    corpora: list[str] | None = None,
) -> EpochBatchSampler:
    """The training batch sampler ``train.sampler`` asks for; ``lengths`` (frames or seconds) order
    the length-bucketed batches, ``corpora`` (:func:`training_corpora`) group the corpus-balanced
    ones. Every one draws its epochs from the seed and the epoch number and shares them among
    processes (:mod:`crabser.data.sampling`)."""
    from crabser.data.sampling import (
        LengthBucketSampler,
        ShuffleBatchSampler,
        equal_share_sampler,
        neutral_expressive_sampler,
    )

    cfg = config.train
    if cfg.sampler == "length_bucketed":
        return LengthBucketSampler(lengths, cfg.batch_size, pool=cfg.bucket_pool, seed=cfg.seed)
    if cfg.sampler == "class_balanced":
        return equal_share_sampler(labels, cfg.batch_size, cfg.seed)
    if cfg.sampler == "corpus_balanced":
        index = {name: i for i, name in enumerate(sorted(set(corpora or [])))}
        return equal_share_sampler([index[c] for c in corpora or []], cfg.batch_size, cfg.seed)
    if cfg.sampler == "neutral_expressive":
        if cfg.neutral_label not in names:
            raise CrabserError(
                f"train.neutral_label {cfg.neutral_label!r} is not a class of this run "
                f"({', '.join(names)})"
            )
        return neutral_expressive_sampler(
            labels, names.index(cfg.neutral_label), cfg.batch_size, cfg.neutral_share, cfg.seed
        )
    return ShuffleBatchSampler(len(labels), cfg.batch_size, cfg.seed)


def feature_loaders(
    config: RunConfig, splits: dict[str, Any], labels: list[str], corpora: list[str] | None = None
) -> tuple[Any, ...]:
    """Training batches (``train.sampler``) and validation batches (None without a val split) of
    cached features."""
    from crabser.training.datamodule import FeatureDataModule

    items = splits["train"]
    sampler = train_batch_sampler(
        config, [u.label for u in items], labels, [u.frames for u in items], corpora
    )
    data = FeatureDataModule(
        splits, batch_size=config.train.batch_size, seed=config.train.seed, train_sampler=sampler
    )
    return data.train_dataloader(), data.val_dataloader() if "val" in splits else None


def raw_loader(
    config: RunConfig,
    items: list[Any],
    train: bool,
    labels: list[str] | None = None,
    shard: bool = True,
    corpora: list[str] | None = None,
) -> DataLoader[Any]:
    """Batches of raw audio and text; ``shard``: each process of a distributed fit takes its share
    (False: every item here, as evaluation after a fit, in a process still in the group, needs);
    ``corpora``: the corpus of each item, for corpus-balanced training batches."""
    from crabser.data.sampling import EpochTagged, LengthBucketSampler
    from crabser.training.finetune import RawDataset, bucket_lengths, collate_raw

    cfg = config.train
    dataset = RawDataset(
        items,
        config.speech.max_seconds,
        train,
        "speech" in config.model.modalities,
        cfg.seed,
        eam=train and cfg.eam,
    )
    lengths = bucket_lengths(items, dataset.uses_audio)
    balanced = ("class_balanced", "neutral_expressive", "corpus_balanced")
    if train and labels and cfg.sampler in balanced:  # not bucketed too
        sampler = train_batch_sampler(config, [i.label for i in items], labels, lengths, corpora)
    else:  # batches of similar lengths, whatever train.sampler says: raw inputs pad most
        sampler = LengthBucketSampler(
            lengths,
            cfg.batch_size,
            shuffle=train,
            pool=cfg.bucket_pool,
            seed=cfg.seed,
            num_replicas=None if shard else 1,
            rank=None if shard else 0,
        )
    # random crops and mixes drawn per (epoch, item) in training: the same in a resumed run
    batches: Sampler[Any] = EpochTagged(sampler) if train else sampler
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate_raw, num_workers=cfg.workers
    )


def split_loader(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    module: CrabLitModule,
    split: str,
) -> DataLoader[Any]:
    """Batches of a split for a trained module: cached features, or raw audio and text for a
    fine-tuned module (which runs its own encoders)."""
    from crabser.training.datamodule import FeatureDataset, collate

    if module.encoder_parameters():
        items = raw_splits(config, manifest, module.labels, (split,))[split]
        return raw_loader(config, items, train=False, shard=False)
    items = feature_splits(config, manifest, encoders, module.labels, (split,))[split]
    if config.model.normalize_per is not None:
        normalize_per_group(config, manifest, encoders, [items], module.model.input_stage)
    return torch.utils.data.DataLoader(FeatureDataset(items), batch_size=64, collate_fn=collate)
