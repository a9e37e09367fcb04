"""Plots of experiments: confusion over seeds, a metric curve over one axis, and 2-D maps of the
representations where the supervision legs attach.

The maps project the model's tap representations (the inputs of the legs, which every model
has whatever its objective, so CE and MLCS runs can be compared) with t-SNE (scikit-learn,
perplexity min(30, (n - 1) / 3), PCA initialisation, seed 0) and report the silhouette score of
the true labels in the original space, with cosine distance (the geometry the contrastive losses
shape): higher means emotions form tighter, better separated clusters, the effect the Crab paper
attributes to MLCS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pooled_confusion(run_dirs: list[Path], path: Path, title: str = "") -> Path | None:
    """Confusion matrix of every test prediction under the runs (folds and seeds together)."""
    from crabser.evaluation.metrics import compute_metrics
    from crabser.evaluation.report import plot_confusion

    files = [f for run in run_dirs for f in sorted(run.glob("**/report/test_predictions.csv"))]
    if not files:
        return None
    frame = pd.concat([pd.read_csv(f, dtype=str) for f in files])
    labels = sorted(set(frame["label"]) | set(frame["prediction"]))
    index = {label: i for i, label in enumerate(labels)}
    metrics = compute_metrics(
        [index[x] for x in frame["label"]], [index[x] for x in frame["prediction"]], labels
    )
    return plot_confusion(metrics, path, title=f"{title} (n = {len(frame)})")


def plot_curve(summary: pd.DataFrame, axis: str, other_axes: list[str], path: Path) -> Path:
    """UAR and WAR (mean ± std over seeds) against a numeric axis, one line per other level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = summary.groupby(other_axes, sort=False) if other_axes else [("", summary)]
    for key, frame in groups:
        x = frame[axis].astype(float).to_numpy()
        order = np.argsort(x)
        for metric, style in (("uar", "-o"), ("war", "--s")):
            mean, std = (
                frame[f"{metric}_mean"].to_numpy()[order],
                frame[f"{metric}_std"].to_numpy()[order],
            )
            suffix = f" {key}" if other_axes else ""
            ax.errorbar(
                x[order], mean, yerr=std, fmt=style, capsize=3, label=f"{metric.upper()}{suffix}"
            )
    ax.set_xlabel(axis)
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_embeddings(
    taps: dict[str, np.ndarray],
    labels: list[str],
    path: Path,
    title: str = "",
    *,
    max_points: int | None,
) -> dict[str, float]:
    """t-SNE of each tap coloured by emotion (one panel per tap); silhouette score of each tap.

    The scores use every utterance; the maps at most ``max_points`` of them (a random draw, the
    same for every tap; None: all), since t-SNE's cost grows faster than the utterances."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    plt = _pyplot()
    names = list(taps)
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    shown = np.arange(len(y))
    if max_points is not None and len(y) > max_points:
        shown = np.sort(np.random.default_rng(0).choice(len(y), max_points, replace=False))
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
    scores = {}
    for ax, name in zip(axes[0], names):
        x = taps[name]
        scores[name] = (
            float(silhouette_score(x, y, metric="cosine")) if len(classes) > 1 else float("nan")
        )
        perplexity = max(2.0, min(30.0, (len(shown) - 1) / 3))
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(x[shown])
        for k, label in enumerate(classes):
            ax.scatter(*points[y[shown] == k].T, s=6, label=label)
        ax.set_title(f"{name}\nsilhouette {scores[name]:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return scores
