"""Random-forest stacking of base models' outputs (StackingSER).

The meta-features of an utterance are its base models' logits side by side. The forest is fit on
a class-balanced subset (``per_class`` per class, by default the smallest class's count) with
stratified k-fold: one forest per fold, each scored on its held-out part (the out-of-fold
Macro-F1), and at prediction time the k forests' probabilities are averaged, as the reference
does. Forest settings follow the paper: 200 trees, depth 8, gini, at least 10 samples per leaf
and per split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike


@dataclass
class ForestSettings:
    """The meta-classifier's settings."""

    trees: int = 200
    max_depth: int = 8
    criterion: str = "gini"
    min_samples_leaf: int = 10
    min_samples_split: int = 10
    folds: int = 5
    per_class: int | None = None
    seed: int = 0


def balanced_subset(labels: ArrayLike, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of ``per_class`` items of every class (the smallest class's count when None or
    larger)."""
    y = np.asarray(labels)
    classes = sorted(set(y.tolist()))
    smallest = min(int((y == c).sum()) for c in classes)
    size = min(per_class or smallest, smallest)
    rng = np.random.default_rng(seed)
    return np.sort(
        np.concatenate([rng.choice(np.flatnonzero(y == c), size, replace=False) for c in classes])
    )


@dataclass
class StackedForest:
    """k forests over the base models' outputs; ``predict_proba`` averages them."""

    settings: ForestSettings
    num_classes: int
    forests: list = field(default_factory=list)
    out_of_fold_macro_f1: float = float("nan")

    def fit(self, features: np.ndarray, labels: ArrayLike) -> StackedForest:
        """Fit on a class-balanced subset of ``features`` with stratified k-fold."""
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.metrics import f1_score
        from sklearn.model_selection import StratifiedKFold

        s = self.settings
        all_labels = np.asarray(labels)
        subset = balanced_subset(all_labels, s.per_class, s.seed)
        x, y = features[subset], all_labels[subset]
        folds = min(s.folds, int(np.bincount(y).min()))
        if folds < 2:
            raise ValueError(
                "stacking needs at least two items of every class in the fitting split"
            )
        predictions = np.empty_like(y)
        self.forests = []
        for k, (fit, held) in enumerate(
            StratifiedKFold(folds, shuffle=True, random_state=s.seed).split(x, y)
        ):
            forest = RandomForestClassifier(
                n_estimators=s.trees,
                max_depth=s.max_depth,
                criterion=s.criterion,
                min_samples_leaf=s.min_samples_leaf,
                min_samples_split=s.min_samples_split,
                random_state=s.seed + k,
                n_jobs=1,
            ).fit(x[fit], y[fit])
            self.forests.append(forest)
            predictions[held] = self._proba([forest], x[held]).argmax(axis=1)
        self.out_of_fold_macro_f1 = float(f1_score(y, predictions, average="macro"))
        return self

    def _proba(self, forests: list, features: np.ndarray) -> np.ndarray:
        """Class probabilities in label order (a forest only knows the classes it saw)."""
        total = np.zeros((len(features), self.num_classes))
        for forest in forests:
            total[:, forest.classes_] += forest.predict_proba(features)
        return total / len(forests)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """The average of the k forests' probabilities, ``(n, classes)``."""
        if not self.forests:
            raise ValueError("the stacked forest is not fit")
        return self._proba(self.forests, features)
