"""Evaluation protocols: assign the ``split`` column (train / val / test) of a manifest.

Speaker-independent hold-out: the test and validation speakers are named explicitly (so a run is
reproducible and the validation set never comes from the test speakers), or drawn by seed.
Group k-fold: a ``fold`` column by speaker or session (leave-one-group-out when k is not given);
:func:`fold_split` turns one fold into test and carves validation speakers from the other folds.
Official splits (MELD, MSP-Podcast) come from the corpus adapter (protocol ``given``).
Random split (protocol ``random``): for corpora without speakers (a ``folder`` of
``<label>/<clip>``);
each class is shuffled by seed and cut into test / val / train shares, so every class is in every
split it is big enough for. It is not speaker-independent, and a warning says so.

Every split is checked: a class of the run with no training utterance gets a warning naming it
(:func:`warn_empty_training_classes`), since the model cannot learn it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from crabser.data.manifest import Manifest, ManifestError

log = logging.getLogger(__name__)


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
    no_speaker = frame[frame["speaker"] == ""] if "speaker" in frame else frame
    if len(no_speaker):
        raise ManifestError(
            f"speaker_holdout needs a speaker on every row; {len(no_speaker)} rows have none (e.g. "
            f"{no_speaker['id'].iloc[0]!r}): "
            "give speakers (folder corpus: <label>/<speaker>/<clip>) or set data.protocol: random"
        )
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
    return warn_empty_training_classes(Manifest(frame))


def random_split(
    manifest: Manifest, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> Manifest:
    """A stratified random split: per class, ``test_fraction`` of the rows (rounded) test,
    ``val_fraction`` val, the rest train (at least one row of a class stays in train)."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ManifestError(
            f"random split: val ({val_fraction}) and test ({test_fraction}) fractions must add up "
            "to less than 1"
        )
    frame = manifest.frame.copy()
    frame["split"] = "train"
    rng = np.random.default_rng(seed)
    for label in sorted(frame["label"].unique()):
        rows = rng.permutation(frame.index[frame["label"] == label].to_numpy())
        n_test = min(round(len(rows) * test_fraction), len(rows) - 1)
        n_val = min(round(len(rows) * val_fraction), len(rows) - 1 - n_test)
        frame.loc[rows[:n_test], "split"] = "test"
        frame.loc[rows[n_test : n_test + n_val], "split"] = "val"
    log.warning("random split: not speaker-independent (a speaker can be in train and test)")
    return warn_empty_training_classes(Manifest(frame))


def empty_training_classes(manifest: Manifest, labels: Sequence[str] | None = None) -> list[str]:
    """Classes (``labels``, else every label of the manifest) with no utterance in the train
    split."""
    frame = manifest.frame
    trained = set(frame.loc[frame["split"] == "train", "label"])
    return [label for label in (labels or manifest.labels) if label not in trained]


def warn_empty_training_classes(
    manifest: Manifest, labels: Sequence[str] | None = None
) -> Manifest:
    """Log a warning naming the classes with no training utterance; return the manifest."""
    empty = empty_training_classes(manifest, labels)
    if empty:
        log.warning(
            "no training utterance of class(es) %s: the model cannot learn them; change the split "
            "or data.labels",
            ", ".join(empty),
        )
    return manifest


def group_folds(
    manifest: Manifest, folds: int | None = None, by: str = "speaker", seed: int = 0
) -> Manifest:
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
            raise ManifestError(
                f"{folds} folds need between 2 and {len(groups)} {by} groups; there are "
                f"{len(groups)}"
            )
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


def balanced_draw(
    speakers: list[str], groups: list[str], count: int, rng: np.random.Generator
) -> set[str]:
    """``count`` of ``speakers`` spread as evenly as the groups allow (one more in the groups a
    seeded shuffle puts first), each group keeping at least one speaker out of the draw."""
    members: dict[str, list[str]] = {}
    for speaker, group in zip(speakers, groups):
        members.setdefault(group, []).append(speaker)
    order = [str(g) for g in rng.permutation(sorted(members))]
    taken = dict.fromkeys(order, 0)
    while sum(taken.values()) < count:
        open_groups = [g for g in order if taken[g] < len(members[g]) - 1]
        if not open_groups:
            raise ManifestError(
                f"cannot draw {count} validation speakers and leave each corpus a training speaker"
            )
        for group in open_groups[: count - sum(taken.values())]:
            taken[group] += 1
    drawn: set[str] = set()
    for group in order:
        drawn |= set(rng.choice(members[group], size=taken[group], replace=False).tolist())
    return drawn


def fold_split(
    manifest: Manifest, fold: int, val_speakers: int = 2, seed: int = 0, balance: str = "none"
) -> Manifest:
    """The ``split`` of one fold: that fold is test, ``val_speakers`` speakers drawn from the other
    folds (never from the test fold) are val, the rest train. ``balance="corpus"`` draws them
    evenly from each corpus of the training folds (:func:`balanced_draw`)."""
    frame = manifest.frame.copy()
    if "fold" not in frame:
        raise ManifestError("fold_split needs a 'fold' column; assign folds first")
    folds = frame["fold"].astype(int)
    if fold not in set(folds):
        raise ManifestError(f"fold {fold} is not in the manifest (folds: {sorted(set(folds))})")
    training = frame[folds != fold]
    speakers = sorted(
        set(training["speaker"].astype(str)) - {""}
    )  # rows without a speaker stay in train
    if len(speakers) <= val_speakers:
        raise ManifestError(
            f"fold {fold}: {len(speakers)} training speakers cannot give {val_speakers} for "
            "validation"
        )
    rng = np.random.default_rng(seed + fold)
    if balance == "corpus" and "corpus" not in training:
        raise ManifestError("validation speakers balanced by corpus need a 'corpus' column")
    if balance == "corpus":
        corpus_of = dict(zip(training["speaker"].astype(str), training["corpus"].astype(str)))
        val = balanced_draw(speakers, [corpus_of[s] for s in speakers], val_speakers, rng)
    elif val_speakers:
        val = set(rng.choice(speakers, size=val_speakers, replace=False).tolist())
    else:
        val = set()
    frame["split"] = "train"
    frame.loc[frame["speaker"].astype(str).isin(val) & (folds != fold), "split"] = "val"
    frame.loc[folds == fold, "split"] = "test"
    return warn_empty_training_classes(Manifest(frame))
