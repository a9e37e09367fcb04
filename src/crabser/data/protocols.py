"""Evaluation protocols: assign the ``split`` column (train / val / test) of a manifest.

Speaker-independent hold-out: the test and validation speakers are named explicitly (so a run is
reproducible and the validation set never comes from the test speakers), or drawn by seed.
Group k-fold: a ``fold`` column by speaker or session (leave-one-group-out when k is not given);
:func:`fold_split` turns one fold into test and carves validation speakers from the other folds.
Official splits (MELD, MSP-Podcast) come from the corpus adapter (protocol ``given``).
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


def group_folds(manifest: Manifest, folds: int | None = None, by: str = "speaker", seed: int = 0) -> Manifest:
    """Assign a ``fold`` column so that every value of ``by`` (speaker, session) is in one fold.

    ``folds=None`` gives one fold per group (leave-one-speaker/session-out). Otherwise the groups,
    shuffled by ``seed``, are dealt largest-first to the fold with the fewest utterances so far,
    which keeps folds of similar size (e.g. 6-fold RAVDESS: 4 actors per fold).
    """
    frame = manifest.frame.copy()
    if by not in frame or (frame[by].astype(str) == "").any():
        raise ManifestError(f"group folds need a {by!r} value on every row")
    sizes = frame[by].astype(str).value_counts()
    groups = sorted(sizes.index)
    if folds is None:
        assignment = {group: i for i, group in enumerate(groups)}
    else:
        if not 2 <= folds <= len(groups):
            raise ManifestError(f"{folds} folds need between 2 and {len(groups)} {by} groups; there are {len(groups)}")
        order = list(np.random.default_rng(seed).permutation(groups))
        order.sort(key=lambda g: -sizes[g])  # stable: ties keep the seeded order
        load = [0] * folds
        assignment = {}
        for group in order:
            fold = min(range(folds), key=lambda f: (load[f], f))
            assignment[group] = fold
            load[fold] += int(sizes[group])
    frame["fold"] = frame[by].astype(str).map(assignment).astype(int)
    return Manifest(frame)


def fold_split(manifest: Manifest, fold: int, val_speakers: int = 2, seed: int = 0) -> Manifest:
    """The ``split`` of one fold: that fold is test, ``val_speakers`` speakers drawn from the other
    folds (never from the test fold) are val, the rest train."""
    frame = manifest.frame.copy()
    if "fold" not in frame:
        raise ManifestError("fold_split needs a 'fold' column; assign folds first")
    folds = frame["fold"].astype(int)
    if fold not in set(folds):
        raise ManifestError(f"fold {fold} is not in the manifest (folds: {sorted(set(folds))})")
    training = frame[folds != fold]
    speakers = sorted(training["speaker"].astype(str).unique())
    if len(speakers) <= val_speakers:
        raise ManifestError(f"fold {fold}: {len(speakers)} training speakers cannot give {val_speakers} for validation")
    rng = np.random.default_rng(seed + fold)
    val = set(rng.choice(speakers, size=val_speakers, replace=False).tolist()) if val_speakers else set()
    frame["split"] = "train"
    frame.loc[frame["speaker"].astype(str).isin(val) & (folds != fold), "split"] = "val"
    frame.loc[folds == fold, "split"] = "test"
    return Manifest(frame)
