"""``train.refit``: after the fit, the run's model is trained again on training + validation
utterances for the epochs validation chose, and becomes the model evaluate, predict and export use."""

from __future__ import annotations

import pandas as pd
import pytest
import tiny_runs
import torch

from crabser import pipeline
from crabser.inference import Recognizer
from crabser.training.checkpoint_io import run_checkpoint


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture
def refitted(tmp_path):
    config = tiny_runs.tiny_config(tmp_path, "refitted", epochs=5, refit=True)
    manifest = tiny_runs.tiny_manifest(tmp_path)
    pipeline.save_run_inputs(config, manifest)
    result = pipeline.train(config, manifest, tiny_runs.encoders())
    return config, manifest, result


def test_refit_trains_on_training_and_validation_data_for_the_chosen_epochs(refitted):
    config, manifest, result = refitted
    _, best_epoch = pipeline.best_validation(config)
    refit_dir = config.run_dir / "refit"
    refit_manifest = pd.read_csv(refit_dir / "manifest.csv")
    trained = set(refit_manifest.loc[refit_manifest["split"] == "train", "id"])
    frame = manifest.frame
    assert trained == set(frame.loc[frame["split"].isin(["train", "val"]), "id"])  # validation speakers too
    assert not trained & set(frame.loc[frame["split"] == "test", "id"])  # never the test split
    log = pd.read_csv(refit_dir / "logs" / "metrics.csv").dropna(subset=["train_loss"])
    assert len(log) == best_epoch  # the epochs validation chose, not train.epochs
    model = run_checkpoint(config.run_dir)
    assert model.name == "refit.ckpt"
    refit, best = _weights(model), _weights(result.best_checkpoint)
    last = _weights(refit_dir / "checkpoints" / "last.ckpt")
    assert all(torch.equal(refit[k], last[k]) for k in refit)
    assert any(not torch.equal(refit[k], best[k]) for k in refit)  # a different model from the selected one


def test_evaluate_and_predict_use_the_refitted_model(refitted):
    config, manifest, _ = refitted
    metrics, _ = pipeline.evaluate(config, manifest, tiny_runs.encoders(), "test")
    report = pd.read_json(config.run_dir / "report" / "test_metrics.json", typ="series")
    assert report["checkpoint"].endswith("refit.ckpt")
    assert metrics["uar"] > 0.25  # above chance (four classes)
    recognizer = Recognizer.from_run(config.run_dir)
    refit = _weights(config.run_dir / "checkpoints" / "refit.ckpt")
    assert all(torch.equal(v, refit[f"model.{k}"]) for k, v in recognizer.module.model.state_dict().items())


def test_a_resumed_run_keeps_its_refit_and_a_plain_run_uses_its_best_checkpoint(refitted, tmp_path):
    config, manifest, _ = refitted
    target = config.run_dir / "checkpoints" / "refit.ckpt"
    stamp = target.stat().st_mtime_ns
    pipeline.train(config, manifest, tiny_runs.encoders(), resume=True)
    assert target.stat().st_mtime_ns == stamp
    plain = tiny_runs.tiny_config(tmp_path, "plain", epochs=2)
    pipeline.train(plain, manifest, tiny_runs.encoders())
    assert run_checkpoint(plain.run_dir) == plain.run_dir / "checkpoints" / "best.ckpt"
    assert not (plain.run_dir / "refit").exists()
