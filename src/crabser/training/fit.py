"""Fitting a run's model with Lightning: on cached features (frozen encoders) or with its encoders
(``train.finetune``), keeping the best and last checkpoints, resuming, and refitting on training +
validation utterances (``train.refit``). The loaders come from :mod:`crabser.training.loaders`,
the run folder's files from :mod:`crabser.runs`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import torch

from crabser.config import RunConfig
from crabser.data.manifest import Manifest
from crabser.errors import CrabserError
from crabser.features.encoders import Encoder, require_models_available
from crabser.runs import RunFolder, run_labels
from crabser.training.checkpoint_io import BEST_CHECKPOINT, REFIT_CHECKPOINT, REFIT_FOLDER
from crabser.training.loaders import (
    feature_loaders,
    feature_splits,
    normalize_per_group,
    raw_loader,
    raw_splits,
    training_corpora,
)

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from crabser.training.lit_module import CrabLitModule

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the best checkpoint is and how the run went."""

    best_checkpoint: Path
    best_val_uar: float
    seconds: float
    epochs: int


def class_weights(
    config: RunConfig, train_labels: list[int], num_classes: int, corpora: list[str] | None = None
) -> list[float] | None:
    """Inverse class frequencies of the training split; with ``corpora`` (corpus-balanced batches)
    each utterance counts 1 / (its corpus's size), the share the sampler gives it."""
    from crabser.losses import inverse_frequency_weights

    if not config.loss.class_weights:
        return None
    sample_weights = None
    if corpora is not None:
        sizes = pd.Series(corpora).value_counts()
        sample_weights = torch.tensor([1.0 / sizes[c] for c in corpora], dtype=torch.float64)
    return inverse_frequency_weights(
        torch.tensor(train_labels), num_classes, sample_weights
    ).tolist()


def finetune_encoders(config: RunConfig) -> dict[str, Any]:
    """The trainable-encoder settings of a fine-tuning run."""
    modalities = config.model.modalities
    if "paralinguistic" in modalities:
        raise CrabserError(
            "fine-tuning covers the speech and text encoders; drop 'paralinguistic' from "
            "model.modalities"
        )
    if "speech" in modalities and config.speech.kind != "hf-speech":
        raise CrabserError(
            "fine-tuning needs speech.kind: hf-speech (Whisper, WavLM, HuBERT or wav2vec 2.0; "
            f"embedded = Whisper tiny.en), not {config.speech.kind}"
        )
    if "text" in modalities and config.text.kind != "hf-text":
        raise CrabserError("fine-tuning needs text.kind: hf-text")
    if "speech" in modalities and config.speech.pad_to_seconds is not None:
        raise CrabserError(
            "fine-tuning runs Whisper on each clip's own length: remove speech.pad_to_seconds"
        )
    return {
        "speech_model": config.speech.model if "speech" in modalities else None,
        "text_model": config.text.model if "text" in modalities else None,
        "speech_layer": config.speech.layer,
        "text_layer": int(config.text.layer),
        "max_tokens": config.text.max_tokens,
        "gradient_checkpointing": config.train.gradient_checkpointing,
    }


def _module_settings(
    config: RunConfig, train_items: list[Any], labels: list[str], corpora: list[str] | None
) -> dict[str, Any]:
    """The Lightning module's arguments every run shares: labels, the model, loss and train
    settings, and the class weights of its training utterances."""
    return {
        "labels": labels,
        "model": config.model.model_dump(),
        "loss": config.loss.model_dump(),
        "train": config.train.model_dump(),
        "class_weights": class_weights(
            config, [u.label for u in train_items], len(labels), corpora
        ),
    }


def _frozen_setup(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    labels: list[str],
    validate: bool = True,
) -> tuple[CrabLitModule, DataLoader[Any], DataLoader[Any] | None]:
    """Crab on cached features: module (with input statistics) and train/val loaders (no val
    loader, None, unless ``validate``)."""
    from crabser.features.statistics import feature_statistics
    from crabser.training.lit_module import CrabLitModule

    splits = feature_splits(
        config, manifest, encoders, labels, ("train", "val") if validate else ("train",)
    )
    first = splits["train"][0].features
    speech = first.get("speech")
    corpora = training_corpora(config, manifest, [u.id for u in splits["train"]])
    module = CrabLitModule(
        input_dims={modality: array.shape[-1] for modality, array in first.items()},
        speech_layers=speech.shape[1] if speech is not None and speech.ndim == 3 else 0,
        **_module_settings(config, splits["train"], labels, corpora),
    )
    if config.model.normalize_inputs:
        for modality in module.model.input_stage.normalizers:
            mean, std = feature_statistics([u.features[modality] for u in splits["train"]])
            module.model.input_stage.set_statistics(
                modality, torch.from_numpy(mean), torch.from_numpy(std)
            )
    if config.model.normalize_per is not None:
        normalize_per_group(config, manifest, encoders, splits.values(), module.model.input_stage)
    train_loader, val_loader = feature_loaders(config, splits, labels, corpora)
    return module, train_loader, val_loader


