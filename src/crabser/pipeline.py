"""The main job, stage by stage: prepare -> extract -> train -> evaluate (used by the CLI).

Every stage reads and writes the run folder (``<output_dir>/<name>``): the resolved config, the git
commit, the manifest with its split, extraction and timing records, checkpoints and the report.
Each stage can be re-run alone; extraction reuses the feature store and training resumes from
``checkpoints/last.ckpt`` when asked to.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from crabser.config import RunConfig, dump_config
from crabser.data.corpora import get_adapter
from crabser.data.manifest import Manifest, read_manifest, write_manifest
from crabser.data.multicorpus import apply_label_map, join_corpora
from crabser.data.protocols import (
    fold_split,
    group_folds,
    random_split,
    speaker_holdout,
    warn_empty_training_classes,
)
from crabser.data.text import clean_text
from crabser.errors import CrabserError
from crabser.evaluation.bootstrap import balanced_bootstrap
from crabser.evaluation.metrics import compute_metrics, metrics_by_group
from crabser.evaluation.report import write_predictions, write_report
from crabser.features.encoders import Encoder, build_encoders, require_models_available
from crabser.features.extract import ExtractionReport, extract
from crabser.features.store import FeatureStore
from crabser.io import atomic_path, json_text
from crabser.training.checkpoint_io import (
    BEST_CHECKPOINT,
    REFIT_CHECKPOINT,
    REFIT_FOLDER,
    run_checkpoint,
)

log = logging.getLogger(__name__)
Progress = Callable[[str, int], Callable[[int], None]]  # (stage title, total) -> advance(n)


def git_commit() -> str:
    """The current git commit of the working directory, or 'unknown'."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data, indent=2))


def _record_timing(run_dir: Path, stage: str, seconds: float) -> None:
    path = run_dir / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(seconds, 2)
    _write_json(path, timings)


def source_manifest(config: RunConfig) -> Manifest:
    """The utterances a config names (a manifest file, several corpora or one adapter; the corpora
    through ``data.label_map``), kept to ``data.labels``; no split yet."""
    data = config.data
    if data.manifest:  # taken as it is (a run's saved manifest is already through the label map)
        manifest = read_manifest(data.manifest, check_files=False)
    else:
        manifest = (
            join_corpora(data.corpora)
            if data.corpora
            else get_adapter(data.corpus)(data.root, **data.options)
        )
        manifest = apply_label_map(manifest, data.label_map)
    if data.labels:
        manifest = Manifest(manifest.frame[manifest.frame["label"].isin(data.labels)])
    return manifest.validate(labels=data.labels, check_files=False)


def prepare(config: RunConfig) -> Manifest:
    """Build the manifest (:func:`source_manifest`), assign splits; save it in the run folder."""
    data = config.data
    manifest = source_manifest(config)
    if "text" in config.model.modalities and config.asr.fill_missing:
        manifest = transcribe_missing(config, manifest)
    if data.protocol == "speaker_holdout":
        manifest = speaker_holdout(manifest, data.test_speakers, data.val_speakers, seed=data.seed)
    elif data.protocol == "folds":
        manifest = group_folds(manifest, data.folds, by=data.fold_by, seed=data.seed)
    elif data.protocol == "random":
        manifest = random_split(manifest, data.val_fraction, data.test_fraction, seed=data.seed)
    elif "split" not in manifest.frame:
        raise CrabserError("protocol 'given' needs a 'split' column in the manifest")
    else:
        warn_empty_training_classes(manifest, data.labels)
    save_run_inputs(config, manifest)
    return manifest


