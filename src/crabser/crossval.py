"""Cross-validation and groups of runs: one model per fold (``data.protocol: folds``), trained and
tested side by side (:mod:`crabser.parallel`), summarised per fold, as mean ± std and pooled over
the folds' test predictions; per corpus too in a multi-corpus run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from crabser.config import RunConfig
from crabser.data.manifest import Manifest
from crabser.data.protocols import fold_split
from crabser.errors import CrabserError
from crabser.evaluation.metrics import compute_metrics, metrics_by_group
from crabser.evaluation.report import write_report
from crabser.features.encoders import Encoder
from crabser.io import atomic_path
from crabser.parallel import Key
from crabser.pipeline import evaluate
from crabser.runs import RunFolder, git_commit, require_same_settings, run_labels
from crabser.training.fit import train
from crabser.training.loaders import corpus_of


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


def train_and_test(config: RunConfig, manifest: Manifest, encoders: dict[str, Encoder]) -> None:
    """Train a run (resuming) and score its model on the test split."""
    train(config, manifest, encoders, resume=True)
    evaluate(config, manifest, encoders, "test")


def train_and_test_runs(
    runs: Mapping[Key, tuple[RunConfig, Manifest]],
    encoders_of: Callable[[RunConfig], dict],
    jobs: int = 1,
    on_done: Callable[[Key], None] | None = None,
) -> None:
    """Train and test every run (key -> its config and split manifest, features extracted) whose
    metrics are not on disk yet, ``jobs`` side by side (:mod:`crabser.parallel`); every run goes on
    even if one fails. ``on_done(key)`` for each run read back, then after each one trained.
    ``encoders_of(config)``: the loaded encoders of a run's config."""
    from crabser.parallel import encoders_for_jobs, jobs_for, run_jobs

    todo = [
        key
        for key, (config, _) in runs.items()
        if not RunFolder.of(config).metrics_file().is_file()
    ]
    for key, (config, _) in runs.items():
        if key not in todo:
            require_same_settings(config)
    jobs = jobs_for(jobs, len(todo))
    pending = {}
    for key in todo:
        config, manifest = runs[key]
        job_config = for_job(config, jobs)  # the saved config.yaml names the threads it ran with
        RunFolder.of(job_config).save_inputs(job_config, manifest, resume=True)
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

    ``manifest`` comes from :func:`crabser.pipeline.prepare` (with its ``fold`` column) and its
    features must be extracted (:func:`crabser.pipeline.extract_features`). ``jobs`` > 1 trains
    that many folds side by side (:mod:`crabser.parallel`); every fold runs even if one fails.

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
        return RunFolder.of(configs[fold]).read_metrics()

    runs = {
        fold: (
            configs[fold],
            fold_split(
                manifest,
                fold,
                config.data.val_speakers_per_fold,
                config.data.seed,
                config.data.val_balance,
            ),
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
    RunFolder.of(config).write_record("crossval", summary)
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
