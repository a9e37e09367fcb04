"""EmoDB leave-one-speaker-out: which Whisper tiny.en layer holds the emotion, and Crab on it.

The field's standard probe of a self-supervised model's layers (SUPERB, EmoBox): each hidden state
of the embedded Whisper tiny.en (PyTorch, from the bundled weights, each clip's own length) pooled
over time (mean and standard deviation per dimension), standardised on the training fold, and a
class-balanced logistic regression whose C is chosen inside each training fold by speaker-grouped
3-fold CV (balanced accuracy) from 1e-3 ... 1. The held-out speaker never informs a choice.

Crab rows: ``crabser crossval`` of ``--config`` (the default model's settings, which refit each
fold's model on its training and validation speakers, ``train.refit``, as the probe's grid search
refits on all of them; one row without) on the same folds, early stopping with patience 5 on each
fold's validation speakers, on frozen speech features of:
the last layer (CTranslate2, what the default model used until now), the hidden state named by
``--layer`` (2: chosen on the validation speakers of two EmoDB speaker-holdout splits, 12/13 and
03/08, with 15/16 held out and unused; those speakers are test speakers of other folds here, so the
choice is not blind to this table, which says so), and all hidden states through the model's
learnable weighted sum. Every row is
scored on the pooled predictions of all held-out speakers. audEERING's published figure for the
same protocol (frozen wav2vec2-large-robust embeddings + SVM, a model ~40x larger) is quoted for
scale, not run.

Usage (from the repository root): python -m benchmarks.whisper_layers [--layer 2] [--jobs 2]
[--quick] (``--quick``: 4 speakers in 2 folds, 2 epochs, in runs/quick: a smoke run, not the
benchmark.)"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import (
    command_line,
    header,
    quick_emodb_manifest,
    quick_overrides,
    write_section,
)
from crabser import pipeline
from crabser.config import load_config
from crabser.crossval import crossval
from crabser.evaluation.metrics import compute_metrics
from crabser.features.extract import content_hashes
from crabser.features.store import FeatureStore
from crabser.runs import run_labels

#: w2v2-how-to notebook: wav2vec2-large-robust-12-ft-emotion-msp-dim embeddings + SVM, EmoDB LOSO
AUDEERING_UAR = 0.934
ALL_LAYERS = [
    "speech.kind=hf-speech",
    "speech.model=embedded",
    "speech.layer=all",
    "speech.pad_to_seconds=null",
    "train.lr_layer_weights=3e-2",
]


def loso_overrides(quick: bool) -> list[str]:
    """The overrides of a leave-one-speaker-out benchmark run: ``--quick`` makes it 4 speakers in
    2 folds, 2 epochs, in runs/quick (a smoke run)."""
    if not quick:
        return quick_overrides(quick)
    smoke = [
        "data.folds=2",
        "data.val_speakers_per_fold=1",
        "train.epochs=2",
        "train.progress=false",
        "data.manifest=" + quick_emodb_manifest(),
    ]
    return [*smoke, *quick_overrides(quick)]


def pooled_layers(config, manifest) -> tuple[np.ndarray, float, float]:
    """Mean+std of every hidden state per clip, ``(N, L + 1, 2D)``; extraction seconds; MB on
    disk."""
    encoders = pipeline.build_encoders(config)
    started = time.perf_counter()
    pipeline.extract_features(config, manifest, encoders)
    seconds = time.perf_counter() - started
    pooled, megabytes = cached_layer_statistics(config, manifest, encoders["speech"].cache_id)
    return pooled, seconds, megabytes


def cached_layer_statistics(config, manifest, cache_id: str) -> tuple[np.ndarray, float]:
    """Mean+std of every hidden state per clip, ``(N, L + 1, 2D)``, from the feature cache of
    ``cache_id`` (extracted already); MB on disk."""
    store = FeatureStore(config.cache_dir)
    hashes = content_hashes(manifest, "speech")
    pooled, size = [], 0
    for utterance in manifest.frame["id"]:
        features = store.get(cache_id, hashes[utterance])  # (T, L + 1, D)
        size += store.path(cache_id, hashes[utterance]).stat().st_size
        pooled.append(np.concatenate([features.mean(0), features.std(0)], axis=-1))
    return np.stack(pooled), size / 1e6


def probe_loso(
    features: np.ndarray, labels: np.ndarray, folds: np.ndarray, speakers: np.ndarray
) -> np.ndarray:
    """Out-of-fold predictions of the standardised, class-balanced logistic regression (C by inner
    speaker-grouped CV on each training fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predicted = np.empty_like(labels)
    for fold in np.unique(folds):
        test = folds == fold
        model = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced")
        )
        inner = GroupKFold(min(3, len(np.unique(speakers[~test]))))
        search = GridSearchCV(
            model,
            {"logisticregression__C": [1e-3, 1e-2, 1e-1, 1.0]},
            scoring="balanced_accuracy",
            cv=inner,
        )
        search.fit(features[~test], labels[~test], groups=speakers[~test])
        predicted[test] = search.predict(features[test])
    return predicted


