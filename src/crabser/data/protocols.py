"""Evaluation protocols: assign the ``split`` column (train / val / test) of a manifest.

Speaker-independent hold-out: the test and validation speakers are named explicitly (so a run is
reproducible and the validation set never comes from the test speakers), or drawn by seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crabser.data.manifest import Manifest, ManifestError


def speaker_holdout(
    manifest: Manifest,
    test_speakers: Sequence[str] = (),
    val_speakers: Sequence[str] = (),
    n_test: int = 2,
    n_val: int = 1,
    seed: int = 0,
) -> Manifest:
    """Split by speaker: named (or seeded-random) test and val speakers, the rest train."""
    frame = manifest.frame.copy()
    if "speaker" not in frame or (frame["speaker"] == "").any():
        raise ManifestError("speaker_holdout needs a 'speaker' value on every row")
    speakers = sorted(frame["speaker"].unique())
    unknown = sorted((set(test_speakers) | set(val_speakers)) - set(speakers))
    if unknown:
        raise ManifestError(f"unknown speakers {unknown}; the manifest has {speakers}")
    overlap = set(test_speakers) & set(val_speakers)
    if overlap:
        raise ManifestError(f"speakers {sorted(overlap)} are in both test and val")
    rng = np.random.default_rng(seed)
    pool = [s for s in speakers if s not in set(test_speakers) | set(val_speakers)]
    rng.shuffle(pool)
    test = list(test_speakers) or pool[:n_test]
    pool = [s for s in pool if s not in test]
    val = list(val_speakers) or pool[:n_val]
    frame["split"] = "train"
    frame.loc[frame["speaker"].isin(val), "split"] = "val"
    frame.loc[frame["speaker"].isin(test), "split"] = "test"
    if not (frame["split"] == "train").any():
        raise ManifestError("no training speakers left after holding out test and val speakers")
    return Manifest(frame)
