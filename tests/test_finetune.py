"""Fine-tuning the encoders with the head: tiny random WavLM + RoBERTa, real EmoDB audio, the
CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from crabser.cli import app
from crabser.data.corpora import emodb as emodb_adapter
from crabser.data.manifest import Manifest, write_manifest
from crabser.training.finetune import RawDataset, RawUtterance, collate_raw

runner = CliRunner()


def test_raw_dataset_crops_randomly_in_training_and_from_the_start_otherwise(write_wav):
    wave = np.linspace(-0.5, 0.5, 16000 * 3).astype(np.float32)
    path = write_wav("long.wav", wave)
    item = RawUtterance("u", str(path), "text", 0, 3.0)
    evaluation = RawDataset([item], max_seconds=1.0, train=False)[0]["wave"]
    np.testing.assert_allclose(evaluation, wave[:16000], atol=1e-4)
    starts = {float(RawDataset([item], 1.0, train=True, seed=s)[0]["wave"][0]) for s in range(5)}
    assert len(starts) > 1 and all(
        len(RawDataset([item], 1.0, True, seed=s)[0]["wave"]) == 16000 for s in range(3)
    )


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, emodb, tiny_wavlm, tiny_roberta):
    root = tmp_path_factory.mktemp("finetune")
    frame = emodb_adapter.prepare(emodb).frame
    frame = (
        frame[frame["speaker"].isin(["03", "08", "11", "16"])].groupby("speaker").head(12).copy()
    )
    frame["split"] = frame["speaker"].map({"03": "train", "08": "train", "11": "val", "16": "test"})
    write_manifest(Manifest(frame), root / "manifest.csv")
    config = root / "config.yaml"
    config.write_text(
        f"""
name: ft
output_dir: {root / "runs"}
cache_dir: {root / "cache"}
data: {{manifest: {root / "manifest.csv"}, protocol: given}}
speech: {{kind: hf-speech, model: {tiny_wavlm}, max_seconds: 2.0}}
text: {{kind: hf-text, model: {tiny_roberta}}}
model: {{hidden: 16, leg_dim: 8, leg_hidden: 8, leg_hidden_unimodal: 8}}
train: {{epochs: 2, batch_size: 8, accumulate: 1, lr_head: 1.0e-3, lr_encoder: 1.0e-3,
        progress: false, threads: 2}}
"""
    )
    result = runner.invoke(app, ["train", "--config", str(config), "--finetune"])
    assert result.exit_code == 0, result.output
    return root, config, tiny_wavlm


def test_finetuning_updates_the_encoders_but_not_the_cnn(finetuned):
    root, _, tiny_wavlm = finetuned
    from transformers import WavLMModel

    before = WavLMModel.from_pretrained(tiny_wavlm).state_dict()
    after = torch.load(
        root / "runs/ft/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    state = {
        k.removeprefix("encoders.speech."): v
        for k, v in after["state_dict"].items()
        if k.startswith("encoders.speech.")
    }
    cnn = [k for k in state if k.startswith("feature_extractor.")]
    transformer = [k for k in state if k.startswith("encoder.layers.") and k.endswith("weight")]
    assert cnn and all(
        torch.equal(state[k], before[k]) for k in cnn
    )  # frozen, as in the reference code
    assert any(not torch.equal(state[k], before[k]) for k in transformer)  # the transformer learned
    assert any(k.startswith("encoders.text.") for k in after["state_dict"])
    groups = after["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == ["head", "encoders"]  # hierarchical learning rates


def test_finetuned_run_evaluates_and_predicts_from_raw_audio(finetuned, emodb):
    root, _, _ = finetuned
    result = runner.invoke(app, ["evaluate", "--run", str(root / "runs/ft"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["n"] == 12
    clip = emodb_adapter.prepare(emodb).frame.query("speaker == '16'")["audio"].iloc[0]
    answer = runner.invoke(
        app, ["predict", clip, "--run", str(root / "runs/ft"), "--text", "Hallo.", "--json"]
    )
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.output.strip().splitlines()[-1])["label"] in emodb_adapter.LABELS


def test_finetuned_crossval_extracts_no_features(finetuned):
    """Each fold trains its encoders from raw audio: no frozen features are extracted or cached
    (before, crossval filled the feature store first, a full encoder pass it never read)."""
    root, _, tiny_wavlm = finetuned
    config = root / "crossval.yaml"
    config.write_text(
        f"""