def save_run_inputs(config: RunConfig, manifest: Manifest) -> None:
    """Write what a run starts from into its folder: manifest, resolved config, git commit."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, run_dir / "manifest.csv")
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(dump_config(config))
    (run_dir / "git_commit.txt").write_text(git_commit() + "\n")


def transcribe_missing(config: RunConfig, manifest: Manifest) -> Manifest:
    """Fill empty transcripts by offline ASR (cached); the model loads only if one is missing."""
    texts = manifest.frame.get("text")
    missing = len(manifest) if texts is None else int(texts.map(clean_text).isna().sum())
    if not missing:
        return manifest
    from crabser.features.asr import WhisperASR, fill_missing_transcripts

    log.info("transcribing %d utterances without text (%s)", missing, config.asr.model)
    asr = WhisperASR(
        config.asr.model,
        config.asr.language,
        config.asr.beam_size,
        threads=config.train.threads or 0,
    )
    return fill_missing_transcripts(
        manifest, asr, FeatureStore(config.cache_dir), config.data.on_error
    )


def load_run_manifest(run_dir: Path) -> Manifest:
    """The manifest a run was prepared with."""
    return read_manifest(run_dir / "manifest.csv", check_files=False)


class EncoderCache:
    """Encoders loaded once per encoder setting and shared by many runs (grids, stacks); a
    fine-tuning run gets none (its module carries its own)."""

    def __init__(self) -> None:
        self.loaded: dict[tuple, dict[str, Encoder]] = {}

    def __call__(self, config: RunConfig) -> dict[str, Encoder]:
        if config.train.finetune:
            return {}
        key = tuple(
            (m, config.encoder_config(m).model_dump_json()) for m in config.model.modalities
        )
        if key not in self.loaded:
            self.loaded[key] = build_encoders(config)
        return self.loaded[key]


def extract_features(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    progress: Progress | None = None,
) -> dict[str, ExtractionReport]:
    """Fill the feature store for every utterance and modality; record what was done."""
    store = FeatureStore(config.cache_dir)
    reports = {}
    for modality, encoder in encoders.items():
        settings = config.encoder_config(modality)
        started = time.perf_counter()
        advance = (
            progress(f"extract {modality} ({encoder.cache_id})", len(manifest))
            if progress
            else None
        )
        report = extract(
            manifest,
            encoder,
            store,
            config.data.on_error,
            settings.batch_size,
            advance,
            settings.bucket_batches,
        )
        seconds = time.perf_counter() - started
        reports[modality] = report
        record = {**asdict(report), "encoder": encoder.cache_id, "seconds": round(seconds, 2)}
        if modality != "text" and report.encoded:
            record["real_time_factor"] = round(seconds / max(report.seconds_of_audio, 1e-9), 5)
        _write_json(config.run_dir / f"extraction_{modality}.json", record)
        _record_timing(config.run_dir, f"extract_{modality}", seconds)
    return reports


@dataclass
class TrainResult:
    """Where the best checkpoint is and how the run went."""

    best_checkpoint: Path
    best_val_uar: float
    seconds: float
    epochs: int


def _splits(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    labels: list[str],
    names: tuple[str, ...],
):
    """Cached features of the named splits, read from the store."""
    from crabser.training.datamodule import load_utterances

    store = FeatureStore(config.cache_dir)
    cache_ids = {modality: encoder.cache_id for modality, encoder in encoders.items()}
    return {
        split: load_utterances(manifest.subset(split), store, cache_ids, labels)[0]
        for split in names
    }


def run_labels(config: RunConfig, manifest: Manifest) -> list[str]:
    """The class set of a run (config order, or sorted labels of the manifest)."""
    return list(config.data.labels) if config.data.labels else manifest.labels


def corpus_of(manifest: Manifest, ids) -> list[str]:
    """The ``corpus`` of each utterance id (the manifest must have the column)."""
    return manifest.frame.set_index("id")["corpus"].astype(str).loc[list(ids)].tolist()


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


def _class_weights(
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


def train_batch_sampler(
    config: RunConfig,
    labels: list[int],
    names: list[str],
    lengths: list[float],
    corpora: list[str] | None = None,
):
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


def _frozen_setup(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    labels: list[str],
    validate: bool = True,
):
    """Crab on cached features: module (with input statistics) and train/val loaders (no val
    loader, None, unless ``validate``)."""
    from crabser.training.datamodule import FeatureDataModule, feature_statistics
    from crabser.training.lit_module import CrabLitModule

    names = ("train", "val") if validate else ("train",)
    splits = _splits(config, manifest, encoders, labels, names)
    for split in names:
        if not splits[split]:
            raise CrabserError(f"the {split} split has no utterance with cached features")
    first = splits["train"][0].features
    speech = first.get("speech")
    corpora = training_corpora(config, manifest, [u.id for u in splits["train"]])
    module = CrabLitModule(
        input_dims={modality: array.shape[-1] for modality, array in first.items()},
        labels=labels,
        model=config.model.model_dump(),
        loss=config.loss.model_dump(),
        train=config.train.model_dump(),
        class_weights=_class_weights(
            config, [u.label for u in splits["train"]], len(labels), corpora
        ),
        speech_layers=speech.shape[1] if speech is not None and speech.ndim == 3 else 0,
    )
    if config.model.normalize_inputs:
        for modality, normalizer in module.model.input_stage.normalizers.items():
            mean, std = feature_statistics([u.features[modality] for u in splits["train"]])
            normalizer.set_statistics(torch.from_numpy(mean), torch.from_numpy(std))
    train_items = splits["train"]
    sampler = train_batch_sampler(
        config, [u.label for u in train_items], labels, [u.frames for u in train_items], corpora
    )
    data = FeatureDataModule(
        splits, batch_size=config.train.batch_size, seed=config.train.seed, train_sampler=sampler
    )
    return module, data.train_dataloader(), data.val_dataloader() if validate else None


def finetune_encoders(config: RunConfig) -> dict:
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


def _raw_loader(
    config: RunConfig,
    items: list,
    train: bool,
    labels: list[str] | None = None,
    shard: bool = True,
    corpora: list[str] | None = None,
):
    """Batches of raw audio and text; ``shard``: each process of a distributed fit takes its share
    (False: every item here, as evaluation after a fit, in a process still in the group, needs);
    ``corpora``: the corpus of each item, for corpus-balanced training batches."""
    from crabser.data.sampling import EpochTagged, LengthBucketSampler
    from crabser.training.finetune import RawDataset, collate_raw

    dataset = RawDataset(
        items,
        config.speech.max_seconds,
        train,
        "speech" in config.model.modalities,
        config.train.seed,
        eam=train and config.train.eam,
    )
    seconds, cfg = [i.seconds for i in items], config.train
    if (
        train
        and labels
        and cfg.sampler in ("class_balanced", "neutral_expressive", "corpus_balanced")
    ):  # not bucketed too
        sampler = train_batch_sampler(config, [i.label for i in items], labels, seconds, corpora)
    else:  # batches of similar durations, whatever train.sampler says: raw audio pads most
        sampler = LengthBucketSampler(
            seconds,
            cfg.batch_size,
            shuffle=train,
            pool=cfg.bucket_pool,
            seed=cfg.seed,
            num_replicas=None if shard else 1,
            rank=None if shard else 0,
        )
    if train:  # random crops and mixes drawn per (epoch, item): the same in a resumed run
        sampler = EpochTagged(sampler)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_raw, num_workers=config.train.workers
    )


def _finetune_setup(
    config: RunConfig, manifest: Manifest, labels: list[str], validate: bool = True
):
    """Crab with trainable encoders on raw audio/text: module and bucketed train/val loaders (no val
    loader, None, unless ``validate``)."""
    from crabser.training.finetune import FinetuneLitModule, load_raw_utterances

    names = ("train", "val") if validate else ("train",)
    splits = {
        s: load_raw_utterances(manifest.subset(s), labels, config.model.modalities) for s in names
    }
    for split, items in splits.items():
        if not items:
            raise CrabserError(f"the {split} split has no usable utterance")
    corpora = training_corpora(config, manifest, [u.id for u in splits["train"]])
    encoders = finetune_encoders(config)
    require_models_available(encoders["speech_model"], encoders["text_model"])
    module = FinetuneLitModule(
        encoders=encoders,
        labels=labels,
        model=config.model.model_dump(),
        loss=config.loss.model_dump(),
        train=config.train.model_dump(),
        class_weights=_class_weights(
            config, [u.label for u in splits["train"]], len(labels), corpora
        ),
    )
    if config.model.normalize_inputs:  # computed at the fit's start, on its device
        module.statistics_loader = _raw_loader(config, splits["train"], False, shard=False)
    val_loader = _raw_loader(config, splits["val"], False) if validate else None
    return module, _raw_loader(config, splits["train"], True, labels, corpora=corpora), val_loader


def train(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    resume: bool = False,
    callbacks: list | None = None,
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
    (:func:`refit`)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

    from crabser.training.checkpoint_io import checkpoint_epochs
    from crabser.training.guards import FiniteLossGuard, check_accelerator
    from crabser.training.resume import EpochCheckpoint, EpochSeed, ResumedCSVLogger

    check_accelerator(config.train.accelerator)
    if config.data.protocol == "folds":
        raise CrabserError("protocol 'folds' trains one model per fold: use `crabser crossval`")
    cfg = config.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
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
    checkpoint_dir = config.run_dir / "checkpoints"
    last = checkpoint_dir / "last.ckpt"
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
        precision=cfg.precision,
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
        _record_timing(config.run_dir, "train", seconds)
    result = _train_result(last, seconds)
    if cfg.refit:
        refit(config, manifest, encoders, resume)
    return result


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
    _, epochs = best_validation(config)
    frame = manifest.frame
    both = Manifest(frame.assign(split=frame["split"].replace({"val": "train"})))
    settings = config.train.model_copy(update={"refit": False, "patience": None})
    refit_config = config.model_copy(
        update={"name": f"{config.name}/{REFIT_FOLDER}", "train": settings}
    )
    save_run_inputs(refit_config, both)
    log.info("refitting %s on training + validation utterances for %d epochs", config.name, epochs)
    from crabser.training.lit_module import distributed

    train(refit_config, both, encoders, resume=resume, fixed_epochs=epochs)
    several = distributed()
    if not several or torch.distributed.get_rank() == 0:
        os.replace(
            refit_config.run_dir / "checkpoints" / "last.ckpt", target
        )  # one file system: atomic
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


def load_module(checkpoint: Path):
    """The Lightning module of a checkpoint: a fine-tuned one (with encoders) or a head on
    features."""
    from crabser.training.checkpoint_io import load_checkpoint_module, read_checkpoint
    from crabser.training.lit_module import CrabLitModule

    # mmap: only the pickled metadata is read here; the weights are read once, by
    # load_from_checkpoint
    hparams = read_checkpoint(checkpoint, mmap=True).get("hyper_parameters", {})
    if "encoders" in hparams:
        from crabser.training.finetune import FinetuneLitModule

        require_models_available(
            hparams["encoders"].get("speech_model"), hparams["encoders"].get("text_model")
        )
        return load_checkpoint_module(FinetuneLitModule, checkpoint)
    return load_checkpoint_module(CrabLitModule, checkpoint)


def split_loader(
    config: RunConfig, manifest: Manifest, encoders: dict[str, Encoder], module, split: str
):
    """Batches of a split for a trained module: cached features, or raw audio and text for a
    fine-tuned module (which runs its own encoders)."""
    from crabser.training.datamodule import FeatureDataset, collate

    labels = module.labels
    if module.encoder_parameters():
        from crabser.training.finetune import load_raw_utterances

        items = load_raw_utterances(manifest.subset(split), labels, config.model.modalities)
        if not items:
            raise CrabserError(f"the {split} split has no usable utterance")
        return _raw_loader(config, items, train=False, shard=False)
    items = _splits(config, manifest, encoders, labels, (split,))[split]
    if not items:
        raise CrabserError(f"the {split} split has no usable utterance")
    return torch.utils.data.DataLoader(FeatureDataset(items), batch_size=64, collate_fn=collate)


def evaluate(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    split: str = "test",
    checkpoint: Path | None = None,
) -> tuple[dict, dict[str, Path]]:
    """Metrics of the run's model (:func:`crabser.training.checkpoint_io.run_checkpoint`) or of
    ``checkpoint`` on a split, written to ``<run>/report``. The val split is scored with the best
    checkpoint by default: a refitted model trained on it."""
    started = time.perf_counter()
    checkpoint = checkpoint or run_checkpoint(
        config.run_dir, BEST_CHECKPOINT if split == "val" else None
    )
    module = load_module(checkpoint)
    labels = module.labels
    preds, truths, ids = [], [], []
    with torch.no_grad():
        for batch in split_loader(config, manifest, encoders, module, split):
            preds.append(module(batch).argmax(dim=-1))
            truths.append(batch["labels"])
            ids.extend(batch["ids"])
    truth_list, pred_list = torch.cat(truths).tolist(), torch.cat(preds).tolist()
    metrics = compute_metrics(truth_list, pred_list, labels)
    metrics["balanced_bootstrap"] = balanced_bootstrap(
        truth_list, pred_list
    )  # beside the plain metrics
    if "corpus" in manifest.frame:  # a multi-corpus run: each corpus on its own classes as well
        metrics["per_corpus"] = metrics_by_group(
            truth_list, pred_list, corpus_of(manifest, ids), labels
        )
    report_dir = config.run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(
        report_dir / f"{split}_predictions.csv",
        ids,
        [labels[i] for i in truth_list],
        [labels[i] for i in pred_list],
    )
    seconds = time.perf_counter() - started
    _record_timing(config.run_dir, f"evaluate_{split}", seconds)
    speakers = (
        sorted(manifest.subset(split).frame["speaker"].unique().tolist())
        if "speaker" in manifest.frame
        else []
    )
    paths = write_report(
        metrics,
        report_dir,
        prefix=split,
        extra={
            "split": split,
            "speakers": speakers,
            "checkpoint": str(checkpoint),
            "git_commit": git_commit(),
        },
    )
    return metrics, paths


def fold_config(config: RunConfig, fold: int) -> RunConfig:
    """The config of one fold's run: ``<name>/fold<k>``, reading its own manifest with a given
    split."""
    name = f"{config.name}/fold{fold}"
    manifest = Path(config.output_dir) / name / "manifest.csv"
    data = config.data.model_copy(update={"protocol": "given", "manifest": str(manifest)})
    return config.model_copy(update={"name": name, "data": data})


def for_job(config: RunConfig, jobs: int) -> RunConfig:
    """A run's config for one of ``jobs`` side-by-side processes: its share of the torch threads and
    no progress bar (``jobs`` <= 1: unchanged)."""
    from crabser.parallel import threads_per_job

    if jobs <= 1:
        return config
    train = config.train.model_copy(update={"threads": threads_per_job(jobs), "progress": False})
    return config.model_copy(update={"train": train})


def metrics_file(config: RunConfig, split: str = "test") -> Path:
    """Where :func:`evaluate` writes a run's metrics on a split (there once the run is scored)."""
    return config.run_dir / "report" / f"{split}_metrics.json"


