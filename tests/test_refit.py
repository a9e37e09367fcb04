"""``train.refit``: after the fit, the run's model is trained again on training + validation
utterances for the epochs validation chose, and becomes the model evaluate, predict and export
use."""

from __future__ import annotations

import pandas as pd
import pytest
import tiny_runs
import torch

from crabser import pipeline
from crabser.inference import Recognizer
from crabser.runs import RunFolder
from crabser.training import fit
from crabser.training.checkpoint_io import run_checkpoint
from crabser.training.optim import cosine_factor


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture
def refitted(tmp_path):
    config = tiny_runs.tiny_config(tmp_path, "refitted", epochs=5, refit=True)
    manifest = tiny_runs.tiny_manifest(tmp_path)
    RunFolder.of(config).save_inputs(config, manifest)
    result = fit.train(config, manifest, tiny_runs.encoders())
    return config, manifest, result


def test_refit_trains_on_training_and_validation_data_for_the_chosen_epochs(refitted):
    config, manifest, result = refitted
    _, best_epoch = RunFolder.of(config).best_validation()
    refit_dir = config.run_dir / "refit"
    refit_manifest = pd.read_csv(refit_dir / "manifest.csv")
    trained = refit_manifest.loc[refit_manifest["split"] == "train", "id"]
    frame = manifest.frame
    assert set(trained) == set(
        frame.loc[frame["split"].isin(["train", "val"]), "id"]
    )  # validation speakers too
    assert trained.is_unique and "val" not in set(refit_manifest["split"])
    assert not set(trained) & set(frame.loc[frame["split"] == "test", "id"])  # never the test split
    log = pd.read_csv(refit_dir / "logs" / "metrics.csv")
    assert (
        len(log.dropna(subset=["train_loss"])) == best_epoch
    )  # the epochs validation chose, not train.epochs
    assert "val_uar" not in log  # no validation in the refit
    model = run_checkpoint(config.run_dir)
    assert model.name == "refit.ckpt"
    saved = torch.load(model, map_location="cpu", weights_only=False)
    assert saved["epoch"] == best_epoch
    lr = saved["optimizer_states"][0]["param_groups"][0][
        "lr"
    ]  # where the 5-epoch cosine is after best_epoch
    assert lr == pytest.approx(
        config.train.lr_head * cosine_factor(best_epoch, 5, config.train.min_lr_ratio)
    )
    assert (
        sorted(p.name for p in (refit_dir / "checkpoints").iterdir()) == []
    )  # its last.ckpt became refit.ckpt
    refit, best = saved["state_dict"], _weights(result.best_checkpoint)
    assert any(
        not torch.equal(refit[k], best[k]) for k in refit
    )  # a different model from the selected one


def test_evaluate_and_predict_use_the_refitted_model(refitted):
    config, manifest, _ = refitted
    metrics, _ = pipeline.evaluate(config, manifest, tiny_runs.encoders(), "test")
    report = pd.read_json(config.run_dir / "report" / "test_metrics.json", typ="series")
    assert report["checkpoint"].endswith("refit.ckpt")
    pipeline.evaluate(
        config, manifest, tiny_runs.encoders(), "val"
    )  # validation is scored by the model that never saw it
    assert pd.read_json(config.run_dir / "report" / "val_metrics.json", typ="series")[
        "checkpoint"
    ].endswith("best.ckpt")
    assert metrics["uar"] > 0.25  # above chance (four classes)
    recognizer = Recognizer.from_run(config.run_dir)
    refit = _weights(config.run_dir / "checkpoints" / "refit.ckpt")
    assert all(
        torch.equal(v, refit[f"model.{k}"]) for k, v in recognizer.module.model.state_dict().items()
    )


def test_a_resumed_run_keeps_its_refit_and_a_plain_run_uses_its_best_checkpoint(refitted, tmp_path):
    config, manifest, _ = refitted
    target = config.run_dir / "checkpoints" / "refit.ckpt"
    stamp = target.stat().st_mtime_ns
    fit.train(config, manifest, tiny_runs.encoders(), resume=True)
    assert target.stat().st_mtime_ns == stamp
    retrained = config.model_copy(
        update={"train": config.train.model_copy(update={"refit": False, "epochs": 2})}
    )
    fit.train(retrained, manifest, tiny_runs.encoders())  # a new fit of the run, without refit
    assert (
        run_checkpoint(config.run_dir).name == "best.ckpt" and not target.exists()
    )  # the old refit is not its model
    plain = tiny_runs.tiny_config(tmp_path, "plain", epochs=2)
    fit.train(plain, manifest, tiny_runs.encoders())
    assert run_checkpoint(plain.run_dir) == plain.run_dir / "checkpoints" / "best.ckpt"
    assert not (plain.run_dir / "refit").exists()


def test_stacking_refuses_refitted_base_models(tmp_path):
    from crabser.errors import ConfigError
    from crabser.stacking import StackConfig, base_config

    stack = StackConfig(name="stack", base="configs/default_model.yaml", models={"a": [], "b": []})
    with pytest.raises(ConfigError, match="train.refit"):
        base_config(stack, "a")
    assert not base_config(stack, "a", ["train.refit=false"]).train.refit


def test_refit_without_a_validated_epoch_is_a_clear_error(tmp_path):
    from crabser.errors import CrabserError

    config = tiny_runs.tiny_config(tmp_path, "untrained", refit=True)
    with pytest.raises(CrabserError, match="training log"):
        fit.refit(config, tiny_runs.tiny_manifest(tmp_path), tiny_runs.encoders())


def test_evaluation_runs_on_the_cpu_in_float32_without_a_gpu(monkeypatch):
    """A run trained on a GPU in mixed precision is scored where there is none (float32 on the
    CPU); a forking fit is scored on the CPU so CUDA never starts in its parent."""
    from crabser.config import TrainConfig
    from crabser.training import predict

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_run = TrainConfig(accelerator="gpu", precision="bf16-mixed")
    assert predict.evaluation_device(gpu_run) == ("cpu", 1, "32-true")
    assert predict.evaluation_device(TrainConfig()) == ("cpu", 1, "32-true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert predict.evaluation_device(gpu_run) == ("gpu", 1, "bf16-mixed")
    forked = TrainConfig(accelerator="gpu", strategy="ddp_fork", precision="bf16-mixed")
    assert predict.evaluation_device(forked) == ("cpu", 1, "32-true")
    monkeypatch.setattr("crabser.training.lit_module.distributed", lambda: True)
    assert predict.evaluation_device(gpu_run) == ("gpu", [3], "bf16-mixed")
