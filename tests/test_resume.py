"""Exact resume (issue 19, items 3 and 4): a run interrupted anywhere and resumed with
``resume=True``
ends with the same checkpoints, metrics and training log as a run that never stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tiny_runs
import torch
from tiny_runs import Interrupt, KillAt

from crabser import crossval as cv
from crabser import pipeline
from crabser.runs import RunFolder
from crabser.training import fit

EPOCHS = 5


def _train(root: Path, name: str, sampler: str, **kwargs) -> fit.TrainResult:
    config = tiny_runs.tiny_config(root, name, epochs=EPOCHS, sampler=sampler)
    return fit.train(config, tiny_runs.tiny_manifest(root), tiny_runs.encoders(), **kwargs)


def _state(path: Path) -> tuple[int, dict[str, torch.Tensor]]:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved["epoch"], saved["state_dict"]


def _assert_same_run(root: Path, a: str, b: str) -> None:
    """Same best and last checkpoints (epoch and every weight), training log and test metrics."""
    for name in ("best", "last"):
        (epoch_a, weights_a), (epoch_b, weights_b) = (
            _state(root / f"runs/{run}/checkpoints/{name}.ckpt") for run in (a, b)
        )
        assert epoch_a == epoch_b, name
        assert weights_a.keys() == weights_b.keys()
        for key in weights_a:
            torch.testing.assert_close(
                weights_a[key], weights_b[key], rtol=0, atol=0, msg=f"{name}.ckpt: {key}"
            )
    logs = [pd.read_csv(root / f"runs/{run}/logs/metrics.csv") for run in (a, b)]
    pd.testing.assert_frame_equal(*logs)
    configs = [tiny_runs.tiny_config(root, run) for run in (a, b)]
    assert RunFolder.of(configs[0]).best_validation() == RunFolder.of(configs[1]).best_validation()
    manifest, encoders = tiny_runs.tiny_manifest(root), tiny_runs.encoders()
    scores = [pipeline.evaluate(config, manifest, encoders)[0] for config in configs]
    assert scores[0]["uar"] == scores[1]["uar"] and scores[0]["confusion"] == scores[1]["confusion"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Uninterrupted runs of each training sampler, the reference of every resumed one."""
    root = tmp_path_factory.mktemp("resume")
    for sampler in ("length_bucketed", "class_balanced", "shuffle"):
        _train(root, f"whole-{sampler}", sampler)
    return root


KILLS = {
    "mid-epoch": ("train_batch", 2, 2),
    "in validation": ("validation_batch", 1, 1),
    "after validation": ("epoch_end", 2, 0),  # best.ckpt has this epoch, last.ckpt the one before
    "between epochs": ("epoch_start", 3, 0),
}


@pytest.mark.parametrize("sampler", ["length_bucketed", "class_balanced", "shuffle"])
@pytest.mark.parametrize("point", list(KILLS))
def test_a_run_stopped_anywhere_and_resumed_ends_like_an_uninterrupted_one(root, point, sampler):
    name = f"{point.replace(' ', '-')}-{sampler}"
    with pytest.raises(Interrupt):
        _train(root, name, sampler, callbacks=[KillAt(*KILLS[point])])
    result = _train(root, name, sampler, resume=True)
    assert result.epochs == EPOCHS
    _assert_same_run(root, f"whole-{sampler}", name)


def test_a_run_stopped_twice_resumes_exactly_both_times(root):
    for epoch in (1, 3):
        with pytest.raises(Interrupt):
            _train(
                root,
                "twice",
                "length_bucketed",
                resume=True,
                callbacks=[KillAt("train_batch", epoch, 1)],
            )
    _train(root, "twice", "length_bucketed", resume=True)
    _assert_same_run(root, "whole-length_bucketed", "twice")


