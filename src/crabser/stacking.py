"""``crabser stack``: StackingSER as a workflow (../shared/papers/stacking-ser.md).

A stacking file (``configs/stacking/*.yaml``)::

    name: stacking_emodb
    base: configs/demo.yaml              # a run config with a train / val / test split
    overrides: [train.epochs=12]
    models:                              # base models: name -> overrides of the base bimodal: []
      trimodal: ["model.modalities=[speech, text, paralinguistic]"]
    fit_on: train                        # the split the forest learns from (train: the paper)
    forest: {trees: 200, max_depth: 8, min_samples_leaf: 10, min_samples_split: 10, folds: 5}

Each base model is an ordinary run (``<output_dir>/<name>/<model>``; a finished one is reused).
Their logits on ``fit_on`` (a class-balanced subset) train k random forests
(:class:`crabser.evaluation.stacking.StackedForest`); the stack is scored on val and test beside
every base model, with the balanced bootstrap Macro-F1 (100 class-balanced subsets). Outputs in
``<output_dir>/<name>``: ``stack.json`` (base runs, labels, metrics), ``stack.joblib`` (the
forests), ``stacking.md``. ``crabser predict --run <output_dir>/<name>`` uses the stack like a
single model. ``fit_on: val`` fits the forest on held-out logits instead (base models are
confident on their own training data); a choice to measure, not assume. A base config with
``data.protocol: folds`` gives a speaker-independent cross-validated stack: one set of base runs
and one stack per fold (``<name>/fold<k>/<model>``), scored on all folds' predictions pooled.
``--jobs N`` trains N base runs (models x folds) side by
side once every feature is extracted, as ``crabser crossval --jobs`` does with folds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from crabser.config import RunConfig, load_config, read_yaml_file, validated
from crabser.errors import ConfigError, CrabserError
from crabser.evaluation.stacking import ForestSettings, StackedForest
from crabser.io import atomic_path, json_text

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class ForestConfig(BaseModel):
    """The random forest meta-classifier (StackingSER's settings by default)."""

    model_config = ConfigDict(extra="forbid")
    trees: int = 200
    max_depth: int = 8
    criterion: Literal["gini", "entropy", "log_loss"] = "gini"
    min_samples_leaf: int = 10
    min_samples_split: int = 10
    folds: int = 5
    #: class-balanced subset size per class (None = the smallest class)
    per_class: int | None = None
    seed: int = 0


class StackConfig(BaseModel):
    """Base models over one run config, and how to stack them."""

    model_config = ConfigDict(extra="forbid")
    name: str
    base: str
    overrides: list[str] = []
    models: dict[str, list[str]]
    fit_on: Literal["train", "val"] = "train"
    forest: ForestConfig = ForestConfig()
    bootstrap_subsets: int = 100


def load_stack_config(path: str | Path) -> StackConfig:
    """Read and check a stacking file."""
    path = Path(path)
    stack = validated(StackConfig, read_yaml_file(path, "stacking file"), path)
    if len(stack.models) < 2:
        raise ConfigError(f"{path}: stacking needs at least two base models")
    return stack


def base_config(
    stack: StackConfig, model: str, overrides: list[str] | None = None, fold: int | None = None
) -> RunConfig:
    """The run config of one base model (of one fold when the base config uses folds)."""
    name = f"{stack.name}/{model}" if fold is None else f"{stack.name}/fold{fold}/{model}"
    config = load_config(
        stack.base, [*stack.overrides, *(overrides or []), *stack.models[model], f"name={name}"]
    )
    if (
        fold is not None
    ):  # the fold's manifest, written by run_stack, with its train / val / test split
        manifest = str(config.run_dir / "manifest.csv")
        config = config.model_copy(
            update={
                "data": config.data.model_copy(update={"protocol": "given", "manifest": manifest})
            }
        )
    if config.train.refit:
        raise ConfigError(
            f"base model {model!r}: train.refit trains on the validation split, so its val logits "
            "(fit_on: val, "
            "and the val scores of the stack) would be in-sample; set train.refit: false for "
            "stacking"
        )
    return config


def split_logits(
    module, config: RunConfig, manifest, encoders: dict, split: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, logits ``(n, classes)`` and label indices of a split from a run's loaded ``module``."""
    from crabser.training.predict import predict_split

    outputs = predict_split(config, manifest, encoders, module, split)
    return outputs.ids, outputs.logits.numpy(), outputs.labels.numpy()


def _scores(labels: np.ndarray, predictions: np.ndarray, names: list[str], subsets: int) -> dict:
    from crabser.evaluation.bootstrap import balanced_bootstrap
    from crabser.evaluation.metrics import compute_metrics

    metrics = compute_metrics(labels, predictions, names)
    boot = balanced_bootstrap(labels, predictions, n_subsets=subsets)
    return {k: metrics[k] for k in ("war", "uar", "macro_f1")} | {
        "balanced_macro_f1": boot["macro_f1_mean"],
        "balanced_ci": boot["macro_f1_ci"],
    }


def _base_outputs(config: RunConfig, manifest, encoders: dict) -> dict[str, tuple]:
    """A finished base run's logits on every split, from its model (loaded once)."""
    from crabser.training.checkpoint_io import load_module, run_checkpoint

    module = load_module(run_checkpoint(config.run_dir))
    return {split: split_logits(module, config, manifest, encoders, split) for split in SPLITS}


def _aligned(outputs: dict[str, dict[str, tuple]], models: list[str]) -> tuple[dict, dict, dict]:
    """Per split: the utterances every base model scored (ids), their concatenated logits,
    labels."""
    ids, features, truths = {}, {}, {}
    for split in SPLITS:
        common = sorted(set.intersection(*(set(outputs[m][split][0]) for m in models)))
        if not common:
            raise CrabserError(f"no {split} utterance has outputs from every base model")
        columns = []
        for model in models:
            utterances, logits, truth = outputs[model][split]
            index = {u: i for i, u in enumerate(utterances)}
            rows = [index[u] for u in common]
            columns.append(logits[rows])
            truths[split] = truth[rows]
        ids[split], features[split] = common, np.concatenate(columns, axis=1)
    return ids, features, truths


def run_stack(stack: StackConfig, overrides: list[str] | None = None, jobs: int = 1) -> dict:
    """Train (or reuse) the base models, fit the stacked forests, score everything; save the stack.

    With ``data.protocol: folds`` in the base config, every fold gets its base runs and its own
    stack (``<name>/fold<k>``), and the scores are those of all folds' test predictions pooled (val
    scores pooled likewise); such a stack is for evaluation, not for ``predict``. ``jobs`` > 1
    trains that many base runs (models x folds) side by side.
    """
    import joblib

    from crabser import pipeline
    from crabser.crossval import train_and_test_runs
    from crabser.data.protocols import fold_split
    from crabser.runs import git_commit, run_labels

    models = list(stack.models)
    first = load_config(stack.base, [*stack.overrides, *(overrides or [])])
    out = Path(first.output_dir) / stack.name
    encoders = pipeline.EncoderCache()
    folds: list[int | None] = [None]
    if first.data.protocol == "folds":
        manifest = pipeline.prepare(first.model_copy(update={"name": f"{stack.name}/folds"}))
        folds = [int(k) for k in sorted(manifest.frame["fold"].unique())]
    runs: dict[tuple, tuple] = {}  # (fold, model) -> (run config, its manifest)
    labels: list[str] = []  # the classes every base model shares, from the first one
    for fold in folds:
        for model in models:
            config = base_config(stack, model, overrides, fold)
            if fold is None:
                manifest_k = pipeline.prepare(config, resume=True)
            else:
                data = first.data
                manifest_k = fold_split(
                    manifest, fold, data.val_speakers_per_fold, data.seed, data.val_balance
                )
            model_labels = run_labels(config, manifest_k)
            if labels and model_labels != labels:
                raise CrabserError(
                    f"base model {model!r} has classes {model_labels}, the others {labels}"
                )
            labels = model_labels
            if not config.train.finetune:
                pipeline.extract_features(config, manifest_k, encoders(config))
            runs[fold, model] = (config, manifest_k)

    def report(key: tuple) -> None:
        fold, model = key
        log.info(
            "base model %s%s trained and tested (or read back)",
            model,
            "" if fold is None else f" (fold {fold})",
        )

    train_and_test_runs(runs, encoders, jobs, on_done=report)
    pooled: dict[str, dict[str, list]] = {
        split: {"truth": [], **{m: [] for m in [*models, "stack"]}} for split in ("val", "test")
    }
    forests, oof = [], []
    for fold in folds:
        outputs = {}
        for model in models:
            config, manifest_k = runs[fold, model]
            outputs[model] = _base_outputs(config, manifest_k, encoders(config))
        _, features, truths = _aligned(outputs, models)
        forest = StackedForest(ForestSettings(**stack.forest.model_dump()), num_classes=len(labels))
        forest.fit(features[stack.fit_on], truths[stack.fit_on])
        forests.append(forest)
        oof.append(forest.out_of_fold_macro_f1)
        width = len(labels)
        for split in ("val", "test"):
            pooled[split]["truth"].append(truths[split])
            for k, model in enumerate(models):
                pooled[split][model].append(
                    features[split][:, k * width : (k + 1) * width].argmax(1)
                )
            pooled[split]["stack"].append(forest.predict_proba(features[split]).argmax(1))
    table = {
        name: {
            split: _scores(
                np.concatenate(pooled[split]["truth"]),
                np.concatenate(pooled[split][name]),
                labels,
                stack.bootstrap_subsets,
            )
            for split in ("val", "test")
        }
        for name in [*models, "stack"]
    }
    out.mkdir(parents=True, exist_ok=True)
    if folds == [None]:
        with atomic_path(out / "stack.joblib") as tmp:
            joblib.dump(forests[0], tmp)
    summary = {
        "labels": labels,
        "folder": str(out),
        "models": {m: str(runs[folds[0], m][0].run_dir) for m in models},
        "folds": len(folds) if folds != [None] else None,
        "fit_on": stack.fit_on,
        "forest": asdict(forests[0].settings),
        "out_of_fold_macro_f1": float(np.mean(oof)),
        "metrics": table,
        "git_commit": git_commit(),
    }
    with atomic_path(out / "stack.json") as tmp:
        tmp.write_text(json_text(summary, indent=2))
    with atomic_path(out / "stacking.md") as tmp:
        tmp.write_text(stacking_markdown(table))
    return summary


def stacking_markdown(table: dict) -> str:
    """Base models and the stack: Macro-F1 and balanced-bootstrap Macro-F1 on val and test, UAR on
    test."""
    lines = [
        (
            "| model | val Macro-F1 | val balanced F1 [95 % interval] | test Macro-F1 "
            "| test balanced F1 [95 % interval] | test UAR |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for model, scores in table.items():
        cells = []
        for split in ("val", "test"):
            s = scores[split]
            cells += [
                f"{s['macro_f1']:.4f}",
                (
                    f"{s['balanced_macro_f1']:.4f} [{s['balanced_ci'][0]:.3f}, "
                    f"{s['balanced_ci'][1]:.3f}]"
                ),
            ]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {scores['test']['uar']:.4f} |")
    return "\n".join(lines) + "\n"