def crab_loso(config_path: str, overrides: list[str], jobs: int) -> tuple[dict, float]:
    """Pooled metrics of ``crabser crossval`` with these overrides (finished folds are read
    back)."""
    config = load_config(config_path, overrides)
    manifest = pipeline.prepare(config)
    encoders = pipeline.build_encoders(config)
    pipeline.extract_features(config, manifest, encoders)
    started = time.perf_counter()
    crossval(config, manifest, encoders, jobs=jobs)
    return json.loads(
        (config.run_dir / "report" / "pooled_metrics.json").read_text()
    ), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default_model.yaml")
    parser.add_argument(
        "--layer",
        type=int,
        default=2,
        help="the single layer Crab is trained on (chosen on validation speakers)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="folds trained side by side (crabser crossval --jobs)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 speaker folds, 2 epochs, in runs/quick"
    )
    args = parser.parse_args()
    base = [*loso_overrides(args.quick), "train.patience=5"]
    config = load_config(args.config, [*base, *ALL_LAYERS, "name=whisper_layers_probe"])
    manifest = pipeline.prepare(config)
    labels = run_labels(config, manifest)
    frame = manifest.frame
    y = np.array([labels.index(label) for label in frame["label"]])
    folds, speakers = frame["fold"].astype(int).to_numpy(), frame["speaker"].to_numpy()

    pooled, extract_seconds, megabytes = pooled_layers(config, manifest)
    started = time.perf_counter()
    probes = {
        f"hidden state {k}"
        + (
            " (final, after the layer norm)"
            if k == pooled.shape[1] - 1
            else " (embeddings)"
            if k == 0
            else ""
        ): probe_loso(pooled[:, k], y, folds, speakers)
        for k in range(pooled.shape[1])
    }
    probes["all hidden states concatenated"] = probe_loso(
        pooled.reshape(len(pooled), -1), y, folds, speakers
    )
    probe_seconds = time.perf_counter() - started

    own_length = ["speech.model=embedded", "speech.pad_to_seconds=null"]
    crab_rows = {  # name: (run-name tag, overrides)
        "Crab, last layer (CTranslate2; the default model until 2026-12-02)": (
            "last",
            ["speech.kind=whisper-ct2", "speech.layer=-1", *own_length],
        ),
        f"Crab, hidden state {args.layer}, best checkpoint (no refit)": (
            f"layer{args.layer}_norefit",
            [
                "speech.kind=hf-speech",
                f"speech.layer={args.layer}",
                *own_length,
                "train.refit=false",
            ],
        ),
        f"Crab, hidden state {args.layer}": (
            f"layer{args.layer}_refit",
            ["speech.kind=hf-speech", f"speech.layer={args.layer}", *own_length],
        ),
        "Crab, all hidden states (learnable weighted sum, train.lr_layer_weights 3e-2)": (
            "all",
            ALL_LAYERS,
        ),
    }
    rows, seconds = {}, {}
    for name, (tag, overrides) in crab_rows.items():
        rows[name], seconds[name] = crab_loso(
            args.config, [*base, *overrides, f"name=whisper_layers_crab_{tag}"], args.jobs
        )
    rows |= {
        f"probe: {name}": compute_metrics(y.tolist(), predicted.tolist(), labels)
        for name, predicted in probes.items()
    }

    body = header(command_line()) + (
        f"- protocol: {args.config}'s folds ({len(np.unique(folds))}, by speaker), {len(frame)} "
        "clips pooled; Crab with "
        "early stopping (patience 5 on the fold's validation speakers), then refitted on all the "
        "fold's training speakers "
        "for the chosen epochs unless the row says otherwise\n"
        f"- all-layer features: {pooled.shape[1]} hidden states x 384, float32, {megabytes:.0f} MB "
        "in the cache, "
        f"extracted in {extract_seconds:.0f} s (0 when cached); probes {probe_seconds:.0f} s\n\n"
        "| system | UAR | WAR | Macro-F1 |\n|---|---|---|---|\n"
    )
    for name, m in rows.items():
        body += f"| {name} | {m['uar']:.4f} | {m['war']:.4f} | {m['macro_f1']:.4f} |\n"
    body += (
        "| audEERING w2v2-how-to (wav2vec2-large-robust + SVM; published, not run here) | "
        f"{AUDEERING_UAR:.3f} | | |\n"
    )
    best_probe = max((m["uar"], name) for name, m in rows.items() if name.startswith("probe: "))
    best_crab = max((m["uar"], name) for name, m in rows.items() if name.startswith("Crab"))
    body += (
        f"\nBest Crab ({best_crab[1]}) UAR / best probe ({best_probe[1].removeprefix('probe: ')}) "
        "UAR = "
        f"**{best_crab[0] / best_probe[0]:.3f}** (difference {best_crab[0] - best_probe[0]:+.4f}). "
        "Crab crossval seconds: "
        + ", ".join(f"{tag} {seconds[name]:.0f}" for name, (tag, _) in crab_rows.items())
        + ".\n"
    )
    write_section("Whisper tiny.en layers on EmoDB leave-one-speaker-out: probes and Crab", body)
    print(body)


if __name__ == "__main__":
    main()