KILLED_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_resume import _train
from tiny_runs import KillAt
kill = KillAt("train_batch", 2, 1, hard=True)
_train(Path({root!r}), "killed", "length_bucketed", callbacks=[kill])
"""


def test_resume_after_kill_9_keeps_the_log_of_the_finished_epochs(root):
    """The real thing: SIGKILL mid-epoch (no exception handler, no logger flush at exit), then
    resume."""
    script = KILLED_CHILD.format(tests=str(Path(__file__).parent), root=str(root))
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    log = pd.read_csv(root / "runs/killed/logs/metrics.csv")
    assert sorted(log["epoch"].unique()) == [
        0,
        1,
    ]  # the two finished epochs are on disk at the kill
    _train(root, "killed", "length_bucketed", resume=True)
    log = pd.read_csv(root / "runs/killed/logs/metrics.csv")
    for epoch in range(EPOCHS):  # each epoch once: one validation row and one training row
        rows = log[log["epoch"] == epoch]
        assert rows["val_uar"].notna().sum() == 1 and rows["train_loss"].notna().sum() == 1, epoch
    _assert_same_run(root, "whole-length_bucketed", "killed")


def test_raw_items_draw_the_same_crop_and_mix_for_an_epoch_whatever_came_before(write_wav):
    """A resumed run (a fresh dataset) crops and mixes epoch k as the uninterrupted run did."""
    from crabser.data.sampling import EpochTagged, LengthBucketSampler
    from crabser.training.finetune import RawDataset, RawUtterance

    rng = np.random.default_rng(0)
    items = [
        RawUtterance(
            f"u{k}",
            str(write_wav(f"u{k}.wav", 0.3 * rng.standard_normal(32000).astype(np.float32))),
            "t",
            k % 2,
            2.0,
        )
        for k in range(4)
    ]

    def epochs(dataset: RawDataset, sampler, count: int) -> list[list[dict]]:
        return [
            [dataset[key] for batch in EpochTagged(sampler) for key in batch] for _ in range(count)
        ]

    running = epochs(
        RawDataset(items, 0.5, train=True, seed=3, eam=True),
        LengthBucketSampler([2.0] * 4, 2, seed=3),
        3,
    )
    resumed_sampler = LengthBucketSampler([2.0] * 4, 2, seed=3)
    resumed_sampler.set_epoch(2)
    resumed = epochs(RawDataset(items, 0.5, train=True, seed=3, eam=True), resumed_sampler, 1)[0]
    for a, b in zip(running[2], resumed, strict=True):
        assert (
            a["id"] == b["id"]
            and a["mix_label"] == b["mix_label"]
            and a["mix_lambda"] == b["mix_lambda"]
        )
        np.testing.assert_array_equal(a["wave"], b["wave"])
    first = {s["id"]: s["wave"] for s in running[0]}
    assert any(
        not np.array_equal(first[s["id"]], s["wave"]) for s in running[2]
    )  # new draws each epoch


def test_an_interrupted_crossval_resumes_to_the_same_folds(root, monkeypatch):
    """``crabser crossval`` reads finished folds back and resumes the interrupted one from its
    last.ckpt."""
    from crabser.data.protocols import group_folds

    manifest = group_folds(tiny_runs.tiny_manifest(root), 3, by="speaker")

    def crossval(name: str) -> dict:
        config = tiny_runs.tiny_config(root, name, epochs=EPOCHS)
        config = config.model_copy(
            update={
                "data": config.data.model_copy(
                    update={"protocol": "folds", "val_speakers_per_fold": 1}
                )
            }
        )
        return cv.crossval(config, manifest, tiny_runs.encoders())

    whole = crossval("cv-whole")
    train, stopped = fit.train, []

    def train_stopping_fold_1_once(config, *args, **kwargs):
        if config.name.endswith("fold1") and not stopped:
            stopped.append(config.name)
            kwargs["callbacks"] = [KillAt("train_batch", 2, 1)]
        return train(config, *args, **kwargs)

    monkeypatch.setattr(cv, "train", train_stopping_fold_1_once)
    with pytest.raises(Interrupt):
        crossval("cv-cut")
    assert stopped == ["cv-cut/fold1"]
    resumed = crossval("cv-cut")
    for key in ("folds", "mean", "pooled"):
        assert resumed[key] == whole[key]
    _assert_same_run(root, "cv-whole/fold1", "cv-cut/fold1")


def test_a_run_stopped_early_is_not_trained_further_when_resumed(tmp_path):
    """A fit ended by ``train.patience`` and resumed (as crossval and experiments resume a run
    whose evaluation or refit crashed) keeps its checkpoints and log and trains no epoch more."""
    epochs = 30
    config = tiny_runs.tiny_config(tmp_path, "early", epochs=epochs, patience=1)
    manifest = tiny_runs.tiny_manifest(tmp_path)
    first = fit.train(config, manifest, tiny_runs.encoders())
    assert first.epochs < epochs  # the premise: it stopped early
    kept = [config.run_dir / f"checkpoints/{name}.ckpt" for name in ("best", "last")]
    kept.append(RunFolder.of(config).training_log)
    before = [path.read_bytes() for path in kept]
    resumed = fit.train(config, manifest, tiny_runs.encoders(), resume=True)
    assert (resumed.epochs, resumed.best_val_uar) == (first.epochs, first.best_val_uar)
    assert [path.read_bytes() for path in kept] == before


def test_an_unfinished_run_resumes_only_with_the_settings_it_was_started_with(tmp_path):
    """A run with a last.ckpt to continue is refused under other settings before its config.yaml
    is overwritten; how it ran (threads) may differ."""
    from crabser.data.manifest import write_manifest
    from crabser.errors import CrabserError

    manifest = tiny_runs.tiny_manifest(tmp_path)
    write_manifest(manifest, tmp_path / "manifest.csv")

    def config(**settings):
        base = tiny_runs.tiny_config(tmp_path, "unfinished", epochs=EPOCHS, **settings)
        data = base.data.model_copy(update={"manifest": str(tmp_path / "manifest.csv")})
        return base.model_copy(update={"data": data})

    started = config()
    pipeline.prepare(started)
    with pytest.raises(Interrupt):
        fit.train(started, manifest, tiny_runs.encoders(), callbacks=[KillAt("train_batch", 2, 1)])
    saved = (started.run_dir / "config.yaml").read_text()
    changed = config(lr_head=1e-3)
    refusal = r"unfinished has checkpoints/last.ckpt to resume, trained with other settings " + (
        r"\(train.lr_head: 0.003 there, 0.001 now\)"
    )
    with pytest.raises(CrabserError, match=refusal):  # crossval, experiments, stacks
        cv.train_and_test_runs({"run": (changed, manifest)}, lambda _: tiny_runs.encoders())
    with pytest.raises(CrabserError, match=refusal):  # crabser train --resume
        pipeline.prepare(changed, resume=True)
    assert (started.run_dir / "config.yaml").read_text() == saved
    other_split = started.model_copy(
        update={"data": started.data.model_copy(update={"val_speakers": ["s9"]})}
    )
    with pytest.raises(CrabserError, match=r"data.val_speakers: \[\] there, \['s9'\] now"):
        pipeline.prepare(other_split, resume=True)  # the data it learnt from is a setting too
    cv.train_and_test_runs({"run": (config(threads=2), manifest)}, lambda _: tiny_runs.encoders())
    assert RunFolder.of(started).metrics_file().is_file()
