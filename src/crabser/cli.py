"""The ``crabser`` command: config, prepare, extract, train, crossval, experiment, stack, evaluate,
predict, export, models, serve, demo."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from crabser.errors import CrabserError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Speech emotion recognition with Crab (MLCS)."
)
console = Console()
errors = Console(stderr=True)  #: per-input errors of a command whose standard output is data

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")]
OverrideOption = Annotated[
    list[str] | None,
    typer.Option(
        "--override",
        "-o",
        metavar="KEY=VALUE",
        help="key.sub=value, e.g. train.epochs=5 (repeatable).",
    ),
]
JobsOption = Annotated[
    int,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Runs trained side by side, each in its own process with cores/jobs torch threads.",
    ),
]
RunOption = Annotated[
    Path, typer.Option("--run", "-r", help="Run folder (holds config.yaml and checkpoints).")
]


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
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
    # Lightning's own use of a torch pytree API torch has deprecated: nothing a user can act on
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _one_line(error: BaseException) -> str:
    """An expected failure as one line; an OS error names its file first."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return (
        " ".join(str(error).split("\n")[0].split())
        if not isinstance(error, CrabserError)
        else str(error)
    )


@contextmanager
def _friendly_errors() -> Iterator[None]:
    """Turn expected failures (crabser's own, files that cannot be read or written, bad values)
    into one clear line and exit code 2, not a traceback."""
    try:
        yield
    except (CrabserError, OSError, ValueError) as error:
        _print_error(error)
        raise typer.Exit(2) from None


def _print_error(error: BaseException) -> None:
    """``error: <message>`` (the message printed as it is: brackets in it are not markup)."""
    console.print(
        f"[bold red]error:[/] {escape(_one_line(error))}", soft_wrap=True, highlight=False
    )


@contextmanager
def _progress(
    stderr: bool = False, unit: str | None = None
) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A progress bar: ``start(title, total)`` returns the callback that advances it; ``unit``
    adds the rate (``12.3 clips/s``); ``stderr`` keeps it off standard output (JSON lines)."""
    columns: list[ProgressColumn] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if unit:
        columns.append(_RateColumn(unit))
    with Progress(*columns, console=errors if stderr else console) as bar:

        def start(title: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(title, total=total)
            return lambda n: bar.advance(task, n)

        yield start


class _RateColumn(ProgressColumn):
    """Items per second of a task."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


def _load(config: Path | None, overrides: list[str] | None):
    from crabser.config import load_config

    return load_config(config, overrides or [])


def _print_metrics(metrics: dict, title: str) -> None:
    table = Table(title=title)
    for column in ("WAR", "UAR", "Macro-F1", "weighted F1", "n"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{metrics['war']:.4f}",
        f"{metrics['uar']:.4f}",
        f"{metrics['macro_f1']:.4f}",
        f"{metrics['weighted_f1']:.4f}",
        str(metrics["n"]),
    )
    console.print(table)
    per_class = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="right")
    for label, row in metrics["per_class"].items():
        per_class.add_row(
            label,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    console.print(per_class)


def _extracted(cfg, manifest) -> tuple[dict, dict]:
    """Build the run's encoders and fill the feature store under progress bars: (encoders,
    reports)."""
    from crabser import pipeline

    encoders = pipeline.build_encoders(cfg)
    with _progress() as progress:
        reports = pipeline.extract_features(cfg, manifest, encoders, progress)
    return encoders, reports


def _training_encoders(cfg, manifest) -> tuple[dict, dict]:
    """The frozen encoders a training run reads from the feature store, filled first, and the
    extraction reports; none with ``train.finetune`` (the encoders then train from raw audio, and
    the store would go unused)."""
    return ({}, {}) if cfg.train.finetune else _extracted(cfg, manifest)


def _summarise_extraction(reports: dict) -> None:
    for modality, report in reports.items():
        console.print(
            f"{modality}: {report.encoded} encoded, {report.cached} from cache, "
            f"{len(report.failures)} failed"
        )
        for utterance, problem in list(report.failures.items())[:10]:
            console.print(f"  [yellow]skipped[/] {utterance}: {problem}")


@app.command("config")
def show_config(
    config: ConfigOption = None,
    override: OverrideOption = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Every setting at its default (ignores -c, -o).")
    ] = False,
) -> None:
    """Print the resolved config (the file with its overrides; --defaults: the defaults) as YAML,
    each setting with its comment from the schema."""
    from crabser.config import RunConfig, commented_yaml

    with _friendly_errors():
        resolved = RunConfig() if defaults else _load(config, override)
    typer.echo(commented_yaml(resolved), nl=False)


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
    resume: Annotated[
        bool, typer.Option(help="Continue from checkpoints/last.ckpt if present.")
    ] = False,
    finetune: Annotated[
        bool, typer.Option(help="Train the speech/text encoders too (train.finetune=true).")
    ] = False,
) -> None:
    """Prepare, extract (cached) and train Crab; keeps best (val UAR) and last checkpoints
    (and, with train.refit, a model refitted on training + validation data).

    With --finetune the encoders train with the head from raw audio (hierarchical LRs); nothing is
    extracted.
    """
    from crabser import pipeline
    from crabser.training import fit
    from crabser.training.checkpoint_io import run_checkpoint

    with _friendly_errors():
        cfg = _load(config, [*(override or []), *(["train.finetune=true"] if finetune else [])])
        _quiet_lightning()
        manifest = pipeline.prepare(cfg, resume)
        encoders, _ = _training_encoders(cfg, manifest)
        result = fit.train(cfg, manifest, encoders, resume=resume)
    console.print(
        f"best val UAR {result.best_val_uar:.4f} · model {run_checkpoint(cfg.run_dir)} · "
        f"{result.seconds:.1f} s"
    )


