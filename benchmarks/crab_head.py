"""EmoDB leave-one-speaker-out: settings of the Crab head against the linear probe on the same
features and folds (issue 18's target: Crab >= the best-layer probe + .02).

Baseline, in the same run: the probe of ``benchmarks.whisper_layers`` (mean and std over time of
the default model's speech features, Whisper tiny.en hidden state 2 on each clip's own length,
standardised, class-balanced logistic regression with C chosen inside each training fold by
speaker-grouped CV), and the same probe on speaker-normalised vectors (each speaker's, the held-out
one's too, standardised with its own mean and std: its audio, never its labels).
Rows: ``crabser crossval -c configs/default_model.yaml`` (early stopping with patience 5, refit on
training + validation speakers) with each variant's overrides. Each Crab row gives the mean best
validation UAR of its folds (the folds' validation speakers: what chooses a setting) beside the
pooled UAR on the held-out speakers (reported, never used to choose); a row with
``model.normalize_per`` also gives the pooled UAR of its folds' models through ``Recognizer``
without ``adapt_to`` (the training speakers' statistics: one clip of a stranger).
Finished folds are read back (runs/crab_head_<variant>), so a variant added later costs only its
own folds.

Usage (from the repository root):
    python -m benchmarks.crab_head [--variant NAME=OVERRIDE[;OVERRIDE...]] ... [--jobs 2] [--quick]
Without ``--variant``: the default model's settings (speaker-normalised) and the same without
speaker normalisation.
``--quick``: 4 speakers in 2 folds, 2 epochs, in runs/quick (a smoke run, not the benchmark).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import command_line, header, per_speaker, pooled_features, write_section
from benchmarks.whisper_layers import crab_loso, loso_overrides, probe_loso
from crabser import pipeline
from crabser.config import load_config
from crabser.cross_corpus import single_clip_metrics
from crabser.crossval import fold_config
from crabser.evaluation.metrics import compute_metrics
from crabser.runs import RunFolder, run_labels

CONFIG = "configs/default_model.yaml"
VARIANTS = {
    "default": [],
    "without_speaker_normalisation": ["model.normalize_per=null"],
}


def mean_best_validation(config, manifest) -> float:
    """Mean over the folds of each fold's best validation UAR (its validation speakers)."""
    folds = sorted(manifest.frame["fold"].astype(int).unique())
    return float(
        np.mean([RunFolder.of(fold_config(config, int(f))).best_validation()[0] for f in folds])
    )


def parse_variants(items: list[str]) -> dict[str, list[str]]:
    """``NAME=a=1;b=2`` -> ``{NAME: ["a=1", "b=2"]}``; none given -> :data:`VARIANTS`."""
    variants = {}
    for item in items:
        name, _, overrides = item.partition("=")
        variants[name] = [o for o in overrides.split(";") if o]
    return variants or dict(VARIANTS)


