"""Encoders: the embedded offline defaults, and the hub-id code path on tiny random models."""

import numpy as np
import pytest
import torch
from conftest import tone

from crabser.config import EncoderConfig
from crabser.features.encoders import (
    HFSpeechEncoder,
    HFTextEncoder,
    WhisperCT2Encoder,
    build_encoder,
)


@pytest.fixture(scope="module")
def whisper():
    return WhisperCT2Encoder()


def test_embedded_whisper_encodes_the_clips_own_length(whisper):
    out = whisper.encode([tone(1.0), tone(2.5)])
    assert whisper.output_dim == 384
    assert out.features.shape == (2, 125, 384)
    assert out.mask.sum(1).tolist() == [50, 125]  # 50 frames per second
    assert whisper.cache_id.endswith(":own")


def test_whisper_padded_mode_differs_and_has_its_own_cache_id(whisper):
    padded = WhisperCT2Encoder(pad_to_seconds=30)
    wave = tone(1.0)
    a, b = whisper.encode([wave]).unpadded()[0], padded.encode([wave]).unpadded()[0]
    assert a.shape == b.shape == (50, 384)
    assert padded.cache_id != whisper.cache_id
    assert not np.allclose(a, b)


def test_whisper_long_clip_uses_30_second_windows(whisper):
    out = whisper.encode([tone(31.0)])
    assert out.mask.sum().item() == 1550


def test_embedded_minilm_token_features():
    encoder = HFTextEncoder()
    out = encoder.encode(["Der Lappen liegt auf dem Eisschrank.", "Ja."])
    assert encoder.output_dim == 384 and out.features.shape[-1] == 384
    assert out.mask[0].sum() > out.mask[1].sum()
    assert torch.all(out.features[1][~out.mask[1]] == 0)


def test_hf_speech_encoder_from_a_local_folder(tiny_wavlm):
    encoder = HFSpeechEncoder(str(tiny_wavlm), layer=-1)
    out = encoder.encode([tone(0.5), tone(0.2)])
    assert out.features.shape[-1] == 16 == encoder.output_dim
    lengths = out.mask.sum(1).tolist()
    assert lengths[0] > lengths[1] > 0
    # encoded clip by clip: batching never changes an item's features
    alone = encoder.encode([tone(0.2)]).unpadded()[0]
    np.testing.assert_allclose(out.unpadded()[1], alone, atol=1e-5)


def test_hf_speech_encoder_all_layers(tiny_wavlm):
    encoder = build_encoder(EncoderConfig(kind="hf-speech", model=str(tiny_wavlm), layer="all"))
    out = encoder.encode([tone(0.3)])
    assert out.features.shape[2:] == (3, 16)  # embeddings + 2 layers


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ni\nam\nhappy\nsad\ntoday")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=10,
            hidden_size=12,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=24,
        )
    ).save_pretrained(folder)
    return folder


def test_hf_text_encoder_from_a_local_folder(tiny_bert):
    encoder = HFTextEncoder(str(tiny_bert), max_tokens=4)
    out = encoder.encode(["i am happy today", "sad"])
    assert out.features.shape == (2, 4, 12)  # cut at max_tokens
    assert out.mask.sum(1).tolist() == [4, 3]  # [CLS] sad [SEP]
    assert encoder.cache_id.startswith("hf-text:tiny-bert")


def test_egemaps_paralinguistic_stream():
    from crabser.features.paralinguistic import EGeMAPSEncoder

    encoder = EGeMAPSEncoder()
    batch = encoder.encode([tone(1.0), tone(0.5, freq=330.0)])
    assert encoder.output_dim == 25 and batch.features.shape[-1] == 25
    assert batch.mask.sum(dim=1).tolist()[0] in range(96, 101)  # 10 ms hop, 20 ms window
    assert 45 <= batch.mask.sum(dim=1).tolist()[1] <= 50
    pitch = encoder.feature_names.index("F0semitoneFrom27.5Hz_sma3nz")
    voiced = batch.features[0, : int(batch.mask[0].sum()), pitch]
    # 220 Hz is 12 * log2(220 / 27.5) = 36 semitones above 27.5 Hz
    assert abs(float(voiced[voiced > 0].median()) - 36.0) < 1.0


@pytest.mark.parametrize("pad", [None, 30])
def test_whisper_batch_gives_each_clip_what_it_gets_alone(whisper, pad):
    encoder = whisper if pad is None else WhisperCT2Encoder(pad_to_seconds=pad)
    if pad is not None:
        encoder.windows_per_call = 3  # five 30 s windows: calls of 3 and 2
    clips = [tone(1.0), tone(1.0, freq=330.0), tone(2.5), tone(31.0, freq=150.0)]
    together = encoder.encode(clips).unpadded()
    for clip, batched in zip(clips, together):
        alone = encoder.encode([clip]).unpadded()[0]
        assert batched.shape == alone.shape
        np.testing.assert_allclose(batched, alone, atol=1e-4)


@pytest.mark.parametrize("seconds, frames", [(1.0, 100), (3.1, 310), (3.1, 3000), (30.0, 3000)])
def test_numpy_log_mel_equals_transformers_whisper_features(seconds, frames):
    from transformers import WhisperFeatureExtractor

    from crabser.features.log_mel import log_mel

    wave = np.random.default_rng(3).normal(0, 0.1, int(seconds * 16000)).astype(np.float32) + tone(
        seconds, freq=440.0
    )
    padded = np.zeros(max(frames * 160, len(wave)), dtype=np.float32)
    padded[: len(wave)] = wave
    reference = WhisperFeatureExtractor(feature_size=80)(
        padded, sampling_rate=16000, return_tensors="np"
    )["input_features"][0, :, :frames]
    ours = log_mel(padded, frames)
    assert ours.shape == (80, frames) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=5e-5)
    assert log_mel(wave[:8000], 50).max() == pytest.approx(
        log_mel(wave[:8000], 100).max()
    )  # the silence after adds nothing


def test_the_hub_probe_goes_to_the_proxy_when_one_is_set(monkeypatch):
    from crabser.features.encoders import _hub_address

    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert _hub_address("https://huggingface.co") == ("huggingface.co", 443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _hub_address("https://huggingface.co") == (
        "proxy.internal",
        3128,
    )  # a direct probe would fail there
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    assert _hub_address("https://huggingface.co") == ("huggingface.co", 443)


def test_hf_speech_whisper_names_its_input_form_and_refuses_padding_beyond_30_s(tmp_path):
    """Before own-length Whisper, hub Whisper features (always padded to 30 s) were cached under
    ``hf-speech:<tag>:<layer>:<max_seconds>``; the own-length form must not share that id."""
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        vocab_size=64,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperModel(config).save_pretrained(tmp_path / "tiny-whisper")
    own = HFSpeechEncoder(str(tmp_path / "tiny-whisper"))
    assert own.cache_id.endswith(":None:own")
    assert HFSpeechEncoder(str(tmp_path / "tiny-whisper"), pad_to_seconds=30).cache_id.endswith(
        ":None:pad30"
    )
    with pytest.raises(ValueError, match=r"pad_to_seconds must be in \(0, 30\]"):
        HFSpeechEncoder(str(tmp_path / "tiny-whisper"), pad_to_seconds=31)
