"""Four corpora, left out one at a time: which Whisper tiny.en hidden states carry emotion across
corpora, with the choice made without the held-out corpus.

Features: each hidden state of the embedded Whisper tiny.en (PyTorch, each clip's own length),
pooled over time (mean and standard deviation per dimension), of every clip of
``configs/multicorpus.yaml`` (its corpora and label map). Candidates: each hidden state alone and
a few concatenations of neighbouring ones. Probe: the features standardised, class-balanced
logistic regression (C = 1, fixed: a grid would multiply the nested runs below by its size).

- outer table: each candidate trained on three corpora, scored on the fourth (UAR on that corpus's
  own classes; a class it lacks that the probe answers counts as an error);
- nested choice: for each held-out corpus, the candidate with the best mean UAR when each of the
  *other three* is left out in turn (trained on the remaining two) is chosen, and its outer score
  reported. The held-out corpus never informs its own row's choice, so this is the validation
  signal for the multi-corpus model's ``speech.layer``, not the outer table.

The features come from the feature cache of ``speech.layer: all`` (what a multi-corpus run with
``-o speech.layer=all`` extracts; about 4 GB at float32 for the four corpora).

Usage (from the repository root): python -m benchmarks.multicorpus_layers [--quick]
(``--quick``: 40 clips per corpus, in runs/quick: a smoke run, not the benchmark.)"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import (
    command_line,
    header,
    prepared_corpora,
    quick_overrides,
    write_section,
)
from benchmarks.whisper_layers import cached_layer_statistics
from crabser.config import load_config
from crabser.evaluation.metrics import compute_metrics
from crabser.runs import run_labels

SECTION = "Leave one corpus out: which Whisper layers, chosen without the held-out corpus"
#: the candidates: hidden states (0 = input embeddings, 4 = output) fed to the probe together
CANDIDATES = {
    "0": [0],
    "1": [1],
    "2": [2],
    "3": [3],
    "4": [4],
    "1+2": [1, 2],
    "2+3": [2, 3],
    "1+2+3": [1, 2, 3],
    "0-4": [0, 1, 2, 3, 4],
}


def probe_score(
    features: np.ndarray, labels: np.ndarray, corpora: np.ndarray, train: list[str], test: str
) -> float:
    """UAR on corpus ``test`` (its own classes; others it is answered count as errors) of the
    standardised, class-balanced logistic regression trained on the corpora ``train``; ``labels``
    are class indices."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fitted = np.isin(corpora, train)
    scored = corpora == test
    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced")
    )
    model.fit(features[fitted], labels[fitted])
    classes = range(int(labels.max()) + 1)
    metrics = compute_metrics(
        labels[scored], model.predict(features[scored]), list(map(str, classes))
    )
    return float(metrics["uar"])


def leave_one_out(
    pooled: np.ndarray, labels: np.ndarray, corpora: np.ndarray, names: list[str]
) -> dict[tuple[str, str], float]:
    """``(held-out corpus, candidate) -> UAR`` with the other corpora of ``names`` trained on."""
    return {
        (held_out, candidate): probe_score(
            pooled[:, layers].reshape(len(pooled), -1),
            labels,
            corpora,
            [c for c in names if c != held_out],
            held_out,
        )
        for held_out in names
        for candidate, layers in CANDIDATES.items()
    }


def nested_choice(
    pooled: np.ndarray, labels: np.ndarray, corpora: np.ndarray, names: list[str]
) -> dict[str, tuple[str, dict[str, float]]]:
    """For each held-out corpus, the candidate with the best mean UAR over the leave-one-out of
    the other corpora alone, with those inner means."""
    chosen = {}
    for held_out in names:
        rest = [c for c in names if c != held_out]
        inner = leave_one_out(pooled, labels, corpora, rest)
        means = {k: float(np.mean([inner[(c, k)] for c in rest])) for k in CANDIDATES}
        chosen[held_out] = (max(means, key=lambda k: means[k]), means)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/multicorpus.yaml")
    parser.add_argument("--quick", action="store_true", help="40 clips per corpus: a smoke run")
    args = parser.parse_args()
    overrides = [*quick_overrides(args.quick), "speech.layer=all", "name=multicorpus_layers"]
    config = load_config(args.config, overrides)
    started = time.perf_counter()  # prepared_corpora extracts what the cache lacks
    manifest, encoders = prepared_corpora(config, args.quick)
    extract_seconds = time.perf_counter() - started
    pooled, megabytes = cached_layer_statistics(config, manifest, encoders["speech"].cache_id)
    classes = run_labels(config, manifest)
    labels = np.array([classes.index(label) for label in manifest.frame["label"]])
    corpora = manifest.frame["corpus"].to_numpy()
    names = sorted(set(corpora))

    started = time.perf_counter()
    outer = leave_one_out(pooled, labels, corpora, names)
    chosen = nested_choice(pooled, labels, corpora, names)
    probe_seconds = time.perf_counter() - started

    lines = [
        "| held-out corpus | " + " | ".join(f"states {k}" for k in CANDIDATES) + " |",
        "|---" * (len(CANDIDATES) + 1) + "|",
    ]
    for held_out in names:
        cells = []
        for k in CANDIDATES:
            mark = "**" if chosen[held_out][0] == k else ""
            cells.append(f"{mark}{outer[(held_out, k)]:.3f}{mark}")
        lines.append(f"| {held_out} | " + " | ".join(cells) + " |")
    inner_lines = [
        (
            "| held-out corpus | chosen | its inner mean | state 2's inner mean "
            "| chosen, held out | state 2, held out |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for held_out in names:
        best, means = chosen[held_out]
        inner_lines.append(
            f"| {held_out} | {best} | {means[best]:.3f} | {means['2']:.3f} "
            f"| {outer[(held_out, best)]:.3f} | {outer[(held_out, '2')]:.3f} |"
        )
    chosen_mean = np.mean([outer[(c, chosen[c][0])] for c in names])
    layer2_mean = np.mean([outer[(c, "2")] for c in names])
    body = (
        header(command_line())
        + f"- corpora: {', '.join(f'{c} ({int((corpora == c).sum())} clips)' for c in names)}\n"
        + f"- features: every hidden state, {megabytes:.0f} MB in the cache, prepared and "
        + f"extracted in {extract_seconds:.0f} s (reading the corpora only, when cached); "
        + f"probes {probe_seconds:.0f} s\n\n"
        + "Probe UAR on the held-out corpus's own classes, trained on the other three; bold: "
        + "the candidate its nested choice took (without it):\n\n"
        + "\n".join(lines)
        + "\n\nThe nested choice (each of the other three corpora left out in turn, trained on "
        + "the remaining two):\n\n"
        + "\n".join(inner_lines)
        + f"\n\nMean over the held-out corpora: nested choice {chosen_mean:.3f}, hidden state 2 "
        + f"(the shipped models' layer) {layer2_mean:.3f}, "
        + f"ratio **{chosen_mean / layer2_mean:.3f}**.\n"
    )
    write_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
