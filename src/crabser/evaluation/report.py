"""A run's report folder: metrics.json, per-class table (CSV + Markdown), confusion-matrix PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crabser.io import atomic_path, json_text


def per_class_markdown(metrics: dict) -> str:
    """Per-class precision / recall / F1 / support as a Markdown table."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, row in metrics["per_class"].items():
        lines.append(
            f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
            f"{row['support']} |"
        )
    lines.append(
        f"\nWAR {metrics['war']:.4f} · UAR {metrics['uar']:.4f} · Macro-F1 "
        f"{metrics['macro_f1']:.4f}"
        f" · weighted F1 {metrics['weighted_f1']:.4f} · n = {metrics['n']}"
    )
    return "\n".join(lines) + "\n"


def plot_confusion(metrics: dict, path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metrics["labels"]
    normalised = np.asarray(metrics["confusion_normalised"])
    counts = np.asarray(metrics["confusion"])
    size = 1.0 + 0.8 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{normalised[i, j]:.2f}\n({counts[i, j]})",
                ha="center",
                va="center",
                fontsize=8,
                color=colour,
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"UAR {metrics['uar']:.3f} · WAR {metrics['war']:.3f}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def write_report(
    metrics: dict, folder: Path, prefix: str = "test", extra: dict | None = None
) -> dict[str, Path]:
    """Write ``<prefix>_metrics.json``, ``<prefix>_per_class.{csv,md}`` and
    ``<prefix>_confusion.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": folder / f"{prefix}_metrics.json",
        "per_class_md": folder / f"{prefix}_per_class.md",
        "per_class_csv": folder / f"{prefix}_per_class.csv",
        "confusion": folder / f"{prefix}_confusion.png",
    }
    with atomic_path(paths["metrics"]) as tmp:
        tmp.write_text(json_text({**metrics, **(extra or {})}, indent=2))
    with atomic_path(paths["per_class_md"]) as tmp:
        tmp.write_text(per_class_markdown(metrics))
    rows = ["class,precision,recall,f1,support"] + [
        f"{k},{v['precision']:.6f},{v['recall']:.6f},{v['f1']:.6f},{v['support']}"
        for k, v in metrics["per_class"].items()
    ]
    with atomic_path(paths["per_class_csv"]) as tmp:
        tmp.write_text("\n".join(rows) + "\n")
    plot_confusion(metrics, paths["confusion"])
    return paths


def write_predictions(
    path: Path, ids: Sequence[str], labels: Sequence[str], predictions: Sequence[str]
) -> Path:
    """``id,label,prediction`` rows of an evaluation, written atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame(
            {"id": list(ids), "label": list(labels), "prediction": list(predictions)}
        ).to_csv(tmp, index=False)
    return path