name: ft_cv
output_dir: {root / "runs"}
cache_dir: {root / "cv_cache"}
data: {{manifest: {root / "manifest.csv"}, protocol: folds, folds: 2, fold_by: speaker,
       val_speakers_per_fold: 1}}
speech: {{kind: hf-speech, model: {tiny_wavlm}, max_seconds: 2.0}}
model: {{modalities: [speech], hidden: 16, leg_dim: 8, leg_hidden: 8, leg_hidden_unimodal: 8}}
train: {{finetune: true, epochs: 1, batch_size: 8, accumulate: 1, progress: false, threads: 2}}
"""
    )
    result = runner.invoke(app, ["crossval", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (root / "runs/ft_cv/crossval.md").is_file()
    cached = [p for p in (root / "cv_cache").rglob("*") if p.is_file()]
    assert cached == []


def test_a_finetuned_speech_and_text_run_exports_and_predicts_as_the_run(finetuned, emodb):
    """Both fine-tuned encoders travel in the export (WavLM without its frozen CNN), and the export
    answers as the run on one clip and transcript at a time, on whole clips: both read a clip's
    first speech.max_seconds (2 s), as the run's evaluation did."""
    from safetensors.torch import load_file

    from crabser.data.audio import load_audio
    from crabser.inference import TUNED_ENCODERS, Recognizer, export_model

    root, _, _ = finetuned
    out = export_model(root / "runs/ft", root / "exported", half=False)
    stored = load_file(str(out / TUNED_ENCODERS))
    assert {k.split(".", 1)[0] for k in stored} == {"speech", "text"}
    assert not any(".feature_extractor." in k for k in stored)  # frozen: the pre-trained one's
    as_run, exported = Recognizer.load(root / "runs/ft"), Recognizer.load(out)
    clips = emodb_adapter.prepare(emodb).frame.query("speaker == '16'")["audio"].iloc[:2]
    for clip, text in zip(clips, ["Hallo.", "Das ist gut."]):
        wave = load_audio(clip, 16000)
        assert len(wave) > 32000  # longer than speech.max_seconds
        first = wave[:32000]
        np.testing.assert_allclose(
            exported.probabilities([wave], [text]), as_run.probabilities([wave], [text]), atol=1e-5
        )
        np.testing.assert_allclose(
            as_run.probabilities([wave], [text]), as_run.probabilities([first], [text]), atol=1e-6
        )


def test_whisper_ct2_cannot_be_finetuned(finetuned):
    _, config, _ = finetuned
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(config),
            "--finetune",
            "-o",
            "speech.kind=whisper-ct2",
            "-o",
            "speech.max_seconds=null",  # the CTranslate2 encoder takes whole clips (refused else)
            "-o",
            "name=bad",
        ],
    )
    assert result.exit_code == 2 and "fine-tuning needs speech.kind: hf-speech" in result.output


def test_eam_items_carry_the_mixed_in_label_and_weight(write_wav):
    rng = np.random.default_rng(0)
    items = [
        RawUtterance(
            f"u{k}",
            str(write_wav(f"u{k}.wav", 0.3 * rng.standard_normal(16000).astype(np.float32))),
            "t",
            k,
            1.0,
        )
        for k in range(3)
    ]
    train = RawDataset(items, None, train=True, seed=1, eam=True)
    batch = collate_raw([train[k] for k in range(3)])
    assert (
        batch["mix_labels"].shape == (3,) and (batch["mix_labels"] != batch["labels"]).all()
    )  # always another utterance
    assert ((batch["mix_lambdas"] > 0) & (batch["mix_lambdas"] < 0.5)).all()
    assert not np.allclose(batch["waves"][0], RawDataset(items, None, train=False)[0]["wave"])
    assert "mix_labels" not in collate_raw(
        [RawDataset(items, None, train=False, eam=True)[0]]
    )  # never in evaluation