def read_metrics(config: RunConfig, split: str = "test") -> dict:
    """A scored run's metrics on a split, as :func:`evaluate` wrote them."""
    return json.loads(metrics_file(config, split).read_text())


def best_validation(config: RunConfig) -> tuple[float, int]:
    """A trained run's best validation UAR and its epoch (1-based), from its training log."""
    path = config.run_dir / "logs" / "metrics.csv"
    try:
        log = pd.read_csv(path).dropna(subset=["val_uar"])
    except (OSError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CrabserError(
            f"{path}: no readable training log with val_uar ({error}); train the run first"
        ) from error
    if log.empty:
        raise CrabserError(f"{path}: no epoch was validated; train the run first")
    best = log.loc[log["val_uar"].idxmax()]
    return float(best["val_uar"]), int(best["epoch"]) + 1


def train_and_test(config: RunConfig, manifest: Manifest, encoders: dict[str, Encoder]) -> None:
    """Train a run (resuming) and score its model on the test split."""
    train(config, manifest, encoders, resume=True)
    evaluate(config, manifest, encoders, "test")


def train_and_test_runs(
    runs: dict[Hashable, tuple[RunConfig, Manifest]],
    encoders_of: Callable[[RunConfig], dict],
    jobs: int = 1,
    on_done: Callable[[Hashable], None] | None = None,
) -> None:
    """Train and test every run (key -> its config and split manifest, features extracted) whose
    metrics are not on disk yet, ``jobs`` side by side (:mod:`crabser.parallel`); every run goes on
    even if one fails. ``on_done(key)`` for each run read back, then after each one trained.
    ``encoders_of(config)``: the loaded encoders of a run's config."""
    from crabser.parallel import encoders_for_jobs, jobs_for, run_jobs

    todo = [key for key, (config, _) in runs.items() if not metrics_file(config).is_file()]
    jobs = jobs_for(jobs, len(todo))
    pending = {}
    for key in todo:
        config, manifest = runs[key]
        job_config = for_job(config, jobs)  # the saved config.yaml names the threads it ran with
        save_run_inputs(job_config, manifest)
        pending[key] = (job_config, manifest, encoders_for_jobs(encoders_of(config), jobs))
    run_jobs(
        train_and_test,
        pending,
        jobs,
        on_done=on_done,
        finished=[key for key in runs if key not in pending],
    )


def crossval(
    config: RunConfig,
    manifest: Manifest,
    encoders: dict[str, Encoder],
    on_fold: Callable[[int, dict], None] | None = None,
    jobs: int = 1,
) -> dict:
    """Train and test one model per fold (folds already done are read back), then summarise.

    ``manifest`` comes from :func:`prepare` (with its ``fold`` column) and its features must be
    extracted (:func:`extract_features`). ``jobs`` > 1 trains that many folds side by side
    (:mod:`crabser.parallel`); every fold runs even if one fails.

    Returns and writes ``<run>/crossval.json`` and ``crossval.md``: per-fold metrics, their mean and
    std, and the pooled metrics of all folds' test predictions together.
    """
    import numpy as np

    if "fold" not in manifest.frame:
        raise CrabserError("crossval needs data.protocol: folds (the manifest has no fold column)")
    labels = run_labels(config, manifest)
    folds = [int(fold) for fold in sorted(manifest.frame["fold"].astype(int).unique())]
    configs = {fold: fold_config(config, fold) for fold in folds}

    def metrics_of(fold: int) -> dict:
        return read_metrics(configs[fold])

    runs = {
        fold: (
            configs[fold],
            fold_split(manifest, fold, config.data.val_speakers_per_fold, config.data.seed),
        )
        for fold in folds
    }

    def report(fold: int) -> None:
        if on_fold:
            on_fold(fold, metrics_of(fold))

    train_and_test_runs(runs, lambda _: encoders, jobs, on_done=report)
    per_fold = {fold: metrics_of(fold) for fold in folds}
    predictions = [
        pd.read_csv(configs[fold].run_dir / "report" / "test_predictions.csv", dtype=str)
        for fold in folds
    ]
    pooled_frame = pd.concat(predictions)
    index = {label: i for i, label in enumerate(labels)}
    pooled_truth, pooled_predictions = (
        [index[x] for x in pooled_frame["label"]],
        [index[x] for x in pooled_frame["prediction"]],
    )
    pooled = compute_metrics(pooled_truth, pooled_predictions, labels)
    keys = ("war", "uar", "macro_f1")
    summary = {
        "folds": {fold: {k: m[k] for k in (*keys, "n")} for fold, m in per_fold.items()},
        "mean": {k: float(np.mean([m[k] for m in per_fold.values()])) for k in keys},
        "std": {k: float(np.std([m[k] for m in per_fold.values()])) for k in keys},
        "pooled": {k: pooled[k] for k in (*keys, "n")},
        "fold_by": config.data.fold_by,
        "git_commit": git_commit(),
    }
    if "corpus" in manifest.frame:  # pooled predictions of each corpus, on its own classes
        summary["per_corpus"] = metrics_by_group(
            pooled_truth, pooled_predictions, corpus_of(manifest, pooled_frame["id"]), labels
        )
    write_report(pooled, config.run_dir / "report", prefix="pooled", extra={"folds": len(per_fold)})
    _write_json(config.run_dir / "crossval.json", summary)
    with atomic_path(config.run_dir / "crossval.md") as tmp:
        tmp.write_text(crossval_markdown(summary))
    return summary


def crossval_markdown(summary: dict) -> str:
    """Per-fold, mean ± std and pooled metrics as a Markdown table."""

    def row(name: object, m: dict) -> str:
        return f"| {name} | {m['war']:.4f} | {m['uar']:.4f} | {m['macro_f1']:.4f} | {m['n']} |"

    lines = ["| fold | WAR | UAR | Macro-F1 | n |", "|---|---|---|---|---|"]
    lines += [row(fold, m) for fold, m in summary["folds"].items()]
    mean, std, pooled = summary["mean"], summary["std"], summary["pooled"]
    lines.append(
        "| mean ± std | "
        + " | ".join(f"{mean[k]:.4f} ± {std[k]:.4f}" for k in ("war", "uar", "macro_f1"))
        + " | |"
    )
    lines.append(
        "| pooled | "
        + " | ".join(f"{pooled[k]:.4f}" for k in ("war", "uar", "macro_f1"))
        + f" | {pooled['n']} |"
    )
    if "per_corpus" in summary:
        lines += [
            "",
            "| corpus (pooled over folds) | WAR | UAR | Macro-F1 | n |",
            "|---|---|---|---|---|",
        ]
        lines += [row(corpus, m) for corpus, m in summary["per_corpus"].items()]
    return "\n".join(lines) + "\n"
