"""Fine-tuning the encoders with the head: tiny random WavLM + RoBERTa, real EmoDB audio, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from crabser.cli import app
from crabser.data.corpora import emodb as emodb_adapter
from crabser.data.manifest import Manifest, write_manifest
from crabser.training.finetune import LengthBucketSampler, RawDataset, RawUtterance

runner = CliRunner()


def test_length_buckets_cover_every_item_once_and_group_similar_durations():
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 12.0, size=203).tolist()
    sampler = LengthBucketSampler(durations, batch_size=8, pool=10, seed=0)
    epoch1, epoch2 = list(sampler), list(sampler)
    for batches in (epoch1, epoch2):
        assert sorted(i for b in batches for i in b) == list(range(203)) and len(batches) == len(sampler) == 26
    assert epoch1 != epoch2  # reshuffled every epoch
    spread = np.mean([np.ptp([durations[i] for i in b]) for b in epoch1 if len(b) > 1])
    random_spread = np.mean([np.ptp(rng.choice(durations, 8)) for _ in range(200)])
    assert spread < 0.3 * random_spread  # bucketing keeps padding small


def test_raw_dataset_crops_randomly_in_training_and_from_the_start_otherwise(write_wav):
    wave = np.linspace(-0.5, 0.5, 16000 * 3).astype(np.float32)
    path = write_wav("long.wav", wave)
    item = RawUtterance("u", str(path), "text", 0, 3.0)
    evaluation = RawDataset([item], max_seconds=1.0, train=False)[0]["wave"]
    np.testing.assert_allclose(evaluation, wave[:16000], atol=1e-4)
    starts = {float(RawDataset([item], 1.0, train=True, seed=s)[0]["wave"][0]) for s in range(5)}
    assert len(starts) > 1 and all(len(RawDataset([item], 1.0, True, seed=s)[0]["wave"]) == 16000 for s in range(3))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, emodb, tiny_wavlm, tiny_roberta):
    root = tmp_path_factory.mktemp("finetune")
    frame = emodb_adapter.prepare(emodb).frame
    frame = frame[frame["speaker"].isin(["03", "08", "11", "16"])].groupby("speaker").head(12).copy()
    frame["split"] = frame["speaker"].map({"03": "train", "08": "train", "11": "val", "16": "test"})
    write_manifest(Manifest(frame), root / "manifest.csv")
    config = root / "config.yaml"
    config.write_text(
        f"""
name: ft
output_dir: {root / 'runs'}
cache_dir: {root / 'cache'}
data: {{manifest: {root / 'manifest.csv'}, protocol: given}}
speech: {{kind: hf-speech, model: {tiny_wavlm}, max_seconds: 2.0}}
text: {{kind: hf-text, model: {tiny_roberta}}}
model: {{hidden: 16, leg_dim: 8, leg_hidden: 8, leg_hidden_unimodal: 8}}
train: {{epochs: 2, batch_size: 8, accumulate: 1, lr_head: 1.0e-3, lr_encoder: 1.0e-3, progress: false, threads: 2}}
"""
    )
    result = runner.invoke(app, ["train", "--config", str(config), "--finetune"])
    assert result.exit_code == 0, result.output
    return root, config, tiny_wavlm


def test_finetuning_updates_the_encoders_but_not_the_cnn(finetuned):
    root, _, tiny_wavlm = finetuned
    from transformers import WavLMModel

    before = WavLMModel.from_pretrained(tiny_wavlm).state_dict()
    after = torch.load(root / "runs/ft/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    state = {k.removeprefix("encoders.speech."): v for k, v in after["state_dict"].items() if k.startswith("encoders.speech.")}
    cnn = [k for k in state if k.startswith("feature_extractor.")]
    transformer = [k for k in state if k.startswith("encoder.layers.") and k.endswith("weight")]
    assert cnn and all(torch.equal(state[k], before[k]) for k in cnn)  # frozen, as in the reference code
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
    answer = runner.invoke(app, ["predict", clip, "--run", str(root / "runs/ft"), "--text", "Hallo.", "--json"])
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.output.strip().splitlines()[-1])["label"] in emodb_adapter.LABELS


def test_whisper_ct2_cannot_be_finetuned(finetuned):
    root, config, _ = finetuned
    result = runner.invoke(app, ["train", "--config", str(config), "--finetune", "-o", "speech.kind=whisper-ct2", "-o", "name=bad"])
    assert result.exit_code == 2 and "fine-tuning needs speech.kind: hf-speech" in result.output
