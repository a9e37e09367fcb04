"""Balanced bootstrap evaluation (StackingSER): Macro-F1 over class-balanced subsets of a set.

Each of ``n_subsets`` subsets draws the same number of utterances from every class present
(``per_class``, by default the smallest class's count; StackingSER: 200), without replacement
within a subset. Balanced subsets weigh every class alike, which raises Macro-F1 above the full
set's on imbalanced data: report both (``evaluate`` writes this beside the plain metrics).
Macro-F1 of a subset averages over the classes true or predicted in it, as
:func:`crabser.evaluation.metrics.compute_metrics` does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import f1_score


def balanced_bootstrap(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    n_subsets: int = 100,
    per_class: int | None = None,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Macro-F1 mean, std, min, max and a percentile interval over balanced subsets."""
    truth_all, predicted_all = np.asarray(y_true), np.asarray(y_pred)
    classes = sorted(set(truth_all.tolist()))
    members = {c: np.flatnonzero(truth_all == c) for c in classes}
    smallest = min(len(m) for m in members.values())
    size = min(per_class or smallest, smallest)
    rng = np.random.default_rng(seed)
    subset_scores = []
    for _ in range(n_subsets):
        picked = np.concatenate([rng.choice(members[c], size=size, replace=False) for c in classes])
        truth, predicted = truth_all[picked], predicted_all[picked]
        seen = sorted(set(classes) | set(predicted.tolist()))
        subset_scores.append(
            f1_score(truth, predicted, labels=seen, average="macro", zero_division=0)
        )
    scores = np.array(subset_scores)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return {
        "macro_f1_mean": float(scores.mean()),
        "macro_f1_std": float(scores.std()),
        "macro_f1_min": float(scores.min()),
        "macro_f1_max": float(scores.max()),
        "macro_f1_ci": [float(low), float(high)],
        "confidence": confidence,
        "subsets": n_subsets,
        "per_class": int(size),
    }