def seed_summary(rows: list[tuple], probe_uar: float, speaker_probe_uar: float) -> str:
    """Lines for each recipe run on several seeds (variants whose overrides differ only in
    ``train.seed``): its pooled UAR over the seeds, and its margin over both probes."""
    recipes: dict[tuple[str, ...], list[float]] = {}
    for _, overrides, _, metrics, _, _ in rows:
        recipe = tuple(o for o in overrides if not o.startswith("train.seed="))
        recipes.setdefault(recipe, []).append(metrics["uar"])
    lines = [
        f"- {' '.join(recipe) or '(configs/default_model.yaml)'}, {len(uars)} seeds: pooled UAR "
        f"{np.mean(uars):.4f} ± {np.std(uars):.4f}; minus the probe "
        f"{np.mean(uars) - probe_uar:+.4f} (each seed "
        f"{', '.join(f'{u - probe_uar:+.4f}' for u in uars)}); minus the "
        f"speaker-normalised probe {np.mean(uars) - speaker_probe_uar:+.4f}\n"
        for recipe, uars in recipes.items()
        if len(uars) > 1
    ]
    return "\nOver seeds:\n\n" + "".join(lines) if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDE[;...]")
    parser.add_argument("--jobs", type=int, default=2, help="folds trained side by side")
    parser.add_argument("--quick", action="store_true", help="2 folds, 2 epochs, in runs/quick")
    args = parser.parse_args()
    base = [*loso_overrides(args.quick), "train.patience=5", "train.progress=false"]
    config = load_config(CONFIG, [*base, "name=crab_head_probe"])
    manifest = pipeline.prepare(config)
    encoders = pipeline.build_encoders(config)
    pipeline.extract_features(config, manifest, encoders)
    labels = run_labels(config, manifest)
    frame, pooled = pooled_features(config, manifest, encoders["speech"].cache_id, "speech")
    y = np.array([labels.index(label) for label in frame["label"]])
    started = time.perf_counter()
    predicted = probe_loso(
        pooled, y, frame["fold"].astype(int).to_numpy(), frame["speaker"].to_numpy()
    )
    probe = compute_metrics(y.tolist(), predicted.tolist(), labels)
    probe_seconds = time.perf_counter() - started
    speakers = frame["speaker"].astype(str).to_numpy()
    predicted = probe_loso(
        per_speaker(pooled, speakers), y, frame["fold"].astype(int).to_numpy(), speakers
    )
    probe_per_speaker = compute_metrics(y.tolist(), predicted.tolist(), labels)

    rows = []
    for name, overrides in parse_variants(args.variant).items():
        run = [*base, *overrides, f"name=crab_head_{name}"]
        metrics, seconds = crab_loso(CONFIG, run, args.jobs)
        run_config = load_config(CONFIG, run)
        unadapted = None
        if run_config.model.normalize_per:
            unadapted = single_clip_metrics(run_config, labels)["uar"]
        validation = mean_best_validation(run_config, manifest)
        rows.append((name, overrides, validation, metrics, unadapted, seconds))

    body = header(command_line()) + (
        f"- protocol: {CONFIG}'s folds ({frame['fold'].nunique()}, by speaker), {len(frame)} "
        "clips pooled; "
        "Crab with early stopping (patience 5) on each fold's validation speakers, then refitted "
        "on training + validation speakers; seed 0 unless a row sets train.seed\n"
        f"- probe: {probe_seconds:.0f} s\n\n"
        "| system | overrides | mean best val UAR | pooled UAR | WAR | Macro-F1 | UAR - probe "
        "| pooled UAR, not adapted | seconds |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| probe (mean+std, logistic regression) | | | {probe['uar']:.4f} | {probe['war']:.4f} "
        f"| {probe['macro_f1']:.4f} | | | {probe_seconds:.0f} |\n"
        "| probe, each speaker's vectors standardised with their own mean and std | | "
        f"| {probe_per_speaker['uar']:.4f} | {probe_per_speaker['war']:.4f} "
        f"| {probe_per_speaker['macro_f1']:.4f} | "
        f"{probe_per_speaker['uar'] - probe['uar']:+.4f} | | |\n"
    )
    for name, overrides, validation, m, unadapted, seconds in rows:
        body += (
            f"| Crab, {name} | {' '.join(overrides) or '(configs/default_model.yaml)'} "
            f"| {validation:.4f} | {m['uar']:.4f} | {m['war']:.4f} | {m['macro_f1']:.4f} "
            f"| {m['uar'] - probe['uar']:+.4f} "
            f"| {'' if unadapted is None else f'{unadapted:.4f}'} | {seconds:.0f} |\n"
        )
    body += seed_summary(rows, probe["uar"], probe_per_speaker["uar"])
    best = max(rows, key=lambda row: row[2])  # chosen on validation speakers only
    body += (
        f"\nChosen on validation: Crab, {best[0]}; its pooled UAR / the probe's = "
        f"**{best[3]['uar'] / probe['uar']:.3f}** ({best[3]['uar'] - probe['uar']:+.4f}).\n"
    )
    write_section("Crab head against the probe on EmoDB leave-one-speaker-out", body)
    print(body)


if __name__ == "__main__":
    main()
