"""The main job, stage by stage: prepare -> extract -> train -> evaluate (used by the CLI).

Every stage reads and writes the run folder (:mod:`crabser.runs`): the resolved config, the git
commit, the manifest with its split, extraction and timing records, checkpoints and the report.
Each stage can be re-run alone; extraction reuses the feature store and training
(:func:`crabser.training.fit.train`) resumes from ``checkpoints/last.ckpt`` when asked to.
Cross-validation, one run per fold, is :mod:`crabser.crossval`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from crabser.config import RunConfig
from crabser.data.corpora import read_corpus
from crabser.data.manifest import Manifest, read_manifest
from crabser.data.multicorpus import apply_label_map, join_corpora
from crabser.data.protocols import (
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
from crabser.features.encoders import Encoder, build_encoders
from crabser.features.extract import ExtractionReport, extract
from crabser.features.store import FeatureStore
from crabser.runs import RunFolder, git_commit
from crabser.training.checkpoint_io import BEST_CHECKPOINT, load_module, run_checkpoint
from crabser.training.loaders import corpus_of
from crabser.training.predict import predict_split

log = logging.getLogger(__name__)
Progress = Callable[[str, int], Callable[[int], None]]  # (stage title, total) -> advance(n)


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
            else read_corpus(data.corpus, data.root, data.options)
        )
        manifest = apply_label_map(manifest, data.label_map)
    if data.labels:
        manifest = Manifest(manifest.frame[manifest.frame["label"].isin(data.labels)])
    return manifest.validate(labels=data.labels, check_files=False)


def prepare(config: RunConfig, resume: bool = False) -> Manifest:
    """Build the manifest (:func:`source_manifest`), assign splits; save it in the run folder.
    ``resume``: the run's fit will continue its ``last.ckpt``, which must have ``config``'s
    settings (:meth:`crabser.runs.RunFolder.save_inputs`)."""
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
    RunFolder.of(config).save_inputs(config, manifest, resume)
    return manifest


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


class EncoderCache:
    """Encoders loaded once per encoder setting and shared by many runs (grids, stacks); a
    fine-tuning run gets none (its module carries its own)."""

    def __init__(self) -> None:
        self.loaded: dict[tuple, dict[str, Encoder]] = {}

    def __call__(self, config: RunConfig) -> dict[str, Encoder]:
        if config.train.finetune:
            return {}
        key = (
            *((m, config.encoder_config(m).model_dump_json()) for m in config.model.modalities),
            config.train.accelerator,  # the encoders' device
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
    store, folder = FeatureStore(config.cache_dir), RunFolder.of(config)
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
        folder.write_record(f"extraction_{modality}", record)
        folder.record_timing(f"extract_{modality}", seconds)
    return reports


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
    outputs = predict_split(config, manifest, encoders, module, split)
    truth_list, pred_list, ids = outputs.labels.tolist(), outputs.predicted.tolist(), outputs.ids
    metrics = compute_metrics(truth_list, pred_list, labels)
    # beside the plain metrics
    metrics["balanced_bootstrap"] = balanced_bootstrap(truth_list, pred_list)
    if "corpus" in manifest.frame:  # a multi-corpus run: each corpus on its own classes as well
        metrics["per_corpus"] = metrics_by_group(
            truth_list, pred_list, corpus_of(manifest, ids), labels
        )
    folder = RunFolder.of(config)
    folder.report.mkdir(parents=True, exist_ok=True)
    write_predictions(
        folder.report / f"{split}_predictions.csv",
        ids,
        [labels[i] for i in truth_list],
        [labels[i] for i in pred_list],
    )
    folder.record_timing(f"evaluate_{split}", time.perf_counter() - started)
    speakers = (
        sorted(manifest.subset(split).frame["speaker"].unique().tolist())
        if "speaker" in manifest.frame
        else []
    )
    paths = write_report(
        metrics,
        folder.report,
        prefix=split,
        extra={
            "split": split,
            "speakers": speakers,
            "checkpoint": str(checkpoint),
            "git_commit": git_commit(),
        },
    )
    return metrics, paths
