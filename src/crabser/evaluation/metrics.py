"""SER metrics: WAR (accuracy), UAR (macro recall), macro / weighted F1, per-class scores,
confusion.

A class with no true example in the evaluated set is left out of UAR (its recall is undefined);
one never predicted has precision 0. Macro-F1 averages over every class that is true *or*
predicted (scikit-learn's default): a class predicted but absent from the truth has F1 0 and
counts, so a fold without, say, disgust is not flattered by dropping the disgust it wrongly
predicted. Weighted F1 weighs by true support, so such a class weighs 0 there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


def compute_metrics(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str]) -> dict:
    """All metrics of integer predictions against integer truths; ``labels`` names the indices."""
    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    if len(truth) == 0:
        raise ValueError("no examples to evaluate")
    all_classes = list(range(len(labels)))
    present = sorted(set(truth.tolist()))
    true_or_predicted = sorted(set(present) | set(predicted.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=all_classes, zero_division=0
    )
    counts = confusion_matrix(truth, predicted, labels=all_classes)
    row_sums = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(
        counts, row_sums, out=np.zeros(counts.shape, dtype=float), where=row_sums > 0
    )
    return {
        "n": len(truth),
        "war": float(np.mean(truth == predicted)),
        "uar": float(recall[present].mean()),
        "macro_f1": float(
            f1_score(truth, predicted, labels=true_or_predicted, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            f1_score(truth, predicted, labels=present, average="weighted", zero_division=0)
        ),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion": counts.tolist(),
        "confusion_normalised": normalised.tolist(),
    }


def metrics_by_group(
    y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike, labels: Sequence[str]
) -> dict[str, dict]:
    """WAR, UAR, Macro-F1 and n of each group (a corpus) on its own rows: UAR averages the classes
    that group has, so a class one corpus lacks does not count against it."""
    truth, predicted, group_of = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    summary = {}
    for group in sorted(set(group_of.tolist())):
        rows = group_of == group
        metrics = compute_metrics(truth[rows], predicted[rows], labels)
        summary[group] = {key: metrics[key] for key in ("war", "uar", "macro_f1", "n")}
    return summary
