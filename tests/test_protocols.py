"""Group k-fold and per-fold splits: disjoint speakers, validation never from the test fold."""

from __future__ import annotations

import pandas as pd
import pytest

from crabser.data.corpora import emodb as emodb_adapter
from crabser.data.manifest import Manifest, ManifestError
from crabser.data.protocols import fold_split, group_folds, random_split, speaker_holdout


def _manifest(speakers: dict[str, int], session: dict[str, str] | None = None) -> Manifest:
    rows = []
    for speaker, count in speakers.items():
        for i in range(count):
            rows.append(
                {
                    "id": f"{speaker}_{i}",
                    "audio": "x.wav",
                    "label": "a",
                    "speaker": speaker,
                    "session": (session or {}).get(speaker, ""),
                }
            )
    return Manifest(pd.DataFrame(rows))


def test_leave_one_group_out_and_balanced_k_fold():
    manifest = _manifest({"s1": 10, "s2": 10, "s3": 4, "s4": 4, "s5": 2, "s6": 2})
    loso = group_folds(manifest).frame
    assert loso.groupby("speaker")["fold"].nunique().eq(1).all() and loso["fold"].nunique() == 6
    three = group_folds(manifest, 3, seed=1).frame
    sizes = three.groupby("fold").size().tolist()
    assert sorted(sizes) == [
        10,
        10,
        12,
    ]  # largest-first dealing: {s1}, {s2}, {s3, s4, s5} + s6 on the first tie
    assert three.groupby("speaker")["fold"].nunique().eq(1).all()
    with pytest.raises(ManifestError, match="between 2 and 6"):
        group_folds(manifest, 7)


def test_folds_by_session_keep_both_speakers_of_a_session_together():
    manifest = _manifest(
        {"Ses01F": 3, "Ses01M": 3, "Ses02F": 3, "Ses02M": 3},
        {"Ses01F": "1", "Ses01M": "1", "Ses02F": "2", "Ses02M": "2"},
    )
    frame = group_folds(manifest, by="session").frame
    assert frame.groupby("session")["fold"].nunique().eq(1).all() and frame["fold"].nunique() == 2


def test_fold_split_validation_comes_from_training_speakers_only(emodb):
    manifest = group_folds(emodb_adapter.prepare(emodb), 5, seed=0)
    for fold in range(5):
        frame = fold_split(manifest, fold, val_speakers=2, seed=0).frame
        speakers = {
            split: set(frame.loc[frame["split"] == split, "speaker"])
            for split in ("train", "val", "test")
        }
        assert (
            len(speakers["test"]) == 2 and len(speakers["val"]) == 2 and len(speakers["train"]) == 6
        )
        assert not (speakers["val"] & speakers["test"]) and not (
            speakers["train"] & (speakers["val"] | speakers["test"])
        )
        assert set(frame.loc[frame["fold"] == fold, "split"]) == {"test"}
    with pytest.raises(ManifestError, match="fold 9"):
        fold_split(manifest, 9)


def _labelled(rows: list[tuple[str, str]]) -> Manifest:
    """A manifest of (speaker, label) rows."""
    frame = pd.DataFrame(
        [
            {"id": f"u{i}", "audio": "x.wav", "speaker": sp, "label": lab}
            for i, (sp, lab) in enumerate(rows)
        ]
    )
    return Manifest(frame)


def test_a_class_with_no_training_utterance_is_warned_about(caplog):
    manifest = _labelled([("s1", "anger"), ("s2", "anger"), ("s3", "anger"), ("s3", "fear")])
    with caplog.at_level("WARNING", logger="crabser.data.protocols"):
        split = speaker_holdout(manifest, test_speakers=["s3"], val_speakers=["s2"])
    assert (split.frame["split"] == "train").any()
    warned = [r.getMessage() for r in caplog.records if "no training utterance" in r.getMessage()]
    assert len(warned) == 1 and "fear" in warned[0] and "anger" not in warned[0]


def test_random_split_is_stratified_seeded_and_keeps_training_rows():
    manifest = _labelled([("", label) for label in ("a", "b") for _ in range(20)] + [("", "rare")])
    first = random_split(manifest, val_fraction=0.1, test_fraction=0.2, seed=3).frame
    again = random_split(manifest, val_fraction=0.1, test_fraction=0.2, seed=3).frame
    assert first["split"].tolist() == again["split"].tolist()
    counts = first.groupby(["label", "split"]).size().unstack(fill_value=0)
    assert counts.loc["a"].to_dict() == {"test": 4, "train": 14, "val": 2}
    assert counts.loc["rare", "train"] == 1  # a class too small to hold out stays in training
    with pytest.raises(ManifestError, match="less than 1"):
        random_split(manifest, val_fraction=0.5, test_fraction=0.5)


def test_speaker_holdout_without_speakers_points_to_the_way_out():
    with pytest.raises(ManifestError, match="protocol: random"):
        speaker_holdout(_labelled([("", "a"), ("", "b")]))


def test_balanced_draw_spreads_the_speakers_over_the_groups():
    import numpy as np

    from crabser.data.protocols import balanced_draw
    from crabser.errors import ManifestError

    speakers = [f"a{i}" for i in range(5)] + ["b0", "b1", "c0"]
    groups = ["a"] * 5 + ["b", "b", "c"]
    drawn = balanced_draw(speakers, groups, 4, np.random.default_rng(0))
    counts = {g: sum(s.startswith(g) for s in drawn) for g in "abc"}
    assert counts == {"a": 3, "b": 1, "c": 0}  # c keeps its only speaker for training
    even = balanced_draw(speakers, groups, 2, np.random.default_rng(1))
    assert {s[0] for s in even} == {"a", "b"}
    with pytest.raises(ManifestError, match="cannot draw 6"):
        balanced_draw(speakers, groups, 6, np.random.default_rng(0))


def test_fold_split_can_draw_validation_speakers_from_every_training_corpus():
    frame = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(12)],
            "audio": [f"u{i}.wav" for i in range(12)],
            "label": ["x", "y"] * 6,
            "speaker": ["a1", "a2", "a3", "a4", "a5", "a6", "b1", "b2", "c1", "c2", "d1", "d2"],
            "corpus": ["a"] * 6 + ["b", "b", "c", "c", "d", "d"],
            "fold": [0] * 6 + [1, 1, 2, 2, 3, 3],
        }
    )
    split = fold_split(Manifest(frame), 3, val_speakers=3, seed=0, balance="corpus").frame
    val = split.loc[split["split"] == "val"]
    assert sorted(val["corpus"]) == ["a", "b", "c"]
    assert set(split.loc[split["split"] == "test", "corpus"]) == {"d"}
