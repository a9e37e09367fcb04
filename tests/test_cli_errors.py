"""Through the real CLI: expected failures end with exit code != 0 and ONE line naming the file or
setting, never a traceback.

A tiny bimodal run (generated tones, one epoch) serves the checkpoint, cache and resume cases.
"""

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import REPO, tone
from typer.testing import CliRunner

from crabser.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *names: str) -> str:
    """Exit code != 0, no traceback, exactly one ``error:`` line, naming every one of ``names``."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def _write_clips(root: Path, speakers: list[str], labels: dict[str, float]) -> Path:
    """Tones (a pitch per label) for every speaker and label, with transcripts, in a manifest
    CSV."""
    rows = []
    for speaker in speakers:
        for label, freq in labels.items():
            path = root / "audio" / f"{speaker}_{label}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(0.6, freq=freq + 10 * int(speaker)), 16000)
            rows.append(
                {
                    "id": path.stem,
                    "audio": str(path),
                    "label": label,
                    "speaker": speaker,
                    "text": f"a {label} sound",
                }
            )
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(root, config, run folder) of a one-epoch bimodal Crab on tones, trained through the CLI."""
    root = tmp_path_factory.mktemp("tiny")
    manifest = _write_clips(root, ["1", "2", "3", "4"], {"high": 660.0, "low": 220.0})
    config = root / "config.yaml"
    config.write_text(
        f"name: tiny\noutput_dir: {root / 'runs'}\ncache_dir: {root / 'cache'}\n"
        f"data: {{manifest: {manifest}, test_speakers: ['4'], val_speakers: ['3']}}\n"
        "model: {hidden: 16, leg_dim: 16, leg_hidden: 16, leg_hidden_unimodal: 16, "
        "speech_frame_stride: 4}\n"
        "train: {epochs: 1, batch_size: 4, accumulate: 1, progress: false, threads: 1}\n"
    )
    result = invoke("train", "--config", config)
    assert result.exit_code == 0, result.output
    return root, config, root / "runs" / "tiny"


def _damaged_copy(run_dir: Path, how: str) -> Path:
    """A copy of the run folder whose best checkpoint is truncated, empty or not a checkpoint."""
    import shutil

    copy = run_dir.parent / f"tiny_{how}"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run_dir, copy)
    best = copy / "checkpoints" / "best.ckpt"
    data = best.read_bytes()
    best.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint" * 10}[
            how
        ]
    )
    (copy / "config.yaml").write_text(
        (copy / "config.yaml").read_text().replace("name: tiny", f"name: tiny_{how}")
    )
    return copy


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_damaged_checkpoint_is_one_line_in_evaluate_predict_export(tiny_run, tmp_path, how):
    root, _, run_dir = tiny_run
    damaged = _damaged_copy(run_dir, how)
    best = str(damaged / "checkpoints" / "best.ckpt")
    assert_one_line_error(invoke("evaluate", "--run", damaged), best)
    assert_one_line_error(
        invoke("predict", root / "audio" / "1_high.wav", "--run", damaged, "--text", "hi"), best
    )
    assert_one_line_error(invoke("export", "--run", damaged, "--out", tmp_path / "out"), best)


