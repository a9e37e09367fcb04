"""Shared fixtures: the real EmoDB audio, small generated audio files, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def emodb_root() -> Path:
    """Real EmoDB: $CRABSER_EMODB, else ../shared/data/emodb beside the clone, else the vendored
    copy."""
    candidates = [
        os.environ.get("CRABSER_EMODB"),
        REPO.parent / "shared" / "data" / "emodb",
        REPO / "data" / "emodb",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError("no EmoDB copy found (neither ../shared/data/emodb nor data/emodb)")


@pytest.fixture(scope="session")
def emodb() -> Path:
    return emodb_root()


@pytest.fixture(scope="session")
def meld_csvs() -> Path:
    """The real MELD annotation CSVs (../shared/data/meld or $CRABSER_MELD); CI has them beside the
    clone."""
    root = Path(os.environ.get("CRABSER_MELD", REPO.parent / "shared" / "data" / "meld"))
    if not (root / "train_sent_emo.csv").is_file():
        pytest.skip(f"MELD CSVs not found at {root} (set CRABSER_MELD)")
    return root


def shared_corpus(name: str) -> Path:
    """A real corpus copy: $CRABSER_<NAME>, else ../shared/data/<name> beside the clone; skip if
    absent."""
    root = Path(os.environ.get(f"CRABSER_{name.upper()}", REPO.parent / "shared" / "data" / name))
    if not root.is_dir():
        pytest.skip(f"{name} not found at {root} (set CRABSER_{name.upper()})")
    return root


def tone(
    seconds: float = 1.0, rate: int = 16000, freq: float = 220.0, channels: int = 1
) -> np.ndarray:
    """A sine tone with a little noise (so it is not silent), shape (n,) or (n, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(
        len(t)
    )
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture
def write_wav(tmp_path: Path):
    def write(name: str, wave: np.ndarray, rate: int = 16000) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, rate)
        return path

    return write


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory) -> Path:
    """A tiny random WavLM saved like a hub checkpoint (config, weights, feature extractor).

    Its CNN strides multiply to 320 samples like the real WavLM (50 frames per second at 16 kHz),
    so fine-tuning on seconds of audio stays cheap."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    folder = tmp_path_factory.mktemp("tiny-wavlm")
    config = WavLMConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8, 8),
        conv_kernel=(10, 8, 8),
        conv_stride=(5, 8, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        num_buckets=8,
        max_bucket_distance=16,
    )
    torch.manual_seed(0)
    WavLMModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> Path:
    """A tiny random RoBERTa with a byte-level BPE tokenizer trained here on a few sentences."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    sentences = [
        "I am happy today.",
        "Der Lappen liegt auf dem Eisschrank.",
        "Das will sie am Mittwoch abgeben.",
    ]
    bpe.train_from_iterator(
        sentences, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt")
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=12,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=140,
        pad_token_id=tokenizer.pad_token_id,
    )
    RobertaModel(config).save_pretrained(folder)
    return folder


E2E_SPEAKERS = ["03", "08", "09", "10", "11", "16"]


@pytest.fixture(scope="session")
def run(tmp_path_factory, emodb):
    """A small bimodal Crab trained through the CLI on six real EmoDB speakers (test 16, val 11)."""
    from crabser.data.corpora import emodb as emodb_adapter
    from crabser.data.manifest import Manifest, write_manifest

    root = tmp_path_factory.mktemp("e2e")
    full = emodb_adapter.prepare(emodb).frame
    write_manifest(Manifest(full[full["speaker"].isin(E2E_SPEAKERS)]), root / "manifest.csv")
    config = root / "config.yaml"
    config.write_text(
        f"""
name: e2e
output_dir: {root / "runs"}
cache_dir: {root / "cache"}
data: {{manifest: {root / "manifest.csv"}, test_speakers: ["16"], val_speakers: ["11"]}}
speech: {{kind: whisper-ct2}}
text: {{kind: hf-text}}
model: {{hidden: 64, speech_frame_stride: 4, dropout: 0.1, attention_dropout: 0.1}}
train: {{epochs: 12, batch_size: 32, accumulate: 1, lr_head: 3.0e-3, progress: false, threads: 2}}
"""
    )
    from typer.testing import CliRunner

    from crabser.cli import app

    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return root, config