def test_multi_loss_model_trains_with_eam_on_raw_audio(finetuned):
    root, config, _ = finetuned
    overrides = [
        "name=mll",
        "model.name=mll",
        "model.modalities=[speech]",
        "model.heads=4",
        "loss.name=multi_loss",
        "train.eam=true",
        "train.optimizer=adam",
        "train.schedule=exponential",
        "train.lr_encoder=1.0e-4",
    ]
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(config),
            "--finetune",
            *[x for o in overrides for x in ("-o", o)],
        ],
    )
    assert result.exit_code == 0, result.output
    checkpoint = torch.load(
        root / "runs/mll/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == ["head", "encoders", "centers"]
    # own LR, and one 7/8 decay per epoch shared by all groups (last.ckpt holds both epochs' steps)
    assert groups[2]["lr"] == pytest.approx(5e-3 * 0.875**2) and groups[0]["lr"] == pytest.approx(
        1e-3 * 0.875**2
    )
    metrics = (root / "runs/mll/logs/metrics.csv").read_text()
    assert "train_legs" in metrics  # the center + frame SupCon part was computed
    frozen = runner.invoke(
        app, ["train", "--config", str(config), "-o", "train.eam=true", "-o", "name=eam_frozen"]
    )
    assert frozen.exit_code == 2 and "needs raw audio" in frozen.output


@pytest.mark.parametrize("resumed", [False, True])
def test_input_statistics_are_fitted_at_the_start_of_a_fresh_fit_only(tiny_roberta, resumed):
    from types import SimpleNamespace

    from crabser.config import LossConfig, ModelConfig, TrainConfig
    from crabser.training.finetune import FinetuneLitModule

    encoders = {
        "speech_model": None,
        "text_model": str(tiny_roberta),
        "gradient_checkpointing": False,
    }
    module = FinetuneLitModule(
        encoders,
        ["a", "b"],
        ModelConfig(hidden=8, modalities=["text"]).model_dump(),
        LossConfig().model_dump(),
        TrainConfig().model_dump(),
    )
    texts = ["I am happy today.", "Der Lappen liegt auf dem Eisschrank."]
    module.statistics_loader = [{"waves": [], "texts": texts, "labels": torch.tensor([0, 1])}]
    module._trainer = SimpleNamespace(ckpt_path="last.ckpt" if resumed else None)
    module.on_fit_start()
    normalizer = module.model.input_stage.normalizers["text"]
    assert module.statistics_loader is None
    if resumed:  # the checkpoint's statistics are restored; nothing is computed
        assert torch.equal(normalizer.mean, torch.zeros_like(normalizer.mean))
    else:
        module.encoders.eval()
        with torch.no_grad():
            features, masks = module.encoders({"texts": texts})
        expected = features["text"][masks["text"]]
        torch.testing.assert_close(normalizer.mean, expected.mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            normalizer.std, expected.std(0, unbiased=False), atol=1e-5, rtol=1e-4
        )


def test_text_only_finetuning_batches_transcripts_of_similar_length(tmp_path):
    """Without audio every item lasts 0 s; the raw batches are then bucketed by transcript length
    (random batches padded to their longest text cost MELD fine-tuning about twice the time)."""
    import tiny_runs

    from crabser.training.loaders import raw_loader

    config = tiny_runs.tiny_config(tmp_path, batch_size=8, bucket_pool=8)  # one pool of 64
    rng = np.random.default_rng(0)
    items = [
        RawUtterance(f"u{n}", "", "x" * int(n), 0, 0.0) for n in rng.permutation(np.arange(1, 65))
    ]
    for train in (True, False):
        loader = raw_loader(config, items, train=train, labels=["a"], shard=False)
        spreads = [
            max(map(len, batch["texts"])) - min(map(len, batch["texts"])) for batch in loader
        ]
        assert len(spreads) == 8 and max(spreads) == 7  # 8 consecutive lengths per batch