def test_damaged_last_checkpoint_stops_resume_with_one_line(tiny_run):
    _, config, run_dir = tiny_run
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = last.read_bytes()
    try:
        last.write_bytes(saved[: len(saved) // 3])
        assert_one_line_error(
            invoke("train", "--config", config, "--resume", "-o", "train.epochs=2"), str(last)
        )
    finally:
        last.write_bytes(saved)


def test_damaged_exported_model_is_one_line(tiny_run, tmp_path):
    root, _, run_dir = tiny_run
    out = tmp_path / "model"
    assert invoke("export", "--run", run_dir, "--out", out).exit_code == 0
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert_one_line_error(
        invoke("predict", root / "audio" / "1_high.wav", "--model", out, "--text", "hi"),
        str(weights),
    )


def test_checkpoint_with_nan_weights_is_refused_not_predicted(tiny_run):
    root, _, run_dir = tiny_run
    copy = _damaged_copy(run_dir, "garbage")
    state = torch.load(
        run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False
    )
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][name] = torch.full_like(state["state_dict"][name], float("nan"))
    torch.save(state, copy / "checkpoints" / "best.ckpt")
    line = assert_one_line_error(
        invoke("predict", root / "audio" / "1_high.wav", "--run", copy, "--text", "hi", "--json"),
        "not finite",
    )
    assert name.split(".", 1)[-1] in line


def test_damaged_feature_cache_is_named_when_evaluating(tiny_run):
    """Evaluation reads the cache without an extractor: the damaged file is named, with the way
    out."""
    root, _, run_dir = tiny_run
    files = sorted((root / "cache").rglob("*.safetensors"))
    victim = files[0]
    saved = victim.read_bytes()
    try:
        victim.write_bytes(saved[: len(saved) // 2])
        assert_one_line_error(invoke("evaluate", "--run", run_dir), str(victim), "crabser extract")
        result = invoke(
            "extract", "--config", root / "config.yaml"
        )  # detects it and encodes it again
        assert result.exit_code == 0, result.output
        assert "1 encoded" in result.output
        assert invoke("evaluate", "--run", run_dir).exit_code == 0
    finally:
        if victim.stat().st_size < len(saved):
            victim.write_bytes(saved)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a CUDA GPU is visible here, so accelerator=gpu is valid"
)
def test_gpu_accelerator_without_a_gpu_is_one_line(tiny_run):
    _, config, _ = tiny_run
    assert_one_line_error(
        invoke("train", "--config", config, "-o", "train.accelerator=gpu", "-o", "name=gpu"),
        "train.accelerator",
    )


@pytest.mark.parametrize(
    "override", ["train.epochs=-1", "train.lr_head=nan", "loss.tau=0", "train.devices=0"]
)
def test_nonsense_settings_are_refused_before_anything_runs(tmp_path, override):
    result = invoke(
        "train",
        "--config",
        REPO / "configs/demo.yaml",
        "-o",
        override,
        "-o",
        f"output_dir={tmp_path}",
    )
    assert_one_line_error(result, override.split("=")[0], "configs/demo.yaml")
    assert not any(tmp_path.iterdir())


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train: {epochs: 3\n")
    assert_one_line_error(invoke("prepare", "--config", config), str(config), "invalid YAML")


@pytest.mark.parametrize("command", ["experiment", "stack"])
def test_invalid_yaml_of_a_grid_or_stack_is_one_line_naming_the_file(tmp_path, command):
    path = tmp_path / f"{command}.yaml"
    path.write_text("base: configs/demo.yaml\naxes: {a: [1\n")
    assert_one_line_error(invoke(command, path), str(path), "invalid YAML")


def test_output_paths_that_are_files_are_one_line(tiny_run, tmp_path):
    root, _, run_dir = tiny_run
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert_one_line_error(invoke("export", "--run", run_dir, "--out", blocker), str(blocker))
    clip = root / "audio" / "1_high.wav"
    assert_one_line_error(
        invoke("predict", clip, "--segment", "--out", blocker / "sub"), str(blocker)
    )
    assert_one_line_error(
        invoke("prepare", "--config", root / "config.yaml", "-o", f"output_dir={blocker}"),
        "output_dir",
    )


def test_hub_id_offline_fails_fast_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(
        "HF_HOME", str(tmp_path / "hf")
    )  # an empty cache: the id is surely not in it
    manifest = _write_clips(tmp_path, ["1", "2", "3"], {"a": 300.0})
    started = time.perf_counter()
    result = invoke(
        "extract",
        "-o",
        f"data.manifest={manifest}",
        "-o",
        "data.test_speakers=['3']",
        "-o",
        "data.val_speakers=['2']",
        "-o",
        f"output_dir={tmp_path / 'runs'}",
        "-o",
        "model.modalities=[text]",
        "-o",
        "text.kind=hf-text",
        "-o",
        "text.model=crabser-tests/no-such-model",
    )
    assert time.perf_counter() - started < 10
    assert_one_line_error(result, "crabser-tests/no-such-model", "not available offline")


def test_hub_id_offline_fails_fast_in_fine_tuning_too(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    manifest = _write_clips(tmp_path, ["1", "2", "3"], {"a": 300.0})
    result = invoke(
        "train",
        "--finetune",
        "-o",
        f"data.manifest={manifest}",
        "-o",
        "data.test_speakers=['3']",
        "-o",
        "data.val_speakers=['2']",
        "-o",
        f"output_dir={tmp_path / 'runs'}",
        "-o",
        "model.modalities=[speech]",
        "-o",
        "speech.kind=hf-speech",
        "-o",
        "speech.model=crabser-tests/no-such-wavlm",
    )
    assert_one_line_error(result, "crabser-tests/no-such-wavlm", "not available offline")


def test_non_utf8_transcript_fails_only_its_file_in_predict(tiny_run, tmp_path):
    _, _, run_dir = tiny_run
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    for path in (good, bad):
        sf.write(path, tone(0.6), 16000)
    good.with_suffix(".txt").write_text("a fine sound", encoding="utf-8")
    bad.with_suffix(".txt").write_bytes("un son très aigu".encode("latin-1"))
    result = invoke("predict", bad, good, "--run", run_dir, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bad.txt" in result.output and "UTF-8" in result.output
    assert '"source": "' + str(good) in result.output


def test_non_utf8_csv_is_one_line_naming_it(tmp_path):
    table = tmp_path / "corpus.csv"
    table.write_bytes("path,label,text\na.wav,anger,très\n".encode("latin-1"))
    result = invoke(
        "prepare",
        "-o",
        "data.corpus=csv",
        "-o",
        f"data.root={table}",
        "-o",
        f"output_dir={tmp_path / 'runs'}",
    )
    assert_one_line_error(result, str(table), "UTF-8")


def test_folder_corpus_prepares_with_speaker_folders_and_with_random_split(tmp_path):
    for label in ("calm", "loud"):
        for speaker in ("s1", "s2", "s3", "s4"):
            for i in range(3):
                path = tmp_path / "by_speaker" / label / speaker / f"{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone(0.3), 16000)
                flat = tmp_path / "flat" / label / f"{speaker}_{i}.wav"
                flat.parent.mkdir(parents=True, exist_ok=True)
                sf.write(flat, tone(0.3), 16000)
    common = [
        "-o",
        "data.corpus=folder",
        "-o",
        "model.modalities=[speech]",
        "-o",
        f"output_dir={tmp_path / 'runs'}",
    ]
    result = invoke(
        "prepare", *common, "-o", f"data.root={tmp_path / 'by_speaker'}", "-o", "name=speakers"
    )
    assert result.exit_code == 0, result.output
    split = pd.read_csv(tmp_path / "runs/speakers/manifest.csv", dtype=str)
    assert set(split["speaker"]) == {"s1", "s2", "s3", "s4"}
    assert split.groupby("speaker")["split"].nunique().max() == 1  # speaker-independent
    flat = ["-o", f"data.root={tmp_path / 'flat'}", "-o", "name=flat"]
    refused = invoke("prepare", *common, *flat)
    assert_one_line_error(refused, "data.protocol: random")
    result = invoke("prepare", *common, *flat, "-o", "data.protocol=random")
    assert result.exit_code == 0, result.output
    split = pd.read_csv(tmp_path / "runs/flat/manifest.csv", dtype=str)
    assert set(split["split"]) == {"train", "val", "test"}
    assert (
        split.groupby("label")["split"].apply(set).map(len) == 3
    ).all()  # stratified: every class in every split


#: predict --segment in fixed one-second windows (tones have no voice for the VAD to find)
ONE_SECOND_SEGMENTS = ("--segment", "--segment-mode", "fixed", "--window", "1", "--hop", "1")


def test_segment_outputs_of_same_named_files_do_not_overwrite_each_other(tmp_path):
    waves = {"a": tone(1.5, freq=200.0), "b": tone(1.5, freq=500.0)}
    paths = []
    for folder, wave in waves.items():
        path = tmp_path / folder / "x.wav"
        path.parent.mkdir()
        sf.write(path, wave, 16000)
        paths.append(path)
    out = tmp_path / "out"
    result = invoke(
        "predict",
        *paths,
        *ONE_SECOND_SEGMENTS,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.glob("*.timeline.json"))
    assert len(written) == 2, written
    assert len({(out / name).read_text() for name in written}) == 2


def test_segment_outputs_beside_same_stemmed_inputs_of_one_folder_are_both_kept(tmp_path):
    """Without --out each timeline goes beside its input: x.wav and x.flac must not share one."""
    sf.write(tmp_path / "x.wav", tone(1.5, freq=200.0), 16000)
    sf.write(tmp_path / "x.flac", tone(1.5, freq=500.0), 16000)
    result = invoke(
        "predict",
        tmp_path / "x.wav",
        tmp_path / "x.flac",
        *ONE_SECOND_SEGMENTS,
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.glob("*.timeline.json"))
    assert written == ["x.timeline.json", "x_flac.timeline.json"], written
    sources = {json.loads((tmp_path / name).read_text())["source"] for name in written}
    assert sources == {str(tmp_path / "x.wav"), str(tmp_path / "x.flac")}
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_segment_names_a_table_row_without_a_path_and_does_the_others(tmp_path):
    sf.write(tmp_path / "good.wav", tone(1.5), 16000)
    table = tmp_path / "t.csv"
    table.write_text(f"path,x\n,1\n{tmp_path / 'good.wav'},2\n")
    result = invoke("predict", table, *ONE_SECOND_SEGMENTS)
    assert result.exit_code == 1, result.output
    assert "row 2: empty path in column 'path'" in result.output
    assert "corrupt" not in result.output
    assert (tmp_path / "good.timeline.json").is_file()


def test_diverging_training_stops_with_one_line_naming_the_settings(tiny_run):
    _, config, _ = tiny_run
    result = invoke(
        "train",
        "--config",
        config,
        "-o",
        "train.lr_head=1e30",
        "-o",
        "name=diverged",
        "-o",
        "train.epochs=3",
    )
    line = assert_one_line_error(result, "train.lr_head", "loss.tau", "epoch")
    assert "nan" in line.lower() or "inf" in line.lower()


def test_a_model_without_text_never_reads_the_transcript_beside_the_audio(tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0), 16000)
    clip.with_suffix(".txt").write_bytes("très".encode("latin-1"))
    result = invoke("predict", clip, "--json")  # the packaged default model reads speech only
    assert result.exit_code == 0, result.output
