"""Experiment grids: a base run config x named axes of overrides x seeds -> one results table.

An experiment file (``configs/experiments/*.yaml``)::

    name: table4_emodb
    base: configs/emodb_folds.yaml        # a run config (path from the working directory)
    overrides: [train.epochs=20]          # applied to every cell
    seeds: [0, 1, 2]
    axes:                                 # axis -> level -> overrides; cells = product of the
        levels objective: ce: [loss.legs=none, loss.class_weights=false] mlcs: []
    curve: null                           # an axis with numeric level names (e.g. alpha): plot it
    projection: tsne                      # 2-D map of each tap's test embeddings (first seed)
    projection_points: 1000               # at most this many test utterances on the map (random)

Each cell x seed is one run in ``<output_dir>/<name>/<levels>/seed<k>`` (a cross-validation when
the base uses ``data.protocol: folds``, else train + test). A finished run leaves ``result.json``
and is skipped next time, so an interrupted grid resumes; cross-validation also resumes per fold.
A finished run whose saved settings differ from its cell's (the grid or a default changed under
the same name) is refused, naming the settings, rather than reported with results it did not give.
All cells share the base config's feature store: features are extracted once.

Outputs in ``<output_dir>/<name>``: ``results.csv`` (one row per run), ``summary.csv`` and
``results.md`` (mean ± std over seeds per cell), ``confusion_<cell>.png`` (all seeds' test
predictions), ``<curve>_curve.png``, and ``embeddings_<cell>.png`` with ``embeddings_<cell>.json``
(silhouette score of each tap on all test utterances; the map draws at most ``projection_points``
of them, since t-SNE's cost grows faster than the utterances: a MELD text cell's map took 52 s with
all 2,610 test utterances, 34 s with 1,000).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from crabser.config import RunConfig, load_config, load_run_config, read_yaml_file, validated
from crabser.data.manifest import Manifest
from crabser.errors import ConfigError
from crabser.io import atomic_path, json_text

log = logging.getLogger(__name__)
METRICS = ("war", "uar", "macro_f1")

#: utterances on an embedding map by default (t-SNE's cost grows faster than them)

PROJECTION_POINTS = 1000


class ExperimentConfig(BaseModel):
    """A grid of runs (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    base: str
    overrides: list[str] = []
    seeds: list[int] = [0]
    axes: dict[str, dict[str, list[str]]] = {}
    curve: str | None = None
    projection: Literal["tsne", "none"] = "tsne"
    projection_points: int = Field(PROJECTION_POINTS, ge=10)


def load_experiment(path: str | Path, seeds: list[int] | None = None) -> ExperimentConfig:
    """Read an experiment file; ``seeds`` replaces its seed list."""
    path = Path(path)
    experiment = validated(ExperimentConfig, read_yaml_file(path, "experiment file"), path)
    if experiment.curve and experiment.curve not in experiment.axes:
        raise ConfigError(
            f"{path}: curve {experiment.curve!r} is not one of the axes {list(experiment.axes)}"
        )
    return experiment.model_copy(update={"seeds": seeds}) if seeds else experiment


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a level per axis, and a seed."""

    levels: tuple[tuple[str, str], ...]
    seed: int

    @property
    def name(self) -> str:
        """The folder name of the cell (its level names joined), without the seed."""
        return "-".join(level for _, level in self.levels) or "base"


def expand(experiment: ExperimentConfig, only: dict[str, list[str]] | None = None) -> list[Cell]:
    """Every cell, seed-major (all cells of the first seed first, so a partial grid is balanced);
    ``only`` keeps the named levels of some axes (``{"objective": ["ce", "mlcs"]}``)."""
    only = only or {}
    for axis, levels in only.items():
        unknown = [level for level in levels if level not in experiment.axes.get(axis, {})]
        if axis not in experiment.axes or unknown:
            raise ConfigError(
                f"--only {axis}={','.join(levels)}: the grid has no such axis or level"
            )
    axes = [
        [(axis, level) for level in levels if axis not in only or level in only[axis]]
        for axis, levels in experiment.axes.items()
    ]
    combos = list(itertools.product(*axes))
    return [Cell(tuple(combo), seed) for seed in experiment.seeds for combo in combos]


def cell_config(
    experiment: ExperimentConfig, cell: Cell, overrides: list[str] | None = None
) -> RunConfig:
    """The run config of one cell: base, experiment overrides, CLI overrides, the levels, the
    seed."""
    level_overrides = [item for axis, level in cell.levels for item in experiment.axes[axis][level]]
    return load_config(
        experiment.base,
        [
            *experiment.overrides,
            *(overrides or []),
            *level_overrides,
            f"train.seed={cell.seed}",
            f"name={experiment.name}/{cell.name}/seed{cell.seed}",
        ],
    )


def run_cell(config: RunConfig, encoders: dict, manifest: Manifest | None = None) -> dict:
    """Train and test one cell (cross-validation for ``data.protocol: folds``); its result.json.
    ``manifest``: the cell's, prepared with its features in the store already (``encoders`` may be
    stand-ins); None prepares and extracts here."""
    from crabser import pipeline
    from crabser.crossval import crossval, train_and_test
    from crabser.runs import RunFolder, git_commit

    path = config.run_dir / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    if manifest is None:
        manifest = pipeline.prepare(config, resume=True)
        pipeline.extract_features(config, manifest, encoders)
    if config.data.protocol == "folds":
        summary = crossval(config, manifest, encoders)
        result = {
            **{k: summary["mean"][k] for k in METRICS},
            **{f"pooled_{k}": summary["pooled"][k] for k in METRICS},
        }
    else:
        train_and_test(config, manifest, encoders)
        metrics = RunFolder.of(config).read_metrics()
        result = {k: metrics[k] for k in METRICS}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["git_commit"] = git_commit()
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(result, indent=2))
    return result


def run_experiment(
    experiment: ExperimentConfig,
    overrides: list[str] | None = None,
    on_cell: Callable[[Cell, dict], None] | None = None,
    only: dict[str, list[str]] | None = None,
    report_only: bool = False,
    jobs: int = 1,
) -> tuple[pd.DataFrame, Path]:
    """Run every cell not yet finished (encoders loaded once per encoder setting), then write the
    tables and plots; returns the per-run results and the experiment folder. ``report_only``
    tabulates the finished cells and runs nothing (e.g. while the grid runs elsewhere). ``jobs`` > 1
    extracts every cell's features here first, then trains that many cells side by side
    (:mod:`crabser.parallel`); every cell runs even if one fails."""
    return run_experiments([(experiment, overrides, only)], on_cell, report_only, jobs)[0]


GridRequest = tuple[
    ExperimentConfig, list[str] | None, dict[str, list[str]] | None
]  #: grid, overrides, only


def run_experiments(
    grids: list[GridRequest],
    on_cell: Callable[[Cell, dict], None] | None = None,
    report_only: bool = False,
    jobs: int = 1,
) -> list[tuple[pd.DataFrame, Path]]:
    """:func:`run_experiment` for several grids (each with its overrides and ``only``) in one pool
    of ``jobs``: no core waits at the end of one grid for the next to start. Returns each grid's
    results and folder, in order."""
    from crabser import pipeline
    from crabser.crossval import for_job
    from crabser.parallel import jobs_for, run_jobs, stored_features
    from crabser.runs import require_same_settings

    encoders = pipeline.EncoderCache()
    planned: list[dict[Cell, RunConfig]] = []
    for experiment, overrides, only in grids:
        selected = set() if report_only else set(expand(experiment, only))
        configs = {}
        for cell in expand(experiment):
            config = cell_config(experiment, cell, overrides)
            if cell in selected or (config.run_dir / "result.json").is_file():
                configs[cell] = (
                    config  # cells not to be run now and not run before stay out of the tables
                )
        if not configs:
            raise ConfigError(f"experiment {experiment.name!r}: no finished cell to report")
        planned.append(configs)
    everything = [(index, cell) for index, configs in enumerate(planned) for cell in configs]
    todo = [
        key for key in everything if not (planned[key[0]][key[1]].run_dir / "result.json").is_file()
    ]
    for index, cell in everything:  # a cell read back must be the run asked for
        if (index, cell) not in todo:
            require_same_settings(planned[index][cell])
    jobs = jobs_for(jobs, len(todo))
    pending: dict[tuple[int, Cell], tuple] = {}
    for index, cell in todo:
        config = planned[index][cell]
        if jobs > 1:  # prepared as the job runs it: its saved config.yaml names the job's threads
            job_config, loaded = for_job(config, jobs), encoders(config)
            manifest = pipeline.prepare(job_config, resume=True)
            pipeline.extract_features(job_config, manifest, loaded)
            pending[index, cell] = (job_config, stored_features(loaded), manifest)
        else:
            pending[index, cell] = (config, encoders(config))

    def result_of(index: int, cell: Cell) -> dict:
        return json.loads((planned[index][cell].run_dir / "result.json").read_text())

    def report(key: tuple[int, Cell]) -> None:
        if on_cell:
            on_cell(key[1], result_of(*key))

    run_jobs(
        run_cell,
        pending,
        jobs,
        on_done=report,
        finished=[key for key in everything if key not in pending],
    )
    outputs = []
    for index, (experiment, overrides, _) in enumerate(grids):
        rows = [
            {
                **dict(cell.levels),
                "cell": cell.name,
                "seed": cell.seed,
                **result_of(index, cell),
                "run": str(config.run_dir),
            }
            for cell, config in planned[index].items()
        ]
        results = pd.DataFrame(rows)
        outputs.append((results, write_outputs(experiment, results, overrides)))
    return outputs


def summarise(results: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Mean and std (population, ddof 0) over seeds of each metric, per cell, in grid order."""
    keys = [*axes, "cell"]
    grouped = results.groupby(keys, sort=False)
    summary = grouped[list(METRICS)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    for metric in METRICS:  # pandas' std is the sample std; a single seed has no spread (0)
        summary[f"{metric}_std"] = grouped[metric].std(ddof=0)
    summary["seeds"] = grouped["seed"].count()
    return summary.reset_index()


def results_markdown(summary: pd.DataFrame, axes: list[str]) -> str:
    """One row per cell: its levels, WAR / UAR / Macro-F1 as mean ± std over the seeds."""
    head = [*axes, "seeds", "WAR", "UAR", "Macro-F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary.itertuples(index=False):
        values = [str(getattr(row, axis)) for axis in axes] + [str(row.seeds)]
        values += [
            f"{getattr(row, f'{m}_mean'):.4f} ± {getattr(row, f'{m}_std'):.4f}" for m in METRICS
        ]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(
    experiment: ExperimentConfig, results: pd.DataFrame, overrides: list[str] | None
) -> Path:
    """results.csv, summary.csv, results.md, confusion matrices, the curve and embedding maps."""
    from crabser.evaluation.plots import plot_curve, plot_pooled_confusion

    out = (
        Path(load_config(experiment.base, [*experiment.overrides, *(overrides or [])]).output_dir)
        / experiment.name
    )
    out.mkdir(parents=True, exist_ok=True)
    axes = list(experiment.axes)
    summary = summarise(results, axes)
    for name, frame in (("results.csv", results), ("summary.csv", summary)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(results_markdown(summary, axes))
    for cell, runs in results.groupby("cell", sort=False):
        plot_pooled_confusion(
            [Path(r) for r in runs["run"]], out / f"confusion_{cell}.png", title=str(cell)
        )
    if experiment.curve:
        plot_curve(
            summary,
            experiment.curve,
            [a for a in axes if a != experiment.curve],
            out / f"{experiment.curve}_curve.png",
        )
    if experiment.projection != "none":
        from crabser.pipeline import EncoderCache

        first, encoders = (
            results[results["seed"] == experiment.seeds[0]],
            EncoderCache(),
        )  # loaded once for all maps
        for row in first.itertuples(index=False):
            target = out / f"embeddings_{row.cell}.png"
            if not target.is_file():
                embedding_map(Path(row.run), target, experiment.projection_points, encoders)
    return out


def embedding_map(
    run_dir: Path,
    path: Path,
    max_points: int = PROJECTION_POINTS,
    encoders: Callable[[RunConfig], dict] | None = None,
) -> None:
    """t-SNE map of each tap's test embeddings of a run (fold 0 of a cross-validation), of at most
    ``max_points`` utterances; silhouette scores of all of them. ``encoders``: a
    :class:`crabser.pipeline.EncoderCache` shared by several maps (default: load this run's)."""
    from crabser import pipeline
    from crabser.evaluation.plots import plot_embeddings
    from crabser.runs import RunFolder
    from crabser.training.checkpoint_io import load_module, run_checkpoint
    from crabser.training.predict import predict_split

    if (run_dir / "fold0").is_dir():
        run_dir = run_dir / "fold0"
    config = load_run_config(run_dir)
    manifest = RunFolder(config.run_dir).manifest()
    module = load_module(run_checkpoint(config.run_dir))
    loaded = (encoders or pipeline.EncoderCache())(config)
    outputs = predict_split(config, manifest, loaded, module, "test", taps=True)
    taps = {name: value.numpy() for name, value in outputs.taps.items()}
    labels = [module.labels[i] for i in outputs.labels.tolist()]
    scores = plot_embeddings(taps, labels, path, title=str(run_dir), max_points=max_points)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json_text({"run": str(run_dir), "silhouette": scores}, indent=2))
