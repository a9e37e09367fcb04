"""Crab table IV on the data here: training objectives (CE, WCE, CE + MPCL, MLS + CE, MLCS with
SupCon, MLCS), 3 seeds, on MELD text only and on EmoDB speaker folds, against weighted CE (else CE).

Runs (or reads back, the grids resume) configs/experiments/table4_meld_text.yaml and
table4_emodb.yaml through ``crabser.experiment``, then writes a BENCHMARKS.md section: the
mean ± std table of each grid, UAR ratios, and the paired UAR differences of every
objective against weighted CE where the grid has it, else CE (per seed on MELD; per seed and fold
on EmoDB, where the folds pair the runs) with a Wilcoxon signed-rank test: does MLCS beat the
baseline beyond the seed spread?

``--grids meld_ft``: the MELD text grid with MiniLM fine-tuned (configs/meld_text_finetune.yaml;
about 10 min per run on 2 cores), into a section of its own; ``--grids emodb_ft``: the EmoDB speech
grid with Whisper tiny.en fine-tuned on speaker folds (configs/emodb_finetune.yaml; about 16 min
per run, 4 h for the five objectives' 15 runs), beside MLCS on the frozen encoder.

Usage (from the repository root):
    python -m benchmarks.objectives [--only objective=mlcs,ce] [--threads 1] [--grids meld,emodb]
    [--report-only] [--quick]

``--budget`` (what ``make bench`` runs): MLCS, CE and CE + MPCL, 3 seeds; MELD for 3 epochs;
EmoDB on the demo's speaker split (test 15, 16; val 12, 13) instead of 5 folds, speech only on
own-length Whisper (EmoDB's carrier sentences carry no emotion; configs/default_model.yaml); both
grids' runs in one pool of --jobs; in runs/budget, written to its own BENCHMARKS.md section. The
full grids (about 3.5 hours on 2 cores) are the run without flags.
``--quick`` is a smoke run in runs/quick: MLCS and CE, seed 0, 1 epoch, 4 EmoDB speakers in 2
folds on own-length Whisper, MELD on a 1200-utterance subset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import (
    command_line,
    header,
    quick_emodb_manifest,
    quick_meld_manifest,
    quick_overrides,
    write_section,
)
from crabser.config import load_config
from crabser.experiment import load_experiment, results_markdown, run_experiments, summarise

GRIDS = {
    "meld": "configs/experiments/table4_meld_text.yaml",
    "emodb": "configs/experiments/table4_emodb.yaml",
    # MiniLM fine-tuned (issue 18, item 4): about 10 min per run on 2 cores; not in the default set
    "meld_ft": "configs/experiments/table4_meld_text_finetune.yaml",
    # Whisper tiny.en fine-tuned on EmoDB speaker folds (issue 18, item 4); not in the default set
    "emodb_ft": "configs/experiments/table4_emodb_finetune.yaml",
}
PAPER = (
    "paper (MELD, WavLM-L + RoBERTa-L fine-tuned) UAR: CE .5253, CE+MPCL .5375, MLS+CE .5539, MLCS "
    "w/ SCL .5534, MLCS .5565"
)


QUICK = {  # per grid, the --quick run's data
    "emodb": lambda grid: [
        "data.folds=2",
        "data.val_speakers_per_fold=1",
        "speech.pad_to_seconds=null",
        "data.manifest=" + quick_emodb_manifest(),
    ],
    "meld": lambda grid: [
        "data.manifest=" + quick_meld_manifest(load_config(grid.base, quick_overrides(True)))
    ],
}
QUICK["emodb_ft"] = QUICK["emodb"]


BUDGET = {  # per grid, the --budget run's settings (the EmoDB grid already trains 12 epochs)
    "meld": ["train.epochs=3"],
    # speech only, as configs/default_model.yaml: EmoDB's ten carrier sentences carry no emotion
    "emodb": [
        "data.protocol=speaker_holdout",
        "data.test_speakers=['15','16']",
        "data.val_speakers=['12','13']",
        "speech.pad_to_seconds=null",
        "model.modalities=[speech]",
    ],
}


def paired_uar(results: pd.DataFrame, a: str, b: str) -> np.ndarray:
    """UAR(a) - UAR(b) for every (seed, fold) both have; per seed when the runs have no folds."""
    diffs = []
    for seed in sorted(set(results["seed"])):
        runs = {}
        for cell in (a, b):
            row = results[(results["cell"] == cell) & (results["seed"] == seed)]
            if row.empty:
                break
            summary = Path(row["run"].iloc[0]) / "crossval.json"
            runs[cell] = (
                {k: v["uar"] for k, v in json.loads(summary.read_text())["folds"].items()}
                if summary.is_file()
                else {"all": float(row["uar"].iloc[0])}
            )
        if len(runs) == 2:
            diffs += [runs[a][k] - runs[b][k] for k in runs[a] if k in runs[b]]
    return np.array(diffs)


def comparison(results: pd.DataFrame) -> str:
    """Every objective vs. the baseline: UAR ratio of the means, paired differences, Wilcoxon p.

    The baseline is weighted CE (``wce``) where the grid has it (the paper's objective is weighted,
    so MLCS against WCE isolates the legs), else unweighted CE."""
    from scipy.stats import wilcoxon

    means = results.groupby("cell")["uar"].mean()
    baseline = "wce" if "wce" in means else "ce"
    lines = [
        (
            f"| vs. {baseline.upper()} | UAR ratio | paired UAR diff (mean ± std) "
            "| wins / pairs | Wilcoxon p |"
        ),
        "|---|---|---|---|---|",
    ]
    for cell in means.index:
        if cell == baseline or baseline not in means:
            continue
        diffs = paired_uar(results, cell, baseline)
        if not len(diffs):
            continue
        p = wilcoxon(diffs).pvalue if len(diffs) >= 3 and np.any(diffs) else float("nan")
        lines.append(
            f"| {cell} | {means[cell] / means[baseline]:.3f} | {diffs.mean():+.4f} ± "
            f"{diffs.std():.4f} | "
            f"{int((diffs > 0).sum())} / {len(diffs)} | {p:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="axis=level1,level2 (as crabser experiment --only)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run with --jobs 1 (more jobs: cores / jobs each)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="runs side by side (crabser experiment --jobs); 1 = one after another",
    )
    parser.add_argument("--grids", default="meld,emodb")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="tabulate finished runs only (a grid running elsewhere)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="MLCS and CE, seed 0, 1 epoch, small data, in runs/quick",
    )
    parser.add_argument(
        "--budget",
        action="store_true",
        help="MLCS, CE, CE+MPCL; MELD 3 epochs; EmoDB one split (make bench)",
    )
    args = parser.parse_args()
    only = {
        axis: levels.split(",") for axis, _, levels in (item.partition("=") for item in args.only)
    }
    overrides = ["train.progress=false", *quick_overrides(args.quick)] + (
        [f"train.threads={args.threads}"] if args.threads else []
    )
    if args.quick:
        only, overrides = {"objective": ["mlcs", "ce"]}, [*overrides, "train.epochs=1"]
    elif args.budget:
        only, overrides = (
            {"objective": ["mlcs", "ce", "ce_mpcl"]},
            [*overrides, "output_dir=runs/budget"],
        )
    body = [header(command_line()), PAPER, ""]
    requests = []
    for key in args.grids.split(","):
        grid, grid_overrides = load_experiment(GRIDS[key]), list(overrides)
        if args.quick:
            grid = grid.model_copy(update={"seeds": [0]})
            grid_overrides += QUICK[key](grid)
        elif args.budget:
            grid_overrides += BUDGET[key]
        requests.append((grid, grid_overrides, only))
    started = time.perf_counter()
    outputs = run_experiments(
        requests, report_only=args.report_only, jobs=args.jobs
    )  # one pool for all grids
    wall = time.perf_counter() - started
    for key, (grid, _, _), (results, out) in zip(args.grids.split(","), requests, outputs):
        summary = summarise(results, list(grid.axes))
        body += [
            f"### {grid.name} ({GRIDS[key]}), per-seed score = "
            + ("mean over folds" if "pooled_uar" in results else "test"),
            "",
        ]
        body += [results_markdown(summary, list(grid.axes)), comparison(results)]
        body += [
            (
                f"{len(results)} runs, {results['seconds'].sum() / 60:.0f} min of training and "
                f"testing in all; tables and plots in `{out}`."
            ),
            "",
        ]
        print(results_markdown(summary, list(grid.axes)))
        print(comparison(results))
    runs = sum(len(results) for results, _ in outputs)
    body += [
        (
            f"Wall time of this run: {wall / 60:.0f} min for the {runs} runs of all grids, "
            f"trained in one pool with --jobs {args.jobs} "
            "(finished runs are read back)."
        ),
        "",
    ]
    suffix = ", make bench budget" if args.budget else ""
    if args.grids != parser.get_default("grids"):
        suffix += f", grids {args.grids}"
    write_section(
        "Training objectives (Crab table IV)" + suffix,
        "\n".join(body),
    )


if __name__ == "__main__":
    main()
