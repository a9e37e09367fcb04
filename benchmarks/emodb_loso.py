"""EmoDB leave-one-speaker-out (10 folds): Crab on the embedded encoders vs. eGeMAPS + linear SVM.

The baseline users would otherwise pick: openSMILE eGeMAPSv02 functionals (88 per utterance),
standardised on each training fold, a linear SVM (scikit-learn ``LinearSVC``, class-balanced
weights) whose C is chosen inside each training fold by speaker-grouped 3-fold CV (UAR) from
1e-3 ... 1, so the held-out speaker never informs it. Crab: ``configs/default_model.yaml`` (speech
only, Whisper tiny.en on each clip's own length; the packaged model's settings) run by ``crabser
crossval`` on the same folds (finished folds are read back). Where the config normalises per
speaker (``model.normalize_per: speaker``, the packaged model's setting since 2026-12-03), the
SVM's functionals are standardised per speaker too (each speaker's, the held-out one's included,
with its own mean and std), so both read the same kind of input. Both are scored on the pooled
predictions of all ten held-out speakers: UAR, WAR, Macro-F1 and per-class recall.

``--patience N`` stops each fold's training N epochs after its best validation UAR
(``train.patience``; ``make bench`` uses 5: in the 20-epoch run of 2026-11-30 the folds' best epochs
were near 10, and 8 of 10 folds would have kept the same best epoch), in runs/<name>_patience<N>.

Usage (from the repository root): python -m benchmarks.emodb_loso [--config
configs/default_model.yaml] [--jobs 2] [--patience N] [--quick]
(``--quick``: 4 speakers in 2 folds, 2 epochs, in runs/quick: a smoke run, not the benchmark.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import (
    command_line,
    header,
    per_speaker,
    quick_emodb_manifest,
    quick_overrides,
    write_section,
)
from crabser import pipeline
from crabser.config import load_config
from crabser.crossval import crossval
from crabser.evaluation.metrics import compute_metrics
from crabser.runs import run_labels


def egemaps_functionals(paths: list[str]) -> np.ndarray:
    """88 eGeMAPSv02 functionals per file (openSMILE)."""
    import opensmile

    from crabser.data.audio import load_audio

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    return np.stack(
        [smile.process_signal(load_audio(p), 16000).to_numpy(dtype=np.float64)[0] for p in paths]
    )


def svm_loso(
    features: np.ndarray, labels: np.ndarray, folds: np.ndarray, speakers: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions of a standardised, class-balanced linear SVM, one model per fold
    (C by inner speaker-grouped CV on the training fold); and the C each fold chose."""
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    predicted, chosen = np.empty_like(labels), []
    for fold in np.unique(folds):
        test = folds == fold
        model = make_pipeline(StandardScaler(), LinearSVC(class_weight="balanced", max_iter=50000))
        inner = GroupKFold(
            min(3, len(np.unique(speakers[~test])))
        )  # 3, or fewer when few speakers train
        search = GridSearchCV(
            model, {"linearsvc__C": [1e-3, 1e-2, 1e-1, 1.0]}, scoring="balanced_accuracy", cv=inner
        )
        search.fit(features[~test], labels[~test], groups=speakers[~test])
        predicted[test] = search.predict(features[test])
        chosen.append(search.best_params_["linearsvc__C"])
    return predicted, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default_model.yaml")
    parser.add_argument(
        "--quick", action="store_true", help="2 speaker folds, 2 epochs, in runs/quick"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="folds trained side by side (crabser crossval --jobs); 1 = one after another",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop a fold after this many epochs without a better val UAR",
    )
    args = parser.parse_args()
    quick = (
        [
            "data.folds=2",
            "data.val_speakers_per_fold=1",
            "train.epochs=2",
            "train.progress=false",
            "data.manifest=" + quick_emodb_manifest(),
        ]
        if args.quick
        else []
    )
    config = load_config(args.config, [*quick, *quick_overrides(args.quick)])
    if args.patience:
        config = config.model_copy(
            update={
                "name": f"{config.name}_patience{args.patience}",
                "train": config.train.model_copy(update={"patience": args.patience}),
            }
        )
    manifest = pipeline.prepare(config)
    encoders = pipeline.build_encoders(config)
    pipeline.extract_features(config, manifest, encoders)
    started = time.perf_counter()
    summary = crossval(config, manifest, encoders, jobs=args.jobs)
    crab_seconds = time.perf_counter() - started
    labels = run_labels(config, manifest)
    import json

    crab = json.loads((config.run_dir / "report" / "pooled_metrics.json").read_text())

    frame = manifest.frame
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[x] for x in frame["label"]])
    started = time.perf_counter()
    features = egemaps_functionals(list(frame["audio"]))
    if config.model.normalize_per == "speaker":  # the baseline gets Crab's normalisation
        features = per_speaker(features, frame["speaker"].astype(str).to_numpy())
    predicted, chosen = svm_loso(
        features, y, frame["fold"].astype(int).to_numpy(), frame["speaker"].to_numpy()
    )
    svm_seconds = time.perf_counter() - started
    svm = compute_metrics(y.tolist(), predicted.tolist(), labels)

    stopping = f", early stopping (patience {args.patience})" if args.patience else ""
    rows = [
        (f"Crab, speech only ({args.config}{stopping})", crab),
        (
            "eGeMAPS functionals + linear SVM"
            + (", standardised per speaker" if config.model.normalize_per == "speaker" else ""),
            svm,
        ),
    ]
    body = (
        header(command_line()) + f"- folds: {len(summary['folds'])} "
        f"({'one per speaker' if config.data.folds is None else 'speaker groups'}), seed "
        f"{config.train.seed}; scores on all {len(manifest)} clips pooled\n\n"
    )
    body += (
        "| system | UAR | WAR | Macro-F1 | "
        + " | ".join(f"recall {label}" for label in labels)
        + " |\n"
    )
    body += "|---|---|---|---|" + "---|" * len(labels) + "\n"
    for name, m in rows:
        body += f"| {name} | {m['uar']:.4f} | {m['war']:.4f} | {m['macro_f1']:.4f} | "
        body += " | ".join(f"{m['per_class'][label]['recall']:.3f}" for label in labels) + " |\n"
    body += (
        f"\nCrab UAR / SVM UAR = **{crab['uar'] / svm['uar']:.3f}**. Crab per-speaker UAR "
        f"{summary['mean']['uar']:.4f} ± {summary['std']['uar']:.4f}. Time: Crab crossval "
        f"{crab_seconds:.0f} s with --jobs {args.jobs} "
        f"(0 when every fold was read back), eGeMAPS + SVM {svm_seconds:.0f} s. SVM C per fold: "
        f"{chosen}.\n"
    )
    body += (
        "The SVM standardises on the training fold only, as specified; published eGeMAPS results "
        "on EmoDB "
        "often standardise per speaker, test speaker included, which gives higher figures. That "
        "uses the test "
        "speaker's statistics, so it is not done here; the Crab side does not use it either.\n"
    )
    write_section("EmoDB leave-one-speaker-out: Crab vs. eGeMAPS + linear SVM", body)
    print(body)


if __name__ == "__main__":
    main()
