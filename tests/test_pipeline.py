"""The real pipeline end to end on real EmoDB audio (a few speakers), through the CLI as a user
runs it."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import REPO
from typer.testing import CliRunner

from crabser.cli import app
from crabser.data.corpora import emodb as emodb_adapter

#: real audio end to end (prepare, extract, train, evaluate): `make test-fast` leaves these out
pytestmark = pytest.mark.slow

runner = CliRunner()
SPEAKERS = ["03", "08", "09", "10", "11", "16"]


def _clip(emodb, name: str) -> str:
    """An EmoDB clip by name, in whichever copy the tests use (../shared: wav; vendored: flac)."""
    frame = emodb_adapter.prepare(emodb).frame
    return frame[frame["audio"].map(lambda path: Path(path).stem == name)]["audio"].iloc[0]


def test_features_are_cached_and_reused(run):
    root, config = run
    extraction = json.loads((root / "runs/e2e/extraction_speech.json").read_text())
    assert extraction["failures"] == {}
    assert any((root / "cache").rglob("*.safetensors"))
    again = runner.invoke(app, ["extract", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "speech: 0 encoded" in again.output and "text: 0 encoded" in again.output


def test_checkpoints_and_report_and_above_chance(run):
    root, _ = run
    run_dir = root / "runs/e2e"
    assert (run_dir / "checkpoints/best.ckpt").is_file() and (
        run_dir / "checkpoints/last.ckpt"
    ).is_file()
    result = runner.invoke(app, ["evaluate", "--run", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics["n"] == 71  # speaker 16, never seen in training or validation
    assert metrics["uar"] > 0.4  # chance is 1/7
    report = json.loads((run_dir / "report/test_metrics.json").read_text())
    assert report["speakers"] == ["16"] and len(report["confusion"]) == 7
    boot = report["balanced_bootstrap"]  # the smallest class of speaker 16 sets the subset size
    assert boot["subsets"] == 100 and boot["per_class"] == min(
        c["support"] for c in report["per_class"].values() if c["support"]
    )
    assert boot["macro_f1_min"] <= metrics["balanced_macro_f1"] <= boot["macro_f1_max"]
    assert (run_dir / "report/test_confusion.png").is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "git_commit.txt").is_file()
    # the best validation epoch read from the log is the one the best checkpoint was saved at
    from crabser.runs import RunFolder

    best_uar, best_epoch = RunFolder(run_dir).best_validation()
    saved = torch.load(run_dir / "checkpoints/best.ckpt", map_location="cpu", weights_only=False)
    (checkpointing,) = [
        state for key, state in saved["callbacks"].items() if key.startswith("ModelCheckpoint")
    ]
    assert saved["epoch"] == best_epoch - 1 and best_uar == pytest.approx(
        float(checkpointing["best_model_score"])
    )


def test_resume_continues_from_the_last_checkpoint(run):
    root, config = run
    result = runner.invoke(
        app, ["train", "--config", str(config), "--resume", "-o", "train.epochs=13"]
    )
    assert result.exit_code == 0, result.output
    rows = (root / "runs/e2e/logs/metrics.csv").read_text().splitlines()
    epochs = {line.split(",")[0] for line in rows[1:]}
    assert "12" in epochs  # the 13th epoch ran, after the 12 restored from last.ckpt


def test_training_stops_after_patience_epochs_without_a_better_val_uar(run):
    from crabser.runs import RunFolder

    root, config = run
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(config),
            "-o",
            "name=patient",
            "-o",
            "train.epochs=40",
            "-o",
            "train.patience=2",
        ],
    )
    assert result.exit_code == 0, result.output
    log = pd.read_csv(root / "runs/patient/logs/metrics.csv").dropna(subset=["val_uar"])
    _, best_epoch = RunFolder(root / "runs/patient").best_validation()
    assert (
        len(log) < 40 and len(log) == best_epoch + 2
    )  # two epochs without a better val UAR, then stop
    assert log["val_uar"].iloc[best_epoch:].max() <= log["val_uar"].iloc[best_epoch - 1]


def test_predict_gives_a_label_and_probabilities(run, emodb):
    root, _ = run
    frame = emodb_adapter.prepare(emodb).frame
    clip = frame[(frame["speaker"] == "16") & (frame["text_code"] == "a01")]["audio"].iloc[0]
    result = runner.invoke(
        app,
        [
            "predict",
            clip,
            "--run",
            str(root / "runs/e2e"),
            "--text",
            "Der Lappen liegt auf dem Eisschrank.",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["label"] in emodb_adapter.LABELS
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_predict_names_bad_files_without_a_traceback(run, tmp_path):
    root, _ = run
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    no_text = tmp_path / "voice.wav"
    sf.write(no_text, 0.3 * np.sin(np.arange(16000) / 10).astype(np.float32), 16000)
    result = runner.invoke(
        app, ["predict", str(silent), "--run", str(root / "runs/e2e"), "--text", "hallo"]
    )
    assert result.exit_code == 1 and "silent.wav: silent audio" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        app,
        ["predict", str(no_text), "--run", str(root / "runs/e2e"), "-o", "asr.fill_missing=false"],
    )
    assert result.exit_code == 1 and "missing transcript" in result.output


def test_predict_without_a_transcript_uses_asr(run):
    root, _ = run
    spoken = REPO / "tests/data/espeak_i_wonder_what_this_is_about.flac"
    result = runner.invoke(app, ["predict", str(spoken), "--run", str(root / "runs/e2e"), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["text_source"] == "asr" and "wonder" in answer["transcript"].lower()


def test_every_command_has_help():
    for command in ("prepare", "extract", "train", "evaluate", "predict", "demo"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_bad_config_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["prepare", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.output
    result = runner.invoke(app, ["prepare", "-o", "model.hidden=big"])
    assert result.exit_code == 2 and "hidden" in result.output


def test_crossval_trains_one_model_per_fold_and_resumes(run):
    root, _ = run
    config = root / "crossval.yaml"
    config.write_text(
        f"""