def _finetune_setup(
    config: RunConfig, manifest: Manifest, labels: list[str], validate: bool = True
) -> tuple[CrabLitModule, DataLoader[Any], DataLoader[Any] | None]:
    """Crab with trainable encoders on raw audio/text: module and bucketed train/val loaders (no val
    loader, None, unless ``validate``)."""
    from crabser.training.finetune import FinetuneLitModule

    splits = raw_splits(config, manifest, labels, ("train", "val") if validate else ("train",))
    corpora = training_corpora(config, manifest, [u.id for u in splits["train"]])
    encoders = finetune_encoders(config)
    require_models_available(encoders["speech_model"], encoders["text_model"])
    module = FinetuneLitModule(
        encoders=encoders, **_module_settings(config, splits["train"], labels, corpora)
    )
    if config.model.normalize_inputs:  # computed at the fit's start, on its device
        module.statistics_loader = raw_loader(config, splits["train"], False, shard=False)
    val_loader = raw_loader(config, splits["val"], False) if validate else None
    return module, raw_loader(config, splits["train"], True, labels, corpora=corpora), val_loader


def train(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    resume: bool = False,
    callbacks: list[Any] | None = None,
    fixed_epochs: int | None = None,
) -> TrainResult:
    """Train Crab with Lightning (on cached features, or with its encoders when ``train.finetune``);
    keep the best (by val UAR) and the last checkpoints; stop early after ``train.patience`` epochs
    without a better val UAR, when set. ``resume``: continue exactly where ``last.ckpt`` stopped
    (:mod:`crabser.training.resume`). Several processes (``train.strategy: ddp``) share every
    epoch's batches (:mod:`crabser.data.sampling`) and score validation over all of them together.
    ``callbacks``: more Lightning callbacks (tests). ``fixed_epochs``: train this many epochs of the
    ``train.epochs`` schedule without validation (no val split needed, no best checkpoint; the model
    is ``last.ckpt``): a refit. With ``train.refit`` the run's model is then refitted
    (:func:`refit`). A resumed fit that early stopping had ended trains no further: its checkpoints
    and log stay as they are (``seconds`` 0) and the refit follows."""
    from crabser.devices import check_accelerator
    from crabser.training.checkpoint_io import fit_stopped

    check_accelerator(config.train.accelerator)
    if config.data.protocol == "folds":
        raise CrabserError("protocol 'folds' trains one model per fold: use `crabser crossval`")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    last = RunFolder.of(config).last_checkpoint
    if resume and fit_stopped(last):
        result = _train_result(last, 0.0)
        log.info(
            "%s: its fit was stopped early, after epoch %d; resuming trains no further",
            config.name,
            result.epochs,
        )
    else:
        result = _fit(config, manifest, encoders, resume, callbacks, fixed_epochs)
    if config.train.refit:
        refit(config, manifest, encoders, resume)
    return result


