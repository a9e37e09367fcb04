"""``crabser stack``: StackingSER as a workflow (../shared/papers/stacking-ser.md).

A stacking file (``configs/stacking/*.yaml``)::

    name: stacking_emodb
    base: configs/demo.yaml              # a run config with a train / val / test split
    overrides: [train.epochs=12]
    models:                              # base models: name -> overrides of the base
      bimodal: []
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
confident on their own training data); a choice to measure, not assume.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from crabser.config import RunConfig, load_config
from crabser.errors import ConfigError, CrabserError
from crabser.evaluation.stacking import ForestSettings, StackedForest
from crabser.io import atomic_path

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
    per_class: int | None = None  #: class-balanced subset size per class (None = the smallest class)
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
    if not path.is_file():
        raise ConfigError(f"{path}: stacking file not found")
    try:
        stack = StackConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as error:
        raise ConfigError(f"{path}: {error}") from None
    if len(stack.models) < 2:
        raise ConfigError(f"{path}: stacking needs at least two base models")
    return stack


def base_config(stack: StackConfig, model: str, overrides: list[str] | None = None) -> RunConfig:
    """The run config of one base model."""
    config = load_config(stack.base, [*stack.overrides, *(overrides or []), *stack.models[model], f"name={stack.name}/{model}"])
    if config.data.protocol == "folds":
        raise ConfigError("stacking needs one train / val / test split: use data.protocol speaker_holdout or given")
    return config


def split_logits(config: RunConfig, manifest, encoders: dict, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, logits ``(n, classes)`` and label indices of a split from a run's best checkpoint."""
    from crabser.pipeline import load_module, split_loader

    module = load_module(config.run_dir / "checkpoints" / "best.ckpt")
    ids, logits, labels = [], [], []
    with torch.no_grad():
        for batch in split_loader(config, manifest, encoders, module, split):
            logits.append(module(batch))
            labels.append(batch["labels"])
            ids.extend(batch["ids"])
    return ids, torch.cat(logits).numpy(), torch.cat(labels).numpy()


def _scores(labels: np.ndarray, predictions: np.ndarray, names: list[str], subsets: int) -> dict:
    from crabser.evaluation.bootstrap import balanced_bootstrap
    from crabser.evaluation.metrics import compute_metrics

    metrics = compute_metrics(labels, predictions, names)
    boot = balanced_bootstrap(labels, predictions, n_subsets=subsets)
    return {k: metrics[k] for k in ("war", "uar", "macro_f1")} | {"balanced_macro_f1": boot["macro_f1_mean"], "balanced_ci": boot["macro_f1_ci"]}


def run_stack(stack: StackConfig, overrides: list[str] | None = None) -> dict:
    """Train (or reuse) the base models, fit the stacked forest, score everything; save the stack."""
    import joblib

    from crabser import pipeline

    outputs: dict[str, dict[str, tuple]] = {}
    runs, labels = {}, None
    for model in stack.models:
        config = base_config(stack, model, overrides)
        manifest = pipeline.prepare(config)
        encoders = {} if config.train.finetune else pipeline.build_encoders(config)
        if not config.train.finetune:
            pipeline.extract_features(config, manifest, encoders)
        if not (config.run_dir / "report" / "test_metrics.json").is_file():
            pipeline.train(config, manifest, encoders, resume=True)
            pipeline.evaluate(config, manifest, encoders, "test")
        outputs[model] = {split: split_logits(config, manifest, encoders, split) for split in SPLITS}
        runs[model] = str(config.run_dir)
        model_labels = pipeline.run_labels(config, manifest)
        if labels is not None and model_labels != labels:
            raise CrabserError(f"base model {model!r} has classes {model_labels}, the others {labels}")
        labels = model_labels
    features, truths = {}, {}
    for split in SPLITS:  # utterances every base model has, in one order
        common = sorted(set.intersection(*(set(outputs[m][split][0]) for m in stack.models)))
        if not common:
            raise CrabserError(f"no {split} utterance has outputs from every base model")
        columns = []
        for model in stack.models:
            ids, logits, truth = outputs[model][split]
            index = {utterance: i for i, utterance in enumerate(ids)}
            rows = [index[u] for u in common]
            columns.append(logits[rows])
            truths[split] = truth[rows]
        features[split] = np.concatenate(columns, axis=1)
    forest = StackedForest(ForestSettings(**stack.forest.model_dump()), num_classes=len(labels))
    forest.fit(features[stack.fit_on], truths[stack.fit_on])
    width = len(labels)
    table = {}
    for k, model in enumerate(stack.models):
        table[model] = {
            split: _scores(truths[split], features[split][:, k * width : (k + 1) * width].argmax(1), labels, stack.bootstrap_subsets)
            for split in ("val", "test")
        }
    table["stack"] = {
        split: _scores(truths[split], forest.predict_proba(features[split]).argmax(1), labels, stack.bootstrap_subsets)
        for split in ("val", "test")
    }
    out = Path(load_config(stack.base, [*stack.overrides, *(overrides or [])]).output_dir) / stack.name
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "stack.joblib") as tmp:
        joblib.dump(forest, tmp)
    summary = {
        "labels": labels, "models": runs, "fit_on": stack.fit_on, "forest": asdict(forest.settings),
        "out_of_fold_macro_f1": forest.out_of_fold_macro_f1, "metrics": table, "git_commit": pipeline.git_commit(),
    }
    with atomic_path(out / "stack.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    with atomic_path(out / "stacking.md") as tmp:
        tmp.write_text(stacking_markdown(table))
    return summary


def stacking_markdown(table: dict) -> str:
    """Base models and the stack: Macro-F1 and balanced-bootstrap Macro-F1 on val and test, UAR on test."""
    lines = [
        "| model | val Macro-F1 | val balanced F1 [95 % interval] | test Macro-F1 | test balanced F1 [95 % interval] | test UAR |",
        "|---|---|---|---|---|---|",
    ]
    for model, scores in table.items():
        cells = []
        for split in ("val", "test"):
            s = scores[split]
            cells += [f"{s['macro_f1']:.4f}", f"{s['balanced_macro_f1']:.4f} [{s['balanced_ci'][0]:.3f}, {s['balanced_ci'][1]:.3f}]"]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {scores['test']['uar']:.4f} |")
    return "\n".join(lines) + "\n"


def is_stack(run_dir: str | Path) -> bool:
    """Whether a folder holds a stacked ensemble (stack.json)."""
    return (Path(run_dir) / "stack.json").is_file()