name: cv
output_dir: {root / "runs"}
cache_dir: {root / "cache"}
data: {{manifest: {root / "manifest.csv"}, protocol: folds, folds: 3, val_speakers_per_fold: 1}}
model: {{hidden: 32, speech_frame_stride: 4}}
train: {{epochs: 2, accumulate: 1, lr_head: 3.0e-3, progress: false, threads: 2}}
"""
    )
    result = runner.invoke(app, ["crossval", "--config", str(config)])
    assert result.exit_code == 0, result.output
    summary = json.loads((root / "runs/cv/crossval.json").read_text())
    assert sorted(summary["folds"]) == ["0", "1", "2"]
    utterances = len(pd.read_csv(root / "manifest.csv"))
    assert summary["pooled"]["n"] == sum(f["n"] for f in summary["folds"].values()) == utterances
    tested = [
        set(
            json.loads((root / f"runs/cv/fold{k}/report/test_metrics.json").read_text())["speakers"]
        )
        for k in range(3)
    ]
    assert set.union(*tested) == set(SPEAKERS) and sum(map(len, tested)) == len(
        SPEAKERS
    )  # each speaker tested once
    assert (root / "runs/cv/report/pooled_confusion.png").is_file()
    checkpoint = root / "runs/cv/fold0/checkpoints/best.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    again = runner.invoke(app, ["crossval", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert checkpoint.stat().st_mtime_ns == stamp  # finished folds are read back, not retrained
    threads = runner.invoke(app, ["crossval", "--config", str(config), "-o", "train.threads=1"])
    assert threads.exit_code == 0, threads.output  # how a run ran is not what it learnt
    changed = runner.invoke(app, ["crossval", "--config", str(config), "-o", "model.hidden=64"])
    assert changed.exit_code == 2  # never reported with results another setting produced
    assert "finished run with other settings (model.hidden: 32 there, 64 now)" in changed.output


def test_crossval_with_jobs_gives_the_same_folds_as_one_at_a_time(run):
    """Two folds side by side (spawned processes, stand-ins for the encoders) train exactly as the
    same folds one after another with the same thread count."""
    from crabser.parallel import threads_per_job

    root, _ = run
    config = root / "crossval_jobs.yaml"
    config.write_text(
        f"""
