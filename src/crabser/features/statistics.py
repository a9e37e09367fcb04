"""Statistics of feature frames: running mean and std over many ``(T, ...)`` arrays, and the map of
a group's frames (a speaker's, a corpus's) onto a model's training-split statistics
(``model.normalize_per``). numpy only, for training and prediction alike."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class RunningMoments:
    """Mean and std per feature over the frames of ``(T, ...)`` arrays added one at a time
    (float64 running sums, so the arrays need not be held together)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.count = 0

    def add(self, array: np.ndarray) -> None:
        values = array.astype(np.float64)
        if self.total is None:
            self.total, self.squares = np.zeros(values.shape[1:]), np.zeros(values.shape[1:])
        self.total += values.sum(axis=0)
        self.squares += (values**2).sum(axis=0)
        self.count += len(values)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(mean, std)``; ValueError if nothing was added."""
        if self.total is None or self.squares is None:
            raise ValueError("feature_statistics needs at least one array")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 0.0))
        return mean.astype(np.float32), std.astype(np.float32)


def feature_statistics(arrays: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over all frames of ``(T, ...)`` feature arrays (:class:`RunningMoments`)."""
    moments = RunningMoments()
    for array in arrays:
        moments.add(array)
    return moments.result()


def to_reference(
    array: np.ndarray,
    group: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    floor: float = 1e-5,
) -> np.ndarray:
    """``array`` z-normalised with its group's ``(mean, std)`` and mapped onto the ``reference``
    ``(mean, std)``: the reference's normaliser then sees the group-normalised frames
    (``model.normalize_per``). Same dtype as ``array``; ``std`` is floored as in
    :class:`crabser.models.blocks.FeatureNormalizer`."""
    mean, std = group
    reference_mean, reference_std = reference
    values = array.astype(np.float32)
    mapped: np.ndarray = (values - mean) / np.maximum(std, floor) * reference_std + reference_mean
    return mapped.astype(array.dtype)
