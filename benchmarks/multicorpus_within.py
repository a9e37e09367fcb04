"""Does pooling corpora cost in-corpus accuracy? Speaker-independent folds over the four corpora
together: the multi-corpus model (``configs/multicorpus.yaml`` with ``fold_by: speaker``, 5 folds,
trained on the training speakers of all corpora) next to a model per corpus trained on that corpus's
training speakers alone, on the same folds (each corpus's speakers keep the fold the union gave
them), same recipe; both scored on each corpus's held-out speakers, on its own classes.

Validation speakers per fold: 10 from the union for the multi-corpus model; a tenth of the corpus's
speakers (at least one) for a single-corpus model. A speaker-normalised config
(``model.normalize_per: speaker``) is scored both ways: adapted to each held-out speaker (the
cross-validation) and on single clips (:func:`crabser.cross_corpus.single_clip_metrics`).

Usage (from the repository root): python -m benchmarks.multicorpus_within [--jobs 2] [--folds 5]
[--quick]
(``--quick``: 40 clips per corpus, 2 folds, 2 epochs, in runs/quick: a smoke run, not the
benchmark.)
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import (
    command_line,
    header,
    prepared_corpora,
    quick_overrides,
    write_section,
)
from benchmarks.multicorpus import encoder_training
from crabser.config import load_config
from crabser.cross_corpus import single_clip_metrics
from crabser.crossval import crossval
from crabser.data.manifest import Manifest
from crabser.runs import RunFolder, run_labels

FOLDS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/multicorpus.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="folds trained side by side")
    parser.add_argument("--quick", action="store_true", help="2 epochs: a smoke run")
    parser.add_argument(
        "--folds",
        type=int,
        default=FOLDS,
        help="speaker folds (fewer: cheaper; a fine-tuned recipe costs about (folds - 1) x 33 "
        "min of 2-core CPU for the union and as much again for the single corpora)",
    )
    args = parser.parse_args()
    quick = (
        ["train.epochs=2", "train.progress=false", "data.val_speakers_per_fold=2"]
        if args.quick
        else []
    )
    folds = 2 if args.quick else args.folds
    # named by the folds asked for (a quick run keeps that name, in runs/quick)
    name = "multicorpus_within" if args.folds == FOLDS else f"multicorpus_within_{args.folds}folds"
    union = load_config(
        args.config,
        [
            *quick,
            *quick_overrides(args.quick),
            "data.fold_by=speaker",
            f"data.folds={folds}",
            f"name={name}",
        ],
    )
    manifest, encoders = prepared_corpora(union, args.quick, frozen_features=False)
    started = time.perf_counter()
    pooled = crossval(union, manifest, encoders, jobs=args.jobs)
    adapts = union.model.normalize_per is not None
    single = single_clip_metrics(union, run_labels(union, manifest))["per_corpus"] if adapts else {}
    seconds = {"all four corpora": time.perf_counter() - started}  # single clips included
    alone, alone_single = {}, {}
    for corpus in sorted(manifest.frame["corpus"].unique()):
        subset = Manifest(manifest.frame[manifest.frame["corpus"] == corpus].reset_index(drop=True))
        speakers = subset.frame["speaker"].nunique()
        data = union.data.model_copy(update={"val_speakers_per_fold": max(1, round(speakers / 10))})
        config = union.model_copy(update={"data": data, "name": f"{name}_{corpus}_alone"})
        RunFolder.of(config).save_inputs(config, subset)
        started = time.perf_counter()
        alone[corpus] = crossval(config, subset, encoders, jobs=args.jobs)["pooled"]
        if adapts:
            alone_single[corpus] = single_clip_metrics(config, run_labels(config, subset))
        seconds[corpus] = time.perf_counter() - started

    how = (
        "adapted to each held-out speaker (model.normalize_per: speaker), and on single clips"
        if adapts
        else "no speaker normalisation"
    ) + f"; {encoder_training(union)}"
    body = header(command_line()) + (
        f"- {folds} speaker-independent folds over the union of {', '.join(sorted(alone))} "
        f"({len(manifest.frame)} clips); each corpus's speakers keep their fold in its "
        f"single-corpus runs; {how}\n"
        "- seconds: " + ", ".join(f"{key} {value:.0f}" for key, value in seconds.items()) + "\n\n"
        "UAR on each corpus's held-out speakers, its own classes, pooled over the folds:\n\n"
        "| corpus | trained on that corpus alone | trained on all four | all four / alone "
        + (
            "| alone, single clips | all four, single clips | all four / alone, single clips "
            if adapts
            else ""
        )
        + "|\n|---|---|---|---|"
        + ("---|---|---|" if adapts else "")
        + "\n"
    )
    for corpus, own in alone.items():
        multi = pooled["per_corpus"][corpus]
        ratio = multi["uar"] / own["uar"]
        body += f"| {corpus} | {own['uar']:.4f} | {multi['uar']:.4f} | {ratio:.3f} |"
        if adapts:
            own_single, multi_single = alone_single[corpus]["uar"], single[corpus]["uar"]
            body += f" {own_single:.4f} | {multi_single:.4f} | {multi_single / own_single:.3f} |"
        body += "\n"
    folds_words = (
        "speaker-independent folds" if args.folds == FOLDS else f"{args.folds} speaker folds"
    )
    write_section(f"Within each corpus: one corpus or all four ({folds_words})", body)
    print(body)


if __name__ == "__main__":
    main()