output_dir: {root / "runs"}
cache_dir: {root / "cache"}
data: {{manifest: {root / "manifest.csv"}, protocol: folds, folds: 3, val_speakers_per_fold: 1}}
model: {{hidden: 32, speech_frame_stride: 4}}
train: {{epochs: 2, accumulate: 1, lr_head: 3.0e-3, progress: false, threads: {threads_per_job(2)}}}
"""
    )
    one = runner.invoke(app, ["crossval", "--config", str(config), "-o", "name=cv_one"])
    assert one.exit_code == 0, one.output
    both = runner.invoke(
        app, ["crossval", "--config", str(config), "-o", "name=cv_jobs", "--jobs", "2"]
    )
    assert both.exit_code == 0, both.output
    assert all(f"fold {k}: WAR" in both.output for k in range(3))
    sequential = json.loads((root / "runs/cv_one/crossval.json").read_text())
    parallel = json.loads((root / "runs/cv_jobs/crossval.json").read_text())
    assert parallel["folds"] == sequential["folds"] and parallel["pooled"] == sequential["pooled"]


def test_trimodal_crab_with_the_paralinguistic_stream(run, emodb, tmp_path):
    root, config = run
    # three of the run's speakers (train 03, val 11, test 16): eGeMAPS extraction is the cost here
    manifest = pd.read_csv(root / "manifest.csv", dtype=str)
    manifest[manifest["speaker"].isin(["03", "11", "16"])].to_csv(
        tmp_path / "manifest.csv", index=False
    )
    overrides = [
        "-o",
        f"data.manifest={tmp_path / 'manifest.csv'}",
        "-o",
        "name=tri",
        "-o",
        "model.modalities=[speech, text, paralinguistic]",
        "-o",
        "train.epochs=2",
    ]
    result = runner.invoke(app, ["train", "--config", str(config), *overrides])
    assert result.exit_code == 0, result.output
    extraction = json.loads((root / "runs/tri/extraction_paralinguistic.json").read_text())
    assert extraction["encoder"].startswith("egemaps") and extraction["failures"] == {}
    state = torch.load(
        root / "runs/tri/checkpoints/best.ckpt", map_location="cpu", weights_only=False
    )["state_dict"]
    assert state["model.input_stage.normalizers.paralinguistic.mean"].shape == (25,)
    assert "model.cross.paralinguistic_to_speech.attention.in_proj_weight" in state
    clip = emodb_adapter.prepare(emodb).frame.query("speaker == '16'")["audio"].iloc[0]
    answer = runner.invoke(
        app, ["predict", clip, "--run", str(root / "runs/tri"), "--text", "Hallo.", "--json"]
    )
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.output.strip().splitlines()[-1])["label"] in emodb_adapter.LABELS


def test_experiment_grid_runs_each_cell_once_and_summarises(run):
    from crabser.parallel import threads_per_job

    root, config = run
    grid = root / "grid.yaml"
    # each cell at the thread count two jobs side by side get, so the sequential results are the
    # ones a --jobs 2 run must reproduce
    grid.write_text(
        f"""
name: grid
base: {config}
overrides: [train.epochs=2, train.threads={threads_per_job(2)}]
seeds: [0, 1]
axes:
  objective:
    ce: [loss.legs=none, loss.class_weights=false]
    mlcs: []
  decay:  # an axis every cell reads (CE without legs reads no loss.alpha)
    "1.0": [train.weight_decay=1.0]