@app.command()
def crossval(
    config: ConfigOption = None, override: OverrideOption = None, jobs: JobsOption = 1
) -> None:
    """Cross-validate (data.protocol: folds): one model per fold, per-fold + mean ± std + pooled
    metrics.

    Folds already finished are read back, so an interrupted run resumes where it stopped. With
    train.finetune nothing is extracted (each fold trains its encoders from raw audio).
    """
    from crabser import pipeline
    from crabser.crossval import crossval, crossval_markdown

    def report(fold: int, metrics: dict) -> None:
        console.print(
            f"fold {fold}: WAR {metrics['war']:.4f} · UAR {metrics['uar']:.4f} · Macro-F1 "
            f"{metrics['macro_f1']:.4f} (n={metrics['n']})"
        )

    with _friendly_errors():
        cfg = _load(config, override)
        _quiet_lightning()
        manifest = pipeline.prepare(cfg)
        encoders, _ = _training_encoders(cfg, manifest)
        summary = crossval(cfg, manifest, encoders, on_fold=report, jobs=jobs)
    console.print(crossval_markdown(summary))
    console.print(f"summary: {cfg.run_dir / 'crossval.md'}")


@app.command()
def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (configs/experiments/*.yaml).")],
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds, replacing the file's list.")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            metavar="AXIS=LEVELS",
            help="Run only these levels of an axis: axis=level1,level2 (repeatable).",
        ),
    ] = None,
    report_only: Annotated[
        bool, typer.Option(help="Tabulate the finished cells; run nothing.")
    ] = False,
    override: OverrideOption = None,
    jobs: JobsOption = 1,
) -> None:
    """Run a grid of runs (axes of overrides x seeds) and write its results table and plots.

    Finished cells are skipped, so an interrupted grid resumes; features are extracted once.
    """
    from crabser import experiment as experiments

    def report(cell, result: dict) -> None:
        levels = ", ".join(f"{axis}={level}" for axis, level in cell.levels)
        console.print(
            f"{levels} seed {cell.seed}: WAR {result['war']:.4f} · UAR {result['uar']:.4f} · "
            f"Macro-F1 {result['macro_f1']:.4f}"
        )

    with _friendly_errors():
        seed_list = [int(s) for s in seeds.split(",")] if seeds else None
        grid = experiments.load_experiment(config, seed_list)
        selected = {}
        for item in only or []:
            axis, _, levels = item.partition("=")
            selected[axis.strip()] = [level.strip() for level in levels.split(",") if level.strip()]
        _quiet_lightning()
        _, out = experiments.run_experiment(
            grid, override or [], on_cell=report, only=selected, report_only=report_only, jobs=jobs
        )
    console.print((out / "results.md").read_text())
    console.print(f"results: {out / 'results.md'}")


@app.command()
def stack(
    config: Annotated[Path, typer.Argument(help="Stacking YAML (configs/stacking/*.yaml).")],
    override: OverrideOption = None,
    jobs: JobsOption = 1,
) -> None:
    """StackingSER: train (or reuse) the base models, stack their logits with random forests, and
    score base models and stack (Macro-F1 and balanced-bootstrap Macro-F1 on val and test).

    The stack folder works with `crabser predict --run` like a single run.
    """
    from crabser import stacking

    with _friendly_errors():
        stack_config = stacking.load_stack_config(config)
        _quiet_lightning()
        summary = stacking.run_stack(stack_config, override or [], jobs=jobs)
    console.print(stacking.stacking_markdown(summary["metrics"]))
    console.print(
        f"out-of-fold Macro-F1 of the forests ({summary['fit_on']}): "
        f"{summary['out_of_fold_macro_f1']:.4f}"
    )
    console.print(f"stack: {summary['folder']}")


@app.command()
def evaluate(
    run: Annotated[
        Path | None, typer.Option("--run", "-r", help="Run folder: scored on its own split.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate: test or val.")] = "test",
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="YAML config naming a corpus (data.corpus / data.corpora, data.label_map): "
            "score the model on all of it.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="--corpus: 'default', a run, checkpoint, exported model or stack folder.",
        ),
    ] = None,
    override: OverrideOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="--corpus: folder for the report (default: <model folder>/cross_corpus/<config "
            "file stem>; ./cross_corpus/<stem> for 'default', crabser/<name> or a checkpoint).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    no_adapt: Annotated[
        bool,
        typer.Option(
            "--no-adapt",
            help="--corpus: score each clip on its own; a model trained with model.normalize_per "
            "then uses its training speakers' statistics instead of adapting to each speaker.",
        ),
    ] = False,
) -> None:
    """Evaluate a run's model (refitted with train.refit, else the best checkpoint) on a split, or
    any model on a whole corpus (--corpus), and write the report."""
    if corpus is not None:
        _evaluate_on_corpus(
            model or (str(run) if run else "default"),
            corpus,
            override,
            out,
            as_json,
            adapt=not no_adapt,
        )
        return
    if run is None:
        _print_error(
            CrabserError(
                "give --run (a run scored on its split) or --corpus (a model scored on a corpus)"
            )
        )
        raise typer.Exit(2)
    from crabser import pipeline
    from crabser.config import load_run_config
    from crabser.runs import RunFolder

    with _friendly_errors():
        cfg = load_run_config(run, override)
        manifest = RunFolder(cfg.run_dir).manifest()
        encoders = {} if cfg.train.finetune else pipeline.build_encoders(cfg)
        metrics, paths = pipeline.evaluate(cfg, manifest, encoders, split)
    if as_json:
        summary = {k: metrics[k] for k in ("war", "uar", "macro_f1", "weighted_f1", "n")}
        summary["balanced_macro_f1"] = metrics["balanced_bootstrap"]["macro_f1_mean"]
        if "per_corpus" in metrics:
            summary["per_corpus"] = metrics["per_corpus"]
        typer.echo(json.dumps(summary))
    else:
        _print_metrics(metrics, f"{split} ({cfg.run_dir})")
        _print_per_corpus(metrics)
        boot = metrics["balanced_bootstrap"]
        console.print(
            f"balanced bootstrap ({boot['subsets']} subsets x {boot['per_class']} per class): "
            "Macro-F1 "
            f"{boot['macro_f1_mean']:.4f} ± {boot['macro_f1_std']:.4f}, 95 % interval "
            f"[{boot['macro_f1_ci'][0]:.4f}, {boot['macro_f1_ci'][1]:.4f}]"
        )
        console.print(f"report: {paths['metrics'].parent}")


def _print_per_corpus(metrics: dict) -> None:
    for name, m in metrics.get("per_corpus", {}).items():
        console.print(
            f"  {name}: UAR {m['uar']:.4f} · WAR {m['war']:.4f} · Macro-F1 {m['macro_f1']:.4f} · n "
            f"{m['n']}"
        )


def _evaluate_on_corpus(
    model: str,
    corpus: Path,
    override: list[str] | None,
    out: Path | None,
    as_json: bool,
    adapt: bool = True,
) -> None:
    """``crabser evaluate --corpus``: :func:`crabser.cross_corpus.evaluate_on_corpus` with a
    progress bar."""
    from crabser.config import load_config
    from crabser.cross_corpus import evaluate_on_corpus

    with _friendly_errors():
        config = load_config(corpus, override)
        if out is None:
            model_dir = Path(model)
            out = (model_dir if model_dir.is_dir() else Path()) / "cross_corpus" / corpus.stem
        with _progress() as start:
            result = evaluate_on_corpus(
                model,
                config,
                out,
                progress=lambda total: start(f"scoring on {config.name}", total),
                adapt=adapt,
            )
    if as_json:
        keys = (
            "war",
            "uar",
            "macro_f1",
            "n",
            "per_corpus",
            "scored_classes",
            "left_out_model_lacks",
            "model_classes_corpus_lacks",
            "unreadable",
            "adapted_per",
        )
        typer.echo(json.dumps({k: result[k] for k in keys if k in result}))
        return
    _print_metrics(result, f"{model} on {config.name}")
    _print_per_corpus(result)
    console.print(f"scored classes: {', '.join(result['scored_classes'])}")
    if result["adapted_per"]:
        console.print(
            f"adapted to each {result['adapted_per']}'s recordings "
            "(--no-adapt: each clip on its own)"
        )
    if result["left_out_model_lacks"]:
        left = ", ".join(f"{label} ({n})" for label, n in result["left_out_model_lacks"].items())
        console.print(f"left out, classes the model lacks: {left}")
    if result["model_classes_corpus_lacks"]:
        console.print(
            "model classes the corpus lacks (out of UAR): "
            f"{', '.join(result['model_classes_corpus_lacks'])}"
        )
    if result["unreadable"]:
        console.print(
            f"[yellow]{len(result['unreadable'])} clips could not be read and were left out "
            "(listed in the report)[/]"
        )
    console.print(f"report: {out}")


ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        "--run",
        "-r",
        help="'default' (the packaged four-corpus model), crabser/<name> (a packaged model: "
        "crabser models), a run, checkpoint, exported model or stack folder.",
    ),
]


@app.command()
def predict(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Audio files, folders (searched for audio by content), lists of paths (.txt, "
            ".lst) or tables with a path column (.csv, .tsv, .parquet)."
        ),
    ],
    model: ModelOption = "default",
    text: Annotated[
        str | None,
        typer.Option(
            help="Transcript for every file (else a table's transcript column or FILE.txt beside "
            "the audio)."
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON lines (with --segment: one JSON timeline per file)."
        ),
    ] = False,
    segment: Annotated[
        bool,
        typer.Option(
            "--segment", help="Long recordings: split on voice activity and predict a timeline."
        ),
    ] = False,
    segment_mode: Annotated[
        str, typer.Option(help="vad (voice activity) or fixed (windows with overlap).")
    ] = "vad",
    window: Annotated[
        float, typer.Option(help="--segment-mode fixed: window length, seconds.")
    ] = 4.0,
    hop: Annotated[
        float, typer.Option(help="--segment-mode fixed: hop between windows, seconds.")
    ] = 2.0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="A table (.csv, .parquet, .jsonl) with a row per input, its error where it "
            "failed; run again to resume it. With --segment: the folder for "
            "<file>.timeline.csv/.json/.png.",
        ),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Label 'uncertain' when the top probability is below this (the probabilities "
            "are still given).",
        ),
    ] = None,
    path_column: Annotated[
        str | None,
        typer.Option(help="Tables: the column of audio paths (default: path, file, ...)."),
    ] = None,
    text_column: Annotated[
        str | None,
        typer.Option(help="Tables: the column of transcripts (default: transcript or text)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per forward pass.")] = 16,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="--out: start over instead of resuming.")
    ] = False,
    embeddings: Annotated[
        bool,
        typer.Option(
            "--embeddings",
            help="Add each input's utterance embedding (the model's fused vector): an "
            "'embedding' field in JSON, a column in .parquet / .jsonl tables.",
        ),
    ] = False,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt",
            help="A model trained with model.normalize_per: normalise with the statistics of all "
            "these inputs (one speaker's recordings, or one corpus's) instead of the training "
            "speakers'.",
        ),
    ] = False,
    override: OverrideOption = None,
) -> None:
    """Predict the emotion of audio files, folders or tables (label + probability per class).

    Without --model the packaged default model is used (speech only; see the README). For a model
    with text, inputs without a transcript (no --text, no transcript column, no FILE.txt) are
    transcribed by the offline ASR unless ``-o asr.fill_missing=false``. A file that fails is
    reported and the others go on; the exit code is then 1.
    """
    from crabser.loading import load_predictor
    from crabser.tables import EMBEDDING, OUTPUT_FIELDS, check_output, gather_inputs

    with _friendly_errors():
        if segment_mode not in ("vad", "fixed"):
            raise CrabserError(f"--segment-mode must be vad or fixed, got {segment_mode!r}")
        if segment and embeddings:
            raise CrabserError("--embeddings is for whole inputs, not --segment timelines")
        if embeddings and not (as_json or out):
            raise CrabserError("--embeddings: write them with --json or --out T.parquet")
        if out is not None and not segment:
            check_output(out, embeddings, files)
        inputs = gather_inputs(files, path_column, text_column)
        if not inputs:
            raise CrabserError(f"no audio found in {', '.join(map(str, files))}")
        recognizer = load_predictor(model, overrides=override)
        if adapt:
            if not hasattr(recognizer, "adapt_to"):
                raise CrabserError(f"--adapt: {model} is not a PyTorch model (ONNX or a stack)")
            recognizer.adapt_to([row.path for row in inputs if row.problem is None])
        if segment:
            unusable = [row for row in inputs if row.problem]  # a table row with an empty path
            for row in unusable:
                _print_error(CrabserError(f"{row.source}: {row.problem}"))
            paths = [row.path for row in inputs if row.problem is None]
            failed = len(unusable) + _predict_segments(
                recognizer, paths, segment_mode, window, hop, out, as_json, min_confidence
            )
            raise typer.Exit(1 if failed else 0)
        with _progress(stderr=True, unit="clips") as progress:
            try:
                table = recognizer.predict_table(
                    inputs,
                    out,
                    text=text,
                    batch_size=batch_size,
                    min_confidence=min_confidence,
                    overwrite=overwrite,
                    embed=embeddings,
                    progress=lambda total: progress("predict", total),
                )
            except KeyboardInterrupt:
                if out is not None:
                    errors.print(f"interrupted: run the same command again to resume {out}")
                raise typer.Exit(130) from None
    fields = [*OUTPUT_FIELDS, *([EMBEDDING] if embeddings else [])]
    records = table[fields].to_dict(orient="records")
    failures = [r for r in records if r["error"]]
    for r in failures:  # on stderr: standard output holds only the results (JSON lines)
        errors.print(
            f"[bold red]error:[/] {escape(r['source'])}: {escape(r['error'])}",
            soft_wrap=True,
            highlight=False,
        )
    results = [{k: v for k, v in r.items() if k != "error"} for r in records if not r["error"]]
    if as_json:  # the schema of Prediction.to_dict, as Python and HTTP give it
        for r in results:
            typer.echo(json.dumps(r, ensure_ascii=False, allow_nan=False))
    elif out is not None:
        console.print(f"{len(results)} of {len(records)} predicted: {out}")
    elif results:
        _print_predictions(results, recognizer.labels)
    if failures:
        raise typer.Exit(1)


def _print_predictions(results: list[dict], labels: list[str]) -> None:
    table = Table()
    table.add_column("file")
    table.add_column("label")
    for label in labels:
        table.add_column(label, justify="right")
    for r in results:
        table.add_row(
            r["source"], r["label"], *(f"{r['probabilities'][label]:.3f}" for label in labels)
        )
    console.print(table)


def _predict_segments(
    recognizer,
    files: list[Path],
    mode: str,
    window: float,
    hop: float,
    out: Path | None,
    as_json: bool,
    min_confidence: float | None = None,
) -> int:
    """--segment: a timeline per file (table or JSON), written as CSV, JSON and PNG; returns the
    failures."""
    from crabser import segment as seg
    from crabser.data.audio import stream_audio
    from crabser.io import atomic_path, ensure_folder

    # checked by predict: vad or fixed
    settings = seg.SegmentSettings(
        mode=cast(Any, mode), window=window, hop=hop, min_confidence=min_confidence
    )
    stems = seg.output_stems(files, beside_inputs=out is None)
    failed = 0
    for path in files:
        title = path.name
        try:
            with _progress() as progress:
                advance, done = None, 0.0

                def report(seconds: float, total: float, title: str = title) -> None:
                    nonlocal advance, done
                    advance = advance or progress(title, max(1, round(total)))
                    advance(max(0, round(seconds) - round(done)))
                    done = seconds

                blocks, total = stream_audio(path, seg.SAMPLE_RATE)
                entries = seg.predict_timeline(recognizer, blocks, total, settings, report)
        except CrabserError as error:
            _print_error(error)
            failed += 1
            continue
        folder = ensure_folder(out, "--out") if out else path.parent
        outputs = {ext: folder / f"{stems[path]}.timeline.{ext}" for ext in ("json", "csv", "png")}
        record = seg.timeline_record(str(path), total, recognizer.labels, entries)
        with atomic_path(outputs["json"]) as tmp:
            tmp.write_text(seg.timeline_json(record), encoding="utf-8")
        seg.write_timeline_csv(entries, recognizer.labels, outputs["csv"])
        seg.plot_timeline(entries, recognizer.labels, outputs["png"], title=path.name)
        if as_json:
            typer.echo(json.dumps(record, ensure_ascii=False, allow_nan=False))
            continue
        table = Table(title=f"{path} ({len(entries)} segments)")
        for column in ("start", "end", "label", "p", "transcript"):
            table.add_column(column)
        for e in entries:
            p = f"{max(e.probabilities.values()):.2f}" if e.probabilities else ""
            table.add_row(
                f"{e.start:.2f}",
                f"{e.end:.2f}",
                e.label or f"[red]{e.error}[/]",
                p,
                e.transcript or "",
            )
        console.print(table)
        console.print(f"timeline: {outputs['csv']} (.json, .png beside it)")
    return failed


@app.command()
def export(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder to write the model to (--onnx of a packaged model: by default its "
            "ONNX build in the local models folder, which crabser predict then uses).",
        ),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option("--run", "-r", help="Run folder (holds config.yaml and checkpoints)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="--onnx: a model by name or folder instead of --run."),
    ] = None,
    half: Annotated[bool, typer.Option(help="Store the weights in fp16 (half the size).")] = True,
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx",
            help="Write ONNX graphs run by onnxruntime (no torch at prediction; speech models "
            "over the Whisper encoder).",
        ),
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="--onnx: weights quantised to 8 bits.")
    ] = False,
) -> None:
    """Export a run's best model as a small folder (weights, labels, encoder config) for
    predict/serve, or any speech model as ONNX (--onnx)."""
    with _friendly_errors():
        if (run is None) == (model is None):
            raise CrabserError("give --run or, with --onnx, --model")
        if model is not None and not onnx:
            raise CrabserError("--model is for --onnx; export a run with --run")
        if int8 and not onnx:
            raise CrabserError("--int8 is for --onnx")
        if onnx:
            from crabser.onnx_export import export_onnx
            from crabser.pretrained import onnx_build_dir

            source = str(run) if run is not None else cast(str, model)
            if out is None:
                out = onnx_build_dir(source) if not int8 else None
            if out is None:
                raise CrabserError(
                    "--out: where to write the model (needed unless --onnx of a "
                    "packaged model in fp32)"
                )
            folder = export_onnx(source, out, int8=int8)
        else:
            from crabser.inference import export_model

            if out is None:
                raise CrabserError("--out: where to write the model")
            folder = export_model(cast(Path, run), out, half=half)
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    console.print(f"model: {folder} ({size:.2f} MB)")


@app.command()
def models(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A model (crabser/<name>, <name>, hf://<org>/<repo>[@rev] or a folder): print "
            "its whole card."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the card(s) as JSON.")] = False,
) -> None:
    """List the installed models (shipped in the package, then those in the local models folder,
    $CRABSER_MODELS) with their cards (classes, languages, training data, terms, accuracy)."""
    from crabser.pretrained import (
        DEFAULT_MODEL,
        HUB_PREFIX,
        PREFIX,
        installed_models,
        packaged_model_dir,
        resolve_model,
    )

    with _friendly_errors():
        if name is None:
            folders = installed_models()
        elif name.startswith(HUB_PREFIX) or Path(name).is_dir():
            folders = {name: resolve_model(name)}
        else:
            folders = {name.removeprefix(PREFIX): packaged_model_dir(name)}
        cards = {key: _read_card(folder) for key, folder in folders.items()}
    if as_json:
        typer.echo(json.dumps(cards if not name else next(iter(cards.values())), indent=2))
        return
    for key, card in cards.items():
        default = " (default)" if key == DEFAULT_MODEL else ""
        shown = key if key.startswith(HUB_PREFIX) or Path(key).is_dir() else PREFIX + key
        console.print(f"[bold]{escape(shown)}[/]{default}", highlight=False)
        cv = card.get("cross_validation", {})
        lines = [
            f"classes: {', '.join(card.get('labels', []))}",
            f"languages: {', '.join(card.get('languages', [])) or 'not stated'}",
            f"trained on: {card.get('trained_on', 'not stated')}",
            f"accuracy: {cv.get('protocol', 'not stated')}: pooled UAR {cv['pooled']['uar']:.3f}"
            if "pooled" in cv
            else "accuracy: not stated",
            *(
                f"  {corpus}: UAR {m['uar']:.3f} (n {m['n']})"
                for corpus, m in cv.get("per_corpus", {}).items()
            ),
            f"terms: {card.get('terms', 'not stated')}",
        ]
        if name:
            lines += [
                f"intended use: {card.get('intended_use', 'not stated')}",
                *(f"limit: {note}" for note in card.get("limits", [])),
            ]
        for line in lines:
            console.print(f"  {line}", highlight=False, soft_wrap=True)


def _read_card(folder: Path) -> dict:
    """A model's card.json; a model without one (exported by a user) gets its labels only."""
    from crabser.pretrained import MODEL_CARD, MODEL_MARKERS

    path = folder / MODEL_CARD
    described = [folder / name for name in MODEL_MARKERS if (folder / name).is_file()]
    if not path.exists() and described:
        meta = json.loads(described[0].read_text(encoding="utf-8"))
        return {
            "labels": meta.get("labels", []),
            "card": f"none (card.json beside {described[0].name})",
        }
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CrabserError(f"{path}: no readable model card ({error})") from error


@app.command()
def serve(
    model: ModelOption = "default",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Predictions run at once (the rest queue).")] = 1,
    queue: Annotated[int, typer.Option(help="Requests allowed to wait; more get 503.")] = 32,
    max_mb: Annotated[float, typer.Option(help="Largest upload, MB (413 above).")] = 20.0,
    max_seconds: Annotated[
        float, typer.Option(help="Longest audio for /v1/predict, seconds (413 above).")
    ] = 60.0,
    max_segment_seconds: Annotated[
        float, typer.Option(help="Longest audio for /v1/predict/segments, seconds.")
    ] = 1200.0,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Host header to answer besides localhost names (repeat)."),
    ] = None,
    max_connections: Annotated[
        int, typer.Option(help="Open connections at most (idle ones are closed first).")
    ] = 200,
    max_live: Annotated[
        int, typer.Option(min=0, help="Live microphone streams (WebSocket) open at once.")
    ] = 8,
) -> None:
    """Serve a model over HTTP: POST /v1/predict, /v1/predict/segments, GET /v1/labels, /health, a
    web page at /."""
    from crabser.serve import ServiceSettings, run_service

    with _friendly_errors():
        settings = ServiceSettings(
            model=model,
            workers=workers,
            queue=queue,
            max_bytes=int(max_mb * 1e6),
            max_seconds=max_seconds,
            max_segment_seconds=max_segment_seconds,
            host=host,
            allowed_hosts=tuple(allowed_host or ()),
            max_connections=max_connections,
            max_live=max_live,
        )
        run_service(settings, port)


@app.command()
def demo(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML run config.")] = Path(
        "configs/demo.yaml"
    ),
    override: OverrideOption = None,
) -> None:
    """The main job on the bundled EmoDB: prepare, extract, train Crab with MLCS, evaluate."""
    from crabser import pipeline
    from crabser.training import fit

    started = time.perf_counter()
    with _friendly_errors():
        cfg = _load(config, override)
        _quiet_lightning()
        manifest = pipeline.prepare(cfg)
        counts = manifest.frame["split"].value_counts()
        console.print(
            f"prepared {len(manifest)} utterances: train {counts.get('train', 0)}, val "
            f"{counts.get('val', 0)},"
            f" test {counts.get('test', 0)} (speaker-independent)"
        )
        encoders, reports = _training_encoders(cfg, manifest)
        _summarise_extraction(reports)
        result = fit.train(cfg, manifest, encoders)
        console.print(
            f"trained {result.epochs} epochs in {result.seconds:.1f} s; best val UAR "
            f"{result.best_val_uar:.4f}"
        )
        metrics, paths = pipeline.evaluate(cfg, manifest, encoders, "test")
    _print_metrics(metrics, "held-out test speakers")
    console.print(
        f"WAR {metrics['war']:.4f} · UAR {metrics['uar']:.4f} · Macro-F1 {metrics['macro_f1']:.4f}"
    )
    console.print(f"report: {paths['metrics']} (confusion: {paths['confusion'].name})")
    console.print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    app()
