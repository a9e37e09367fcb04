"""A run's folder, ``<output_dir>/<name>``: what a run starts from and what it leaves behind.

Layout (each file written atomically)::

    config.yaml          the resolved config          git_commit.txt    the code it ran
    manifest.csv         utterances and their split   timings.json      seconds per stage
    extraction_<m>.json  one record per modality      logs/metrics.csv  the training log
    checkpoints/         best.ckpt, last.ckpt, refit.ckpt
    report/              <split>_metrics.json, _predictions.csv, the confusion matrix

:class:`RunFolder` owns these paths; the stages (:mod:`crabser.pipeline`,
:mod:`crabser.training.fit`, :mod:`crabser.crossval`) write through it and the CLI, experiments
and benchmarks read through it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from crabser.config import RunConfig, dump_config, load_run_config
from crabser.data.manifest import Manifest, read_manifest, write_manifest
from crabser.errors import CrabserError
from crabser.io import atomic_path, json_text


def git_commit() -> str:
    """The current git commit of the working directory, or 'unknown'."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data, indent=2))


def run_labels(config: RunConfig, manifest: Manifest) -> list[str]:
    """The class set of a run (config order, or sorted labels of the manifest)."""
    return list(config.data.labels) if config.data.labels else manifest.labels


#: settings a run may have run with otherwise and still be read back or resumed: how it ran
#: (threads, progress bar, whether bad audio stopped it), not what it learnt
HOW_IT_RAN = {"train": {"threads", "progress"}, "data": {"on_error"}}
#: what a resume may change too: ``train.epochs``, to train a run longer (``crabser train --resume
#: -o train.epochs=N``)
RESUME_MAY_CHANGE = {**HOW_IT_RAN, "train": {*HOW_IT_RAN["train"], "epochs"}}
#: the config sections compared: the data a run learnt from (corpus, split, classes) and how
SETTINGS_SECTIONS = ("data", "model", "loss", "train", "speech", "text", "paralinguistic")


def require_same_settings(
    config: RunConfig,
    state: str = "is a finished run",
    may_differ: Mapping[str, set[str]] = HOW_IT_RAN,
) -> None:
    """CrabserError naming the settings in which the run at ``config``'s folder (its config.yaml)
    differs from ``config``, but for those of ``may_differ`` (section -> keys); ``state`` says what
    the run is, in the message. A run read back or resumed must be the run asked for: a changed
    config or default under the same name would otherwise be reported with results it did not
    produce, or continue a fit under settings it was not started with."""
    saved = load_run_config(config.run_dir)
    differ = []
    for section in SETTINGS_SECTIONS:
        old, new = getattr(saved, section).model_dump(), getattr(config, section).model_dump()
        for key in sorted(set(old) | set(new)):
            if key not in may_differ.get(section, set()) and old.get(key) != new.get(key):
                differ.append(f"{section}.{key}: {old.get(key)!r} there, {new.get(key)!r} now")
    if differ:
        raise CrabserError(
            f"{config.run_dir} {state} with other settings ({'; '.join(differ)}): "
            "remove it or give this run another name"
        )


class RunFolder:
    """The files of one run (see the module docstring); ``RunFolder.of(config)`` for a config's."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, config: RunConfig) -> RunFolder:
        return cls(config.run_dir)

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.csv"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """The checkpoint a resumed fit continues (written as each epoch starts, and at the end)."""
        return self.checkpoints / "last.ckpt"

    @property
    def report(self) -> Path:
        return self.path / "report"

    @property
    def training_log(self) -> Path:
        return self.path / "logs" / "metrics.csv"

    def save_inputs(self, config: RunConfig, manifest: Manifest, resume: bool = False) -> None:
        """Write what a run starts from: manifest, resolved config, git commit. ``resume``: its fit
        will continue ``checkpoints/last.ckpt`` where there is one, which must then have been
        trained with ``config``'s settings but for :data:`RESUME_MAY_CHANGE`
        (:func:`require_same_settings` against the saved config.yaml; CrabserError before anything
        is written)."""
        if resume and self.last_checkpoint.is_file() and self.config_path.is_file():
            require_same_settings(
                config, "has checkpoints/last.ckpt to resume, trained", RESUME_MAY_CHANGE
            )
        self.path.mkdir(parents=True, exist_ok=True)
        write_manifest(manifest, self.manifest_path)
        with atomic_path(self.config_path) as tmp:
            tmp.write_text(dump_config(config))
        (self.path / "git_commit.txt").write_text(git_commit() + "\n")

    def manifest(self) -> Manifest:
        """The manifest the run was prepared with."""
        return read_manifest(self.manifest_path, check_files=False)

    def write_record(self, name: str, data: dict) -> None:
        """A JSON record ``<name>.json`` in the folder (extraction reports, summaries)."""
        write_json(self.path / f"{name}.json", data)

    def record_timing(self, stage: str, seconds: float) -> None:
        """Add a stage's seconds to ``timings.json``."""
        path = self.path / "timings.json"
        timings = json.loads(path.read_text()) if path.is_file() else {}
        timings[stage] = round(seconds, 2)
        write_json(path, timings)

    def metrics_file(self, split: str = "test") -> Path:
        """Where the run's metrics on a split are written (there once the run is scored)."""
        return self.report / f"{split}_metrics.json"

    def read_metrics(self, split: str = "test") -> dict:
        """The run's metrics on a split, as evaluation wrote them."""
        return json.loads(self.metrics_file(split).read_text())

    def best_validation(self) -> tuple[float, int]:
        """The best validation UAR and its epoch (1-based), from the training log."""
        path = self.training_log
        try:
            log = pd.read_csv(path).dropna(subset=["val_uar"])
        except (OSError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise CrabserError(
                f"{path}: no readable training log with val_uar ({error}); train the run first"
            ) from error
        if log.empty:
            raise CrabserError(f"{path}: no epoch was validated; train the run first")
        best = log.iloc[int(log["val_uar"].to_numpy().argmax())]  # the first best epoch
        return float(best["val_uar"]), int(best["epoch"]) + 1
