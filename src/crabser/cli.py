"""The ``crabser`` command: prepare, extract, train, crossval, experiment, stack, evaluate, predict, demo."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crabser.errors import CrabserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Speech emotion recognition with Crab (MLCS).")
console = Console()

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")]
OverrideOption = Annotated[
    list[str] | None, typer.Option("--override", "-o", metavar="KEY=VALUE", help="key.sub=value, e.g. train.epochs=5 (repeatable).")
]
RunOption = Annotated[Path, typer.Option("--run", "-r", help="Run folder (holds config.yaml and checkpoints).")]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.getLogger("crabser").setLevel(logging.DEBUG if verbose else logging.INFO)


def _quiet_lightning() -> None:
    """Silence Lightning's tips and device banners (it sets its loggers to INFO when imported)."""
    import lightning.pytorch  # noqa: F401  (import first: the import resets the levels)

    for noisy in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def _friendly_errors() -> Iterator[None]:
    """Turn expected failures into one clear line and exit code 2, not a traceback."""
    try:
        yield
    except (CrabserError, FileNotFoundError, ValueError) as error:
        console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(2) from None


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:

        def start(title: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(title, total=total)
            return lambda n: bar.advance(task, n)

        yield start


def _load(config: Path | None, overrides: list[str] | None):
    from crabser.config import load_config

    return load_config(config, overrides or [])


def _print_metrics(metrics: dict, title: str) -> None:
    table = Table(title=title)
    for column in ("WAR", "UAR", "Macro-F1", "weighted F1", "n"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{metrics['war']:.4f}", f"{metrics['uar']:.4f}", f"{metrics['macro_f1']:.4f}",
        f"{metrics['weighted_f1']:.4f}", str(metrics["n"]),
    )
    console.print(table)
    per_class = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="right")
    for label, row in metrics["per_class"].items():
        per_class.add_row(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(per_class)


def _extracted(cfg, manifest) -> tuple[dict, dict]:
    """Build the run's encoders and fill the feature store under progress bars: (encoders, reports)."""
    from crabser import pipeline

    encoders = pipeline.build_encoders(cfg)
    with _progress() as progress:
        reports = pipeline.extract_features(cfg, manifest, encoders, progress)
    return encoders, reports


def _summarise_extraction(reports: dict) -> None:
    for modality, report in reports.items():
        console.print(
            f"{modality}: {report.encoded} encoded, {report.cached} from cache, {len(report.failures)} failed"
        )
        for utterance, problem in list(report.failures.items())[:10]:
            console.print(f"  [yellow]skipped[/] {utterance}: {problem}")


@app.command()
def prepare(config: ConfigOption = None, override: OverrideOption = None) -> None:
    """Build the manifest of the configured corpus and assign the train/val/test split."""
    from crabser import pipeline

    with _friendly_errors():
        cfg = _load(config, override)
        manifest = pipeline.prepare(cfg)
    by = "split" if "split" in manifest.frame else "fold"
    counts = manifest.frame.groupby([by, "label"]).size().unstack(fill_value=0)
    console.print(counts.to_string())
    console.print(f"manifest: {cfg.run_dir / 'manifest.csv'} ({len(manifest)} utterances)")


@app.command()
def extract(config: ConfigOption = None, override: OverrideOption = None) -> None:
    """Extract and cache speech and text features for every utterance (cached ones are skipped)."""
    from crabser import pipeline

    with _friendly_errors():
        cfg = _load(config, override)
        _, reports = _extracted(cfg, pipeline.prepare(cfg))
    _summarise_extraction(reports)


@app.command()
def train(
    config: ConfigOption = None,
    override: OverrideOption = None,
    resume: Annotated[bool, typer.Option(help="Continue from checkpoints/last.ckpt if present.")] = False,
    finetune: Annotated[bool, typer.Option(help="Train the speech/text encoders too (train.finetune=true).")] = False,
) -> None:
    """Prepare, extract (cached) and train Crab; keeps best (val UAR) and last checkpoints.

    With --finetune the encoders train with the head from raw audio (hierarchical LRs); nothing is
    extracted.
    """
    from crabser import pipeline

    with _friendly_errors():
        cfg = _load(config, [*(override or []), *(["train.finetune=true"] if finetune else [])])
        _quiet_lightning()
        manifest = pipeline.prepare(cfg)
        encoders = {} if cfg.train.finetune else _extracted(cfg, manifest)[0]
        result = pipeline.train(cfg, manifest, encoders, resume=resume)
    console.print(f"best val UAR {result.best_val_uar:.4f} · checkpoint {result.best_checkpoint} · {result.seconds:.1f} s")


@app.command()
def crossval(config: ConfigOption = None, override: OverrideOption = None) -> None:
    """Cross-validate (data.protocol: folds): one model per fold, per-fold + mean ± std + pooled metrics.

    Folds already finished are read back, so an interrupted run resumes where it stopped.
    """
    from crabser import pipeline

    def report(fold: int, metrics: dict) -> None:
        console.print(f"fold {fold}: WAR {metrics['war']:.4f} · UAR {metrics['uar']:.4f} · Macro-F1 {metrics['macro_f1']:.4f} (n={metrics['n']})")

    with _friendly_errors():
        cfg = _load(config, override)
        _quiet_lightning()
        manifest = pipeline.prepare(cfg)
        encoders, _ = _extracted(cfg, manifest)
        summary = pipeline.crossval(cfg, manifest, encoders, on_fold=report)
    console.print(pipeline.crossval_markdown(summary))
    console.print(f"summary: {cfg.run_dir / 'crossval.md'}")


@app.command()
def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (configs/experiments/*.yaml).")],
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, replacing the file's list.")] = None,
    only: Annotated[
        list[str] | None, typer.Option(metavar="AXIS=LEVELS", help="Run only these levels of an axis: axis=level1,level2 (repeatable).")
    ] = None,
    report_only: Annotated[bool, typer.Option(help="Tabulate the finished cells; run nothing.")] = False,
    override: OverrideOption = None,
) -> None:
    """Run a grid of runs (axes of overrides x seeds) and write its results table and plots.

    Finished cells are skipped, so an interrupted grid resumes; features are extracted once.
    """
    from crabser import experiment as experiments

    def report(cell, result: dict) -> None:
        levels = ", ".join(f"{axis}={level}" for axis, level in cell.levels)
        console.print(f"{levels} seed {cell.seed}: WAR {result['war']:.4f} · UAR {result['uar']:.4f} · Macro-F1 {result['macro_f1']:.4f}")

    with _friendly_errors():
        seed_list = [int(s) for s in seeds.split(",")] if seeds else None
        grid = experiments.load_experiment(config, seed_list)
        selected = {}
        for item in only or []:
            axis, _, levels = item.partition("=")
            selected[axis.strip()] = [level.strip() for level in levels.split(",") if level.strip()]
        _quiet_lightning()
        _, out = experiments.run_experiment(grid, override or [], on_cell=report, only=selected, report_only=report_only)
    console.print((out / "results.md").read_text())
    console.print(f"results: {out / 'results.md'}")


@app.command()
def stack(
    config: Annotated[Path, typer.Argument(help="Stacking YAML (configs/stacking/*.yaml).")],
    override: OverrideOption = None,
) -> None:
    """StackingSER: train (or reuse) the base models, stack their logits with random forests, and
    score base models and stack (Macro-F1 and balanced-bootstrap Macro-F1 on val and test).

    The stack folder works with `crabser predict --run` like a single run.
    """
    from crabser import stacking

    with _friendly_errors():
        stack_config = stacking.load_stack_config(config)
        _quiet_lightning()
        summary = stacking.run_stack(stack_config, override or [])
    console.print(stacking.stacking_markdown(summary["metrics"]))
    console.print(f"out-of-fold Macro-F1 of the forests ({summary['fit_on']}): {summary['out_of_fold_macro_f1']:.4f}")
    console.print(f"stack: {Path(next(iter(summary['models'].values()))).parent}")


@app.command()
def evaluate(
    run: RunOption,
    split: Annotated[str, typer.Option(help="Split to evaluate: test or val.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Evaluate a run's best checkpoint on a split and write its report."""
    from crabser import pipeline

    with _friendly_errors():
        cfg = pipeline.load_run_config(run)
        manifest = pipeline.load_run_manifest(cfg.run_dir)
        encoders = {} if cfg.train.finetune else pipeline.build_encoders(cfg)
        metrics, paths = pipeline.evaluate(cfg, manifest, encoders, split)
    if as_json:
        summary = {k: metrics[k] for k in ("war", "uar", "macro_f1", "weighted_f1", "n")}
        summary["balanced_macro_f1"] = metrics["balanced_bootstrap"]["macro_f1_mean"]
        typer.echo(json.dumps(summary))
    else:
        _print_metrics(metrics, f"{split} ({cfg.run_dir})")
        boot = metrics["balanced_bootstrap"]
        console.print(
            f"balanced bootstrap ({boot['subsets']} subsets x {boot['per_class']} per class): Macro-F1 "
            f"{boot['macro_f1_mean']:.4f} ± {boot['macro_f1_std']:.4f}, 95 % interval "
            f"[{boot['macro_f1_ci'][0]:.4f}, {boot['macro_f1_ci'][1]:.4f}]"
        )
        console.print(f"report: {paths['metrics'].parent}")


@app.command()
def predict(
    files: Annotated[list[Path], typer.Argument(help="Audio files.")],
    run: RunOption,
    text: Annotated[str | None, typer.Option(help="Transcript for every file (else FILE.txt beside it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    override: OverrideOption = None,
) -> None:
    """Predict the emotion of audio files with a trained run (label + probability per class).

    Files without a transcript (no --text, no FILE.txt) are transcribed by the run's offline ASR
    unless ``-o asr.fill_missing=false``.
    """
    from crabser.inference import load_recognizer

    with _friendly_errors():
        recognizer = load_recognizer(run, overrides=override)
        results = []
        for path in files:
            sidecar = path.with_suffix(".txt")
            transcript = text if text is not None else (sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None)
            try:
                results.append(recognizer.predict([path], [transcript])[0])
            except CrabserError as error:
                console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
    if as_json:
        for r in results:
            typer.echo(json.dumps({
                "file": r.source, "label": r.label, "probabilities": r.probabilities,
                "transcript": r.transcript, "text_source": r.text_source,
            }))
    elif results:
        table = Table()
        table.add_column("file")
        table.add_column("label")
        for label in recognizer.labels:
            table.add_column(label, justify="right")
        for r in results:
            table.add_row(r.source, r.label, *(f"{r.probabilities[label]:.3f}" for label in recognizer.labels))
        console.print(table)
    if len(results) < len(files):
        raise typer.Exit(1)


@app.command()
def demo(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML run config.")] = Path("configs/demo.yaml"),
    override: OverrideOption = None,
) -> None:
    """The main job on the bundled EmoDB: prepare, extract, train Crab with MLCS, evaluate."""
    from crabser import pipeline

    started = time.perf_counter()
    with _friendly_errors():
        cfg = _load(config, override)
        _quiet_lightning()
        manifest = pipeline.prepare(cfg)
        counts = manifest.frame["split"].value_counts()
        console.print(
            f"prepared {len(manifest)} utterances: train {counts.get('train', 0)}, val {counts.get('val', 0)},"
            f" test {counts.get('test', 0)} (speaker-independent)"
        )
        encoders, reports = _extracted(cfg, manifest)
        _summarise_extraction(reports)
        result = pipeline.train(cfg, manifest, encoders)
        console.print(f"trained {result.epochs} epochs in {result.seconds:.1f} s; best val UAR {result.best_val_uar:.4f}")
        metrics, paths = pipeline.evaluate(cfg, manifest, encoders, "test")
    _print_metrics(metrics, "held-out test speakers")
    console.print(f"WAR {metrics['war']:.4f} · UAR {metrics['uar']:.4f} · Macro-F1 {metrics['macro_f1']:.4f}")
    console.print(f"report: {paths['metrics']} (confusion: {paths['confusion'].name})")
    console.print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    app()
