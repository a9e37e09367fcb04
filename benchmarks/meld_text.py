"""MELD text only: Crab's text branch with MLCS on the embedded MiniLM, several seeds, vs.
pooled+LR.

Trains configs/meld_text.yaml once per seed on train, selects the epoch on dev (val UAR) and
evaluates once on test; in the same run fits the classic baseline users would otherwise pick,
TF-IDF (word 1-2 grams, sublinear tf) + class-weighted logistic regression with C chosen on dev
UAR, and the REFERENCE.md baselines (MiniLM tokens pooled + class-balanced logistic regression).
Prints mean ± std and the ratio to the best baseline, and writes a table to BENCHMARKS.md.

Usage (from the repository root): python -m benchmarks.meld_text [--seeds 0,1,2] [--epochs 10]
[--jobs 2] [--quick] (``--quick``: seed 0, 1 epoch, 700/200/300 utterances drawn from
train/dev/test, in runs/quick.)"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np

from benchmarks.common import (
    command_line,
    header,
    pooled_baseline,
    quick_meld_manifest,
    quick_overrides,
    write_section,
)
from crabser import pipeline
from crabser.config import load_config
from crabser.crossval import for_job, train_and_test
from crabser.parallel import encoders_for_jobs, jobs_for, run_jobs
from crabser.runs import RunFolder, run_labels

PAPER = "paper, RoBERTa-Large text only: WAR .6034, UAR .5381"


def tfidf_baseline(manifest, labels: list[str]) -> tuple[dict[str, dict], float]:
    """TF-IDF + class-weighted logistic regression fit on train, C by dev UAR; metrics per split,
    C."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from crabser.evaluation.metrics import compute_metrics

    frame = manifest.frame
    text = {
        split: frame.loc[frame["split"] == split, "text"].fillna("").tolist()
        for split in ("train", "val", "test")
    }
    truth = {
        split: [labels.index(x) for x in frame.loc[frame["split"] == split, "label"]]
        for split in text
    }
    best = None
    for c in (0.1, 0.3, 1.0, 3.0, 10.0):
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            LogisticRegression(C=c, class_weight="balanced", max_iter=3000),
        ).fit(text["train"], truth["train"])
        dev = compute_metrics(truth["val"], model.predict(text["val"]), labels)
        if best is None or dev["uar"] > best[0]:
            best = (dev["uar"], c, model)
    _, c, model = best
    return {
        split: compute_metrics(truth[split], model.predict(text[split]), labels)
        for split in ("val", "test")
    }, c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--config", default="configs/meld_text.yaml")
    parser.add_argument(
        "--retrain", action="store_true", help="retrain seeds whose run already finished"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="seeds trained side by side (as crabser experiment --jobs); 1 = one after another",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="seed 0, 1 epoch, a 1200-utterance subset, in runs/quick",
    )
    args = parser.parse_args()
    quick = quick_overrides(args.quick)
    if args.quick:
        args.seeds, args.epochs = "0", 1
        quick.append("data.manifest=" + quick_meld_manifest(load_config(args.config, quick)))
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = {
        seed: load_config(
            args.config,
            [
                f"name=meld_text_seed{seed}",
                f"train.seed={seed}",
                f"train.epochs={args.epochs}",
                "train.progress=false",
                *quick,
            ],
        )
        for seed in seeds
    }
    config = configs[seeds[0]]
    manifest = pipeline.prepare(config)
    encoders = pipeline.build_encoders(config)
    started = time.perf_counter()
    extraction = pipeline.extract_features(config, manifest, encoders)[
        "text"
    ]  # one feature set for every seed
    extract_seconds = time.perf_counter() - started
    todo = [
        seed
        for seed, c in configs.items()
        if args.retrain or not RunFolder.of(c).metrics_file().is_file()
    ]
    jobs, pending = jobs_for(args.jobs, len(todo)), {}  # finished seeds are read back
    for seed in todo:
        if args.retrain:
            shutil.rmtree(configs[seed].run_dir, ignore_errors=True)
        RunFolder.of(configs[seed]).save_inputs(configs[seed], manifest)
        pending[seed] = (
            for_job(configs[seed], jobs),
            manifest,
            encoders_for_jobs(encoders, jobs),
        )
    started = time.perf_counter()
    run_jobs(train_and_test, pending, jobs)
    wall = time.perf_counter() - started
    rows, results = [], []
    for seed, seed_config in configs.items():
        metrics = RunFolder.of(seed_config).read_metrics()
        best_val, _ = RunFolder.of(seed_config).best_validation()
        train_seconds = json.loads((seed_config.run_dir / "timings.json").read_text())["train"]
        results.append(metrics)
        rows.append(
            f"| Crab text (MLCS), seed {seed} | {metrics['war']:.4f} | {metrics['uar']:.4f} | "
            f"{metrics['macro_f1']:.4f} | "
            f"{best_val:.4f} | {extract_seconds if seed == seeds[0] else 0:.1f} | "
            f"{train_seconds:.0f} |"
        )
        print(rows[-1], flush=True)
    mean = {k: np.mean([m[k] for m in results]) for k in ("war", "uar", "macro_f1")}
    std = {k: np.std([m[k] for m in results]) for k in ("war", "uar", "macro_f1")}
    rows.append(
        "| **Crab text, mean ± std** | "
        + " | ".join(f"**{mean[k]:.4f} ± {std[k]:.4f}**" for k in ("war", "uar", "macro_f1"))
        + " | | | |"
    )
    started = time.perf_counter()
    tfidf, c = tfidf_baseline(manifest, run_labels(config, manifest))
    tfidf_seconds = time.perf_counter() - started
    best_baseline = tfidf["test"]["uar"]
    rows.append(
        f"| TF-IDF 1-2 grams + LR (class-weighted, C={c:g} by dev UAR) | "
        f"{tfidf['test']['war']:.4f} | {tfidf['test']['uar']:.4f} | "
        f"{tfidf['test']['macro_f1']:.4f} | {tfidf['val']['uar']:.4f} | | {tfidf_seconds:.0f} |"
    )
    for pooling in ("mean-l2", "mean", "mean+std"):
        started = time.perf_counter()
        baseline = pooled_baseline(config, manifest, encoders["text"].cache_id, "text", pooling)
        lr_seconds = time.perf_counter() - started
        test = baseline["test"]
        best_baseline = max(best_baseline, test["uar"])
        rows.append(
            f"| MiniLM {pooling} + LR | {test['war']:.4f} | {test['uar']:.4f} | "
            f"{test['macro_f1']:.4f} | {baseline['val']['uar']:.4f} | | {lr_seconds:.0f} |"
        )
    ratio = mean["uar"] / best_baseline
    summary = f"\nCrab text UAR / best baseline UAR = **{ratio:.3f}** ({PAPER}).\n"
    print("\n".join(rows[-5:]), summary)
    counts = manifest.frame["split"].value_counts()
    body = (
        header(command_line())
        + f"\nMELD {'official splits' if not args.quick else 'subset of the official splits'}: "
        f"train {counts['train']}, dev {counts['val']} (model selection), "
        f"test {counts['test']}; text from the CSVs only.\n"
        f"Time columns: text extraction ({extraction.encoded} encoded, the rest cached; once for "
        "all seeds) and training, seconds; "
        f"the seeds trained {jobs} at a time (--jobs {args.jobs}), {wall:.0f} s of wall time in "
        "this run (finished seeds are read back).\n"
        "\n"
        "| system | test WAR | test UAR | test Macro-F1 | dev UAR | extract s | train s |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n" + summary
    )
    write_section("MELD text only (embedded MiniLM)", body)
    print(json.dumps({"mean": mean, "std": std}, default=float))


if __name__ == "__main__":
    main()
