"""Four corpora, four languages: leave-one-corpus-out with the multi-corpus model, the EmoDB-only
default model and a linear probe, each scored on the held-out corpus's own classes, under two
protocols: single clips (each clip on its own) and adapted (each held-out speaker's clips
normalised with that speaker's statistics; for speaker-normalised models, ``model.normalize_per``).

- multi-corpus model: ``crabser crossval -c configs/multicorpus.yaml`` (fold_by corpus): each
  corpus is scored by a Crab trained on the other three; a speaker-normalised config's crossval is
  the adapted column, and its folds' models through ``Recognizer`` without ``adapt_to`` the single
  clips (Whisper run again on the audio: a few minutes);
- EmoDB-only: the packaged EmoDB model (crabser/emodb_speech: all of EmoDB, 7 classes) through
  ``crabser evaluate --corpus`` (adapted) and ``--no-adapt`` (single clips) on each other corpus,
  with the same label map (its extra class, boredom, stays a possible error, as it is for a user);
- probe: mean+std of the same cached Whisper features, standardised, class-balanced logistic
  regression trained on the other three corpora (C by speaker-grouped 3-fold CV on them); with a
  speaker-normalised config, also on each speaker's vectors standardised with its own statistics.

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
    per_speaker,
    pooled_features,
    quick_overrides,
    quick_subset,
    write_section,
)
from benchmarks.crab_head import mean_best_validation
from benchmarks.whisper_layers import probe_loso
from crabser import pipeline
from crabser.config import load_config
from crabser.cross_corpus import evaluate_on_corpus, single_clip_metrics
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
    adapts = config.model.normalize_per == "speaker"
    started = time.perf_counter()
    frame, pooled = pooled_features(config, manifest, encoders["speech"].cache_id, "speech")
    y = np.array([labels.index(label) for label in frame["label"]])
    folds, corpora = frame["fold"].astype(int).to_numpy(), frame["corpus"].tolist()
    speakers = frame["speaker"].astype(str).to_numpy()
    probe = probe_loso(pooled, y, folds, speakers)
    probe_scores = metrics_by_group(y.tolist(), probe.tolist(), corpora, labels)
    probe_adapted = {}
    if adapts:  # the probe given the same speaker normalisation
        probe = probe_loso(per_speaker(pooled, speakers), y, folds, speakers)
        probe_adapted = metrics_by_group(y.tolist(), probe.tolist(), corpora, labels)
    probe_seconds = time.perf_counter() - started

    started = time.perf_counter()
    single, adapted = {}, {}  # the EmoDB-only model: each clip on its own; adapted per speaker
    for corpus in sorted(frame["corpus"].unique()):
        if corpus != "emodb":
            corpus_config = single_corpus_config(config, manifest, corpus)
            single[corpus] = evaluate_on_corpus(EMODB_ONLY, corpus_config, adapt=False)["uar"]
            adapted[corpus] = evaluate_on_corpus(EMODB_ONLY, corpus_config)["uar"]
    default_seconds = time.perf_counter() - started
    started = time.perf_counter()
    crab_adapted = summary["per_corpus"] if adapts else {}
    crab_single = (
        single_clip_metrics(config, labels)["per_corpus"] if adapts else summary["per_corpus"]
    )
    unadapted_seconds = time.perf_counter() - started

    counts = frame.groupby("corpus")["label"].agg(
        lambda s: f"{len(s)} clips, {s.nunique()} classes"
    )
    body = header(command_line()) + (
        f"- {config.name}: {', '.join(f'{c} ({n})' for c, n in counts.items())}; classes "
        f"{', '.join(labels)}\n"
        f"- multi-corpus Crab: {config.model.normalize_per or 'no'} normalisation "
        f"(model.normalize_per); mean best validation UAR of its folds "
        f"{mean_best_validation(config, manifest):.4f}\n"
        f"- seconds: extraction {extract_seconds:.0f} (0 when cached), Crab crossval "
        f"{crab_seconds:.0f}, its folds' models on single clips {unadapted_seconds:.0f}, "
        f"probe {probe_seconds:.0f}, EmoDB-only model on the other corpora {default_seconds:.0f}"
        "\n\n"
        "UAR on the held-out corpus's own classes (the models never saw a clip of it). Single "
        "clips: each clip on its own (a speaker-normalised model uses its training speakers' "
        "statistics), what `crabser predict FILE` gives. Adapted: each held-out speaker's "
        "clips normalised with that speaker's own statistics (its audio, never its labels), "
        "what `crabser predict --adapt` and `crabser evaluate --corpus` give.\n\n"
        "| held-out corpus | EmoDB-only, single clips | multi-corpus Crab, single clips "
        "| probe | multi / EmoDB-only, single | EmoDB-only, adapted | multi-corpus Crab, adapted "
        "| probe, per speaker | multi / EmoDB-only, adapted |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )

    def cell(scores: dict, corpus: str) -> str:
        value = scores.get(corpus)
        return "" if value is None else f"{value if isinstance(value, float) else value['uar']:.4f}"

    def ratio(multi: dict, emodb_only: dict, corpus: str) -> str:
        if corpus not in multi or corpus not in emodb_only:
            return ""
        return f"{multi[corpus]['uar'] / emodb_only[corpus]:.2f}"

    for corpus in summary["per_corpus"]:
        trained = "(trained on it)" if corpus == "emodb" else ""
        body += (
            f"| {corpus} | {cell(single, corpus) or trained} | {cell(crab_single, corpus)} "
            f"| {cell(probe_scores, corpus)} | {ratio(crab_single, single, corpus)} "
            f"| {cell(adapted, corpus) or trained} | {cell(crab_adapted, corpus)} "
            f"| {cell(probe_adapted, corpus)} | {ratio(crab_adapted, adapted, corpus)} |\n"
        )
    write_section("Leave one corpus out: EmoDB, EMOVO, ASED, URDU", body)
    print(body)
    print(
        json.dumps(
            {
                "crab_single": crab_single,
                "crab_adapted": crab_adapted,
                "probe": probe_scores,
                "probe_per_speaker": probe_adapted,
                "emodb_only_single": single,
                "emodb_only_adapted": adapted,
            }
        )
    )


if __name__ == "__main__":
    main()