def _fit(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    resume: bool,
    callbacks: list[Any] | None,
    fixed_epochs: int | None,
) -> TrainResult:
    """The Lightning fit of :func:`train` (its arguments), up to its ``last.ckpt``."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

    from crabser.training.checkpoint_io import checkpoint_epochs
    from crabser.training.guards import FiniteLossGuard
    from crabser.training.resume import EpochCheckpoint, EpochSeed, ResumedCSVLogger

    cfg = config.train
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    labels = run_labels(config, manifest)
    if cfg.eam and not cfg.finetune:
        raise CrabserError(
            "train.eam mixes waveforms, so it needs raw audio: set train.finetune: true (cached "
            "features cannot be mixed)"
        )
    validate = fixed_epochs is None
    if cfg.finetune:
        module, train_loader, val_loader = _finetune_setup(config, manifest, labels, validate)
    else:
        module, train_loader, val_loader = _frozen_setup(
            config, manifest, encoders, labels, validate
        )
    last = RunFolder.of(config).last_checkpoint
    checkpoint_dir = last.parent
    resumed_epochs = checkpoint_epochs(last) if resume else None
    if resumed_epochs is None:  # a new fit: a refit of an earlier one is no longer the run's model
        (checkpoint_dir / REFIT_CHECKPOINT).unlink(missing_ok=True)
        shutil.rmtree(config.run_dir / REFIT_FOLDER, ignore_errors=True)
    resume_from = str(last) if resumed_epochs is not None else None
    callbacks = [
        EpochCheckpoint(last),
        EpochSeed(cfg.seed),
        *(callbacks or []),
        FiniteLossGuard(cfg.model_dump(), config.loss.model_dump()),
    ] + ([RichProgressBar()] if cfg.progress else [])
    if validate:
        callbacks.insert(
            0,
            ModelCheckpoint(
                dirpath=checkpoint_dir,
                filename=Path(BEST_CHECKPOINT).stem,
                monitor="val_uar",
                mode="max",
                enable_version_counter=False,
            ),
        )
    if validate and cfg.patience:
        callbacks.append(EarlyStopping(monitor="val_uar", mode="max", patience=cfg.patience))
    trainer = L.Trainer(
        max_epochs=fixed_epochs or cfg.epochs,
        limit_val_batches=None if validate else 0,  # None: all (1.0 would print a notice)
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cast(Any, cfg.precision),  # one of Lightning's precision names
        accumulate_grad_batches=cfg.accumulate,
        callbacks=callbacks,
        logger=ResumedCSVLogger(str(config.run_dir), "logs", resumed_epochs),
        # our batch samplers share the batches among ranks themselves
        use_distributed_sampler=False,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        default_root_dir=str(config.run_dir),
    )
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from)
    seconds = time.perf_counter() - started
    if trainer.is_global_zero:
        RunFolder.of(config).record_timing("train", seconds)
    return _train_result(last, seconds)


def refit(
    config: RunConfig, manifest: Manifest, encoders: dict[str, Encoder], resume: bool = False
) -> Path:
    """Train the run's model again, from scratch, on its training and validation utterances
    together, for the number of epochs its validation chose (on the same ``train.epochs`` cosine
    schedule, stopped there, without validation), and make it ``checkpoints/refit.ckpt``, the run's
    model from then on (:func:`crabser.training.checkpoint_io.run_checkpoint`; validation scores
    still come from the best checkpoint, which never saw those utterances). The fit runs in
    ``<run>/refit``, whose manifest marks the validation rows ``train``. Why: a held-out validation
    split costs the model its data (two of nine training speakers in EmoDB's leave-one-speaker-out
    folds); a linear probe whose C is chosen by cross-validation is refitted on all of them
    (scikit-learn's ``refit``), so the head gets the same. ``resume``: a refit already saved is
    kept, one interrupted continues (a new fit of the run clears both, :func:`train`)."""
    target = config.run_dir / "checkpoints" / REFIT_CHECKPOINT
    if resume and target.is_file():
        return target
    _, epochs = RunFolder.of(config).best_validation()
    frame = manifest.frame
    both = Manifest(frame.assign(split=frame["split"].replace({"val": "train"})))
    settings = config.train.model_copy(update={"refit": False, "patience": None})
    refit_config = config.model_copy(
        update={"name": f"{config.name}/{REFIT_FOLDER}", "train": settings}
    )
    RunFolder.of(refit_config).save_inputs(refit_config, both, resume)
    log.info("refitting %s on training + validation utterances for %d epochs", config.name, epochs)
    from crabser.training.lit_module import distributed

    train(refit_config, both, encoders, resume=resume, fixed_epochs=epochs)
    several = distributed()
    if not several or torch.distributed.get_rank() == 0:
        os.replace(RunFolder.of(refit_config).last_checkpoint, target)  # one file system: atomic
    if several:
        torch.distributed.barrier()  # every rank evaluates the refitted model, not best.ckpt
    return target


def _train_result(last: Path, seconds: float) -> TrainResult:
    """The outcome of a fit as ``last.ckpt`` records it (the same in every process, and after
    ``ddp_spawn``, whose workers' trainer state does not come back)."""
    from crabser.training.checkpoint_io import read_checkpoint

    saved = read_checkpoint(last, mmap=True)
    states = [s for key, s in saved["callbacks"].items() if key.startswith("ModelCheckpoint")]
    state = states[0] if states else {}  # none: a fit without validation (a refit)
    score = state.get("best_model_score")
    best = Path(state.get("best_model_path") or last)
    return TrainResult(
        best, float(score) if score is not None else float("nan"), seconds, int(saved["epoch"])
    )
