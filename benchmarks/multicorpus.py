"""Four corpora, four languages: leave-one-corpus-out with the multi-corpus model, the EmoDB-only
default model and a linear probe, each scored on the held-out corpus's own classes.

- multi-corpus model: ``crabser crossval -c configs/multicorpus.yaml`` (fold_by corpus): each
  corpus is scored by a Crab trained on the other three (corpus-balanced batches);
- EmoDB-only: the packaged EmoDB model (crabser/emodb_speech: all of EmoDB, 7 classes) through
  ``crabser evaluate --corpus`` on each other corpus, with the same label map (its extra class,
  boredom, stays a possible error, as it is for a user);
- probe: mean+std of the same cached Whisper features, standardised, class-balanced logistic
  regression trained on the other three corpora (C by speaker-grouped 3-fold CV on them).

Usage (from the repository root): python -m benchmarks.multicorpus [--jobs 2] [--quick] [-o
KEY=VALUE ...] (``--quick``: 40 clips per corpus, 2 epochs, in runs/quick: a smoke run, not the
benchmark.)"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import (
    command_line,
    header,
    pooled_features,
    quick_overrides,
    quick_subset,
    write_section,
)
from benchmarks.whisper_layers import probe_loso
from crabser import pipeline
from crabser.config import load_config
from crabser.cross_corpus import evaluate_on_corpus
from crabser.crossval import crossval
from crabser.data.manifest import Manifest, write_manifest
from crabser.evaluation.metrics import metrics_by_group
from crabser.runs import RunFolder, run_labels

EMODB_ONLY = "crabser/emodb_speech"  #: the packaged EmoDB-only model


def single_corpus_config(config, manifest, corpus: str):
    """``config`` reading the run's utterances of one corpus (a manifest file: already through the
    label map)."""
    path = config.run_dir / f"{corpus}_manifest.csv"
    write_manifest(Manifest(manifest.frame[manifest.frame["corpus"] == corpus]), path)
    data = config.data.model_copy(update={"manifest": str(path)})
    return config.model_copy(update={"data": data, "name": f"{config.name}_{corpus}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/multicorpus.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="folds trained side by side")
    parser.add_argument("--quick", action="store_true", help="2 epochs: a smoke run")
    parser.add_argument(
        "-o", "--override", action="append", default=[], help="config override, key=value"
    )
    args = parser.parse_args()
    quick = (
        ["train.epochs=2", "train.progress=false", "data.val_speakers_per_fold=2"]
        if args.quick
        else []
    )
    config = load_config(args.config, [*quick, *quick_overrides(args.quick), *args.override])
    manifest = pipeline.prepare(config)
    if args.quick:  # 40 clips of each corpus
        manifest = quick_subset(manifest)
        RunFolder.of(config).save_inputs(config, manifest)
    encoders = pipeline.build_encoders(config)
    started = time.perf_counter()
    pipeline.extract_features(config, manifest, encoders)
    extract_seconds = time.perf_counter() - started
    started = time.perf_counter()
    summary = crossval(config, manifest, encoders, jobs=args.jobs)
    crab_seconds = time.perf_counter() - started

    labels = run_labels(config, manifest)
    started = time.perf_counter()
    frame, pooled = pooled_features(config, manifest, encoders["speech"].cache_id, "speech")
    y = np.array([labels.index(label) for label in frame["label"]])
    probe = probe_loso(pooled, y, frame["fold"].astype(int).to_numpy(), frame["speaker"].to_numpy())
    probe_scores = metrics_by_group(y.tolist(), probe.tolist(), frame["corpus"].tolist(), labels)
    probe_seconds = time.perf_counter() - started

    started = time.perf_counter()
    default_scores = {}
    for corpus in sorted(frame["corpus"].unique()):
        if corpus != "emodb":
            default_scores[corpus] = evaluate_on_corpus(
                EMODB_ONLY, single_corpus_config(config, manifest, corpus)
            )
    default_seconds = time.perf_counter() - started

    counts = frame.groupby("corpus")["label"].agg(
        lambda s: f"{len(s)} clips, {s.nunique()} classes"
    )
    body = header(command_line()) + (
        f"- {config.name}: {', '.join(f'{c} ({n})' for c, n in counts.items())}; classes "
        f"{', '.join(labels)}\n"
        f"- seconds: extraction {extract_seconds:.0f} (0 when cached), Crab crossval "
        f"{crab_seconds:.0f}, "
        f"probe {probe_seconds:.0f}, default model on the other corpora {default_seconds:.0f}\n\n"
        "UAR on the held-out corpus's own classes (the models never saw a clip of it):\n\n"
        "| held-out corpus | EmoDB-only model (crabser/emodb_speech) | multi-corpus Crab (other "
        "three) | probe (other three) | multi / EmoDB-only |\n"
        "|---|---|---|---|---|\n"
    )
    for corpus, crab in summary["per_corpus"].items():
        emodb_only = default_scores.get(corpus)
        ratio = f"{crab['uar'] / emodb_only['uar']:.2f}" if emodb_only else ""
        emodb_cell = f"{emodb_only['uar']:.4f}" if emodb_only else "(trained on it)"
        body += (
            f"| {corpus} | {emodb_cell} | {crab['uar']:.4f} | {probe_scores[corpus]['uar']:.4f} | "
            f"{ratio} |\n"
        )
    write_section("Leave one corpus out: EmoDB, EMOVO, ASED, URDU", body)
    print(body)
    print(
        json.dumps(
            {
                "crab": summary["per_corpus"],
                "probe": probe_scores,
                "default": {c: m["uar"] for c, m in default_scores.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
