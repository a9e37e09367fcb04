"""The random-forest stacker on synthetic base-model outputs; a damaged stack folder."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from crabser.evaluation.stacking import ForestSettings, StackedForest, balanced_subset


def test_balanced_subset_takes_the_same_count_of_every_class():
    labels = [0] * 30 + [1] * 8 + [2] * 12
    subset = balanced_subset(labels, None, seed=0)
    assert np.bincount(np.asarray(labels)[subset]).tolist() == [8, 8, 8]
    assert np.bincount(np.asarray(labels)[balanced_subset(labels, 5, seed=0)]).tolist() == [5, 5, 5]
    assert len(set(subset.tolist())) == len(subset)


def test_stack_learns_which_base_model_to_trust():
    rng = np.random.default_rng(0)
    n, classes = 600, 3
    y = rng.integers(0, classes, n)
    good = np.eye(classes)[y] * 3 + rng.normal(0, 1.0, (n, classes))  # informative logits
    noise = rng.normal(0, 1.0, (n, classes))  # a useless base model
    features = np.concatenate([noise, good], axis=1)
    train, test = slice(0, 400), slice(400, n)
    forest = StackedForest(ForestSettings(trees=50, folds=5), classes).fit(
        features[train], y[train]
    )
    assert len(forest.forests) == 5 and 0.0 < forest.out_of_fold_macro_f1 <= 1.0
    proba = forest.predict_proba(features[test])
    assert proba.shape == (200, classes) and np.allclose(proba.sum(axis=1), 1.0)
    stacked = (proba.argmax(1) == y[test]).mean()
    assert stacked > 0.85 and stacked > (noise[test].argmax(1) == y[test]).mean() + 0.4
    importance = np.mean([f.feature_importances_ for f in forest.forests], axis=0)
    assert importance[classes:].sum() > 0.8  # the forests lean on the informative model's logits


def test_stack_needs_two_items_per_class():
    with pytest.raises(ValueError, match="two items"):
        StackedForest(ForestSettings(), 2).fit(np.zeros((3, 2)), [0, 0, 1])


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "configs/stacking").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_shipped_stacking_files_give_valid_base_runs(path, monkeypatch):
    from crabser.stacking import base_config, load_stack_config

    monkeypatch.chdir(path.parents[2])
    stack = load_stack_config(path)
    runs = {str(base_config(stack, model).run_dir) for model in stack.models}
    assert len(runs) == len(stack.models) >= 2


def _stack_folder(folder: Path, labels: list[str]) -> Path:
    """The two files a stack folder's loader reads: stack.json (here without base runs) and
    stack.joblib (forests fitted on synthetic logits)."""
    import joblib

    forest = StackedForest(ForestSettings(trees=2, folds=2), 2).fit(
        np.eye(2)[[0, 1, 0, 1]], [0, 1, 0, 1]
    )
    (folder / "stack.json").write_text(json.dumps({"models": {}, "labels": labels}))
    joblib.dump(forest, folder / "stack.joblib")
    return folder


@pytest.mark.parametrize("how", ["empty", "garbage", "truncated"])
@pytest.mark.parametrize("name", ["stack.joblib", "stack.json"])
def test_a_damaged_stack_folder_is_an_error_naming_the_file(tmp_path, name, how):
    from crabser.inference import Recognizer
    from crabser.training.checkpoint_io import CheckpointError

    folder = _stack_folder(tmp_path, ["low", "high"])
    assert Recognizer.load(folder).labels == ["low", "high"]
    path = folder / name
    data = path.read_bytes()
    path.write_bytes(
        {"empty": b"", "garbage": b"\x80not a stack" * 10, "truncated": data[:-5]}[how]
    )
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        Recognizer.load(folder)


@pytest.mark.parametrize(
    "summary",
    [[], {"labels": ["low", "high"]}, {"models": {"a": 3}, "labels": ["low"]}, {"models": {}}],
)
def test_a_stack_json_of_the_wrong_shape_is_an_error_naming_the_file(tmp_path, summary):
    from crabser.inference import Recognizer
    from crabser.training.checkpoint_io import CheckpointError

    folder = _stack_folder(tmp_path, ["low", "high"])
    (folder / "stack.json").write_text(json.dumps(summary))
    with pytest.raises(CheckpointError, match=re.escape(str(folder / "stack.json"))):
        Recognizer.load(folder)