curve: decay
"""
    )
    result = runner.invoke(app, ["experiment", str(grid)])
    assert result.exit_code == 0, result.output
    out = root / "runs/grid"
    results = pd.read_csv(out / "results.csv", dtype={"decay": str})
    assert len(results) == 4 and set(results["cell"]) == {"ce-1.0", "mlcs-1.0"}
    summary = pd.read_csv(out / "summary.csv", dtype={"decay": str}).set_index("cell")
    for cell, runs in results.groupby("cell"):
        assert summary.loc[cell, "uar_mean"] == pytest.approx(runs["uar"].mean())
        assert summary.loc[cell, "uar_std"] == pytest.approx(runs["uar"].std(ddof=0))
        assert summary.loc[cell, "seeds"] == 2
    ce_config = (out / "ce-1.0/seed1/config.yaml").read_text()
    assert (
        "legs: none" in ce_config and "class_weights: false" in ce_config and "seed: 1" in ce_config
    )
    assert "| ce | 1.0 | 2 |" in (out / "results.md").read_text()
    assert (out / "confusion_mlcs-1.0.png").is_file() and (out / "decay_curve.png").is_file()
    silhouette = json.loads((out / "embeddings_mlcs-1.0.json").read_text())["silhouette"]
    assert set(silhouette) == {
        "speech_unimodal",
        "text_unimodal",
        "speech_pooled",
        "text_pooled",
        "fused",
    }
    assert all(-1.0 <= s <= 1.0 for s in silhouette.values())
    # finished cells are read back, not retrained
    checkpoint = out / "mlcs-1.0/seed0/checkpoints/best.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    again = runner.invoke(app, ["experiment", str(grid)])
    assert again.exit_code == 0, again.output
    assert checkpoint.stat().st_mtime_ns == stamp
    assert pd.read_csv(out / "results.csv")["uar"].tolist() == results["uar"].tolist()
    partial = runner.invoke(
        app, ["experiment", str(grid), "--report-only", "--seeds", "0,1,2"]
    )  # seed 2 never ran
    assert partial.exit_code == 0, partial.output
    assert len(pd.read_csv(out / "results.csv")) == 4 and not (out / "mlcs-1.0/seed2").exists()
    # two cells side by side give the results of the same cells one after another
    both = runner.invoke(
        app,
        ["experiment", str(grid), "--seeds", "0", "-o", "output_dir=" + str(root / "runs_jobs")]
        + ["--jobs", "2"],
    )
    assert both.exit_code == 0, both.output
    sequential = results[results["seed"] == 0].reset_index(drop=True)
    parallel = pd.read_csv(root / "runs_jobs/grid/results.csv")
    assert len(parallel) == 2 and parallel[["cell", "uar", "war"]].equals(
        sequential[["cell", "uar", "war"]]
    )


@pytest.mark.parametrize(
    "system",
    [
        # the base config's attention dropout is refused for the two models without attention
        ["model.name=wavlm_baseline", "model.modalities=[speech]", "model.attention_dropout=0.5"],
        ["model.name=focalser", "loss.classifier=focal"],
        ["model.name=memocmt"],
        ["model.name=medusa", "model.mixup_alpha=0.4", "model.attention_dropout=0.5"],
        ["model.name=crab", "train.sampler=neutral_expressive"],
    ],
    ids=lambda s: s[0].split("=")[1],
)
def test_compared_systems_train_evaluate_and_predict_on_real_audio(run, system, emodb):
    root, config = run
    name = system[0].split("=")[1]
    overrides = [*system, "loss.legs=none", "train.epochs=2", f"name={name}"]
    result = runner.invoke(
        app, ["train", "--config", str(config), *[x for o in overrides for x in ("-o", o)]]
    )
    assert result.exit_code == 0, result.output
    run_dir = root / "runs" / name
    evaluated = runner.invoke(app, ["evaluate", "--run", str(run_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output.strip().splitlines()[-1])["n"] > 0
    clip = _clip(emodb, "16a01Wb")
    predicted = runner.invoke(
        app,
        [
            "predict",
            clip,
            "--run",
            str(run_dir),
            "--json",
            "--text",
            "Der Lappen liegt auf dem Eisschrank.",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    assert '"label"' in predicted.output


def test_stacking_two_base_models_scores_and_predicts(run, tmp_path, emodb):
    root, config = run
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text(
        f"""
name: stack
base: {config}
overrides: [train.epochs=2]
models:
  bimodal: []
  speech: ["model.modalities=[speech]"]
fit_on: val
forest: {{trees: 20, min_samples_leaf: 2, min_samples_split: 2, folds: 3}}
bootstrap_subsets: 20
"""
    )
    result = runner.invoke(app, ["stack", str(stack_file)])
    assert result.exit_code == 0, result.output
    summary = json.loads((root / "runs/stack/stack.json").read_text())
    assert set(summary["metrics"]) == {"bimodal", "speech", "stack"}
    for scores in summary["metrics"].values():
        assert (
            0.0 <= scores["test"]["macro_f1"] <= 1.0
            and 0.0 <= scores["val"]["balanced_macro_f1"] <= 1.0
        )
    assert "| stack |" in (root / "runs/stack/stacking.md").read_text()
    clip = _clip(emodb, "16a01Wb")
    predicted = runner.invoke(
        app,
        [
            "predict",
            clip,
            "--run",
            str(root / "runs/stack"),
            "--json",
            "--text",
            "Der Lappen liegt auf dem Eisschrank.",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    answer = json.loads(predicted.output.strip().splitlines()[-1])
    assert answer["label"] in summary["labels"] and sum(
        answer["probabilities"].values()
    ) == pytest.approx(1.0)


def test_stacking_over_speaker_folds_pools_the_folds(run, tmp_path):
    root, config = run
    stack_file = tmp_path / "stack_folds.yaml"
    stack_file.write_text(
        f"""
name: stack_folds
base: {config}
overrides: [train.epochs=1, data.protocol=folds, data.folds=3, data.val_speakers_per_fold=1]
models:
  bimodal: []
  speech: ["model.modalities=[speech]"]
forest: {{trees: 10, min_samples_leaf: 2, min_samples_split: 2, folds: 2}}
bootstrap_subsets: 10
"""
    )
    from crabser.parallel import threads_per_job

    threads = ["-o", f"train.threads={threads_per_job(2)}"]
    result = runner.invoke(app, ["stack", str(stack_file), *threads])
    assert result.exit_code == 0, result.output
    out = root / "runs/stack_folds"
    summary = json.loads((out / "stack.json").read_text())
    assert summary["folds"] == 3 and not (out / "stack.joblib").exists()
    assert f"stack: {out}" in " ".join(
        result.output.split()
    )  # the folder of the stack, not of a fold
    tested = [pd.read_csv(out / f"fold{k}/speech/report/test_predictions.csv") for k in range(3)]
    assert sum(len(t) for t in tested) == len(
        pd.read_csv(out / "folds/manifest.csv")
    )  # every clip tested once
    for k in range(3):
        manifest = pd.read_csv(out / f"fold{k}/bimodal/manifest.csv", dtype=str)
        assert set(manifest[manifest["split"] == "test"]["speaker"]).isdisjoint(
            manifest[manifest["split"] != "test"]["speaker"]
        )
    clip = pd.read_csv(out / "folds/manifest.csv")["audio"].iloc[0]
    refused = runner.invoke(app, ["predict", str(clip), "--run", str(out)])
    assert refused.exit_code == 2 and "for evaluation" in refused.output
    # the six base runs two at a time (spawned processes) score as one after another at that thread
    # count
    both = runner.invoke(
        app,
        [
            "stack",
            str(stack_file),
            *threads,
            "-o",
            f"output_dir={root / 'runs_jobs'}",
            "--jobs",
            "2",
        ],
    )
    assert both.exit_code == 0, both.output
    parallel = json.loads((root / "runs_jobs/stack_folds/stack.json").read_text())
    assert (
        parallel["metrics"] == summary["metrics"]
        and parallel["out_of_fold_macro_f1"] == summary["out_of_fold_macro_f1"]
    )
