import io

import numpy as np
import pytest
import soundfile as sf
from conftest import tone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crabser.data.audio import (
    AudioScaleWarning,
    AudioTooLong,
    AudioTruncatedWarning,
    decode_audio,
    load_audio,
    stream_audio,
)
from crabser.data.manifest import from_records
from crabser.errors import AudioError
from crabser.features.extract import extract
from crabser.features.store import FeatureStore


def test_stereo_is_downmixed_and_44k_resampled(write_wav):
    path = write_wav("stereo44.wav", tone(1.0, rate=44100, channels=2), rate=44100)
    audio = load_audio(path, 16000)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert abs(len(audio) - 16000) <= 2


def test_mono_16k_is_unchanged(write_wav):
    wave = tone(0.5)
    audio = load_audio(write_wav("a.wav", wave), 16000)
    assert np.allclose(audio, wave, atol=1e-4)


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d, w: d / "missing.wav", "not found"),
        (lambda d, w: _write_bytes(d / "empty.wav", b""), "empty file"),
        (
            lambda d, w: _write_bytes(d / "junk.wav", b"RIFF\x00\x01not audio at all" * 20),
            "corrupt",
        ),
        (lambda d, w: w("silent.wav", np.zeros(16000, dtype=np.float32)), "silent"),
        (lambda d, w: w("zero.wav", np.zeros(0, dtype=np.float32)), "empty audio"),
    ],
)
def test_bad_files_raise_a_named_error(tmp_path, write_wav, make, problem):
    path = make(tmp_path, write_wav)
    with pytest.raises(AudioError) as caught:
        load_audio(path)
    assert problem in str(caught.value) and path.name in str(caught.value)


def test_truncated_file_is_a_named_error(tmp_path, write_wav):
    good = write_wav("good.wav", tone(1.0))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # header cut in the middle
    with pytest.raises(AudioError, match="truncated.wav"):
        load_audio(truncated)


class _MeanEncoder:
    """A stand-in speech encoder: 10 frames/s of the signal's running mean (no model needed)."""

    cache_id = "test-mean"
    modality = "speech"
    output_dim = 1
    sample_rate = 16000
    frame_rate = 10.0

    def __init__(self):
        self.calls = 0

    def encode(self, batch):
        from crabser.features.encoders import pad_batch

        self.calls += 1
        return pad_batch(
            [w[: len(w) // 1600 * 1600].reshape(-1, 1600).mean(1, keepdims=True) for w in batch]
        )


def test_one_bad_file_never_loses_the_others(tmp_path, write_wav):
    good = [write_wav(f"g{i}.wav", tone(1.0, freq=200 + 50 * i)) for i in range(3)]
    silent = write_wav("silent.wav", np.zeros(8000, dtype=np.float32))
    manifest = from_records(
        [{"id": p.stem, "audio": str(p), "label": "x"} for p in [good[0], silent, good[1], good[2]]]
        + [{"id": "copy_of_g0", "audio": str(good[0]), "label": "x"}]  # same content: encoded once
    )
    store = FeatureStore(tmp_path / "store")
    encoder = _MeanEncoder()
    report = extract(manifest, encoder, store, on_error="skip", batch_size=2)
    assert report.encoded == 3 and report.cached == 1 and list(report.failures) == ["silent"]
    assert "silent audio" in report.failures["silent"]
    again = extract(manifest, encoder, store, on_error="skip")
    assert again.cached == 4 and again.encoded == 0
    with pytest.raises(AudioError, match="silent.wav"):
        extract(manifest, _MeanEncoder(), FeatureStore(tmp_path / "other"), on_error="raise")


def _write_mp4(path, seconds: float = 1.0, rate: int = 44100) -> None:
    """An AAC stereo .mp4 (like MELD's clips) with a 440 Hz tone in both channels."""
    import av

    t = np.arange(int(seconds * rate)) / rate
    planar = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        for start in range(0, planar.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                planar[:, start : start + 1024].copy(), format="fltp", layout="stereo"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_mp4_audio_track_is_decoded_to_16k_mono(tmp_path):
    path = tmp_path / "dia0_utt0.mp4"
    _write_mp4(path)
    wave = load_audio(path, 16000)
    assert (
        wave.ndim == 1 and abs(len(wave) / 16000 - 1.0) < 0.1
    )  # AAC adds ~1024 samples of priming
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 5  # the tone survives decoding
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(AudioError, match="broken.mp4"):
        load_audio(broken)


# --- decode_audio: bytes and arrays, the inputs of Recognizer.predict and the service
# ---------------


def _wav_bytes(wave: np.ndarray, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt)
    return buffer.getvalue()


def test_bytes_path_and_array_decode_to_the_same_wave(write_wav):
    wave = tone(0.7)
    path = write_wav("same.wav", wave)
    from_path = decode_audio(path)
    assert np.array_equal(decode_audio(path.read_bytes()), from_path)
    assert np.allclose(decode_audio((wave, 16000)), from_path, atol=1e-4)
    assert np.allclose(decode_audio(wave, sample_rate=16000), from_path, atol=1e-4)


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_any_rate_is_resampled_to_16k(rate):
    wave = tone(1.0, rate=rate)
    for source in (_wav_bytes(wave, rate), (wave, rate)):
        out = decode_audio(source, 16000)
        assert abs(len(out) - 16000) <= 2
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(np.argmax(spectrum) * 16000 / len(out) - 220) < 3  # the 220 Hz tone survives


def test_stereo_arrays_either_layout_and_int16_are_mono_float():
    stereo = tone(0.5, channels=2)
    expected = stereo.mean(axis=1)
    assert np.allclose(decode_audio((stereo, 16000)), expected, atol=1e-6)
    assert np.allclose(
        decode_audio((stereo.T.copy(), 16000)), expected, atol=1e-6
    )  # (channels, samples)
    ints = (expected * 32768).astype(np.int16)
    assert np.allclose(decode_audio((ints, 16000)), expected, atol=1e-4)


def test_flac_and_ogg_bytes_decode():
    wave = tone(0.5)
    assert np.allclose(decode_audio(_wav_bytes(wave, fmt="FLAC")), wave, atol=1e-4)
    assert len(decode_audio(_wav_bytes(wave, fmt="OGG"))) == pytest.approx(8000, abs=400)


@pytest.mark.parametrize(
    "source, kwargs, problem",
    [
        (b"", {}, "empty file"),
        (b"hello, this is not audio" * 10, {}, "not audio or an unsupported format"),
        (np.zeros(16000, dtype=np.float32), {"sample_rate": 16000}, "silent"),
        (np.zeros(0, dtype=np.float32), {"sample_rate": 16000}, "empty audio"),
        (
            np.array([0.1, np.nan] * 8000, dtype=np.float32),
            {"sample_rate": 16000},
            "NaN or infinite",
        ),
        (
            np.array([0.1, np.inf] * 8000, dtype=np.float32),
            {"sample_rate": 16000},
            "NaN or infinite",
        ),
        (tone(0.5), {}, "needs its sample rate"),
        (tone(0.5), {"sample_rate": 3}, "implausible sample rate"),
        (tone(0.5), {"sample_rate": float("nan")}, "whole number of Hz"),
        (tone(0.5), {"sample_rate": float("inf")}, "whole number of Hz"),
        (tone(0.5), {"sample_rate": "16k"}, "number of Hz"),
        (tone(0.5), {"sample_rate": 16000.5}, "whole number of Hz"),
        (np.zeros((2, 2, 2), dtype=np.float32), {"sample_rate": 16000}, "1-D or 2-D"),
        (np.array(["a"] * 400), {"sample_rate": 16000}, "dtype"),
        (12345, {}, "not audio"),
    ],
)
def test_bad_inputs_raise_a_named_error(source, kwargs, problem):
    with pytest.raises(AudioError, match=problem) as caught:
        decode_audio(source, name="clip-x", **kwargs)
    assert "clip-x" in str(caught.value)


def test_truncated_bytes_keep_what_is_there_or_fail_by_name(write_wav):
    data = write_wav("t.wav", tone(1.0)).read_bytes()
    with pytest.raises(AudioError, match="up.wav"):
        decode_audio(data[:30], name="up.wav")  # header cut: nothing decodable
    assert (
        0 < len(decode_audio(data[: len(data) // 2], name="half.wav")) < 16000
    )  # samples cut: the first half


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzzed_bytes_decode_or_raise_audio_error(data):
    try:
        out = decode_audio(data, name="fuzz")
    except AudioError as error:
        assert "fuzz" in str(error)
    else:
        assert out.dtype == np.float32 and out.ndim == 1 and np.isfinite(out).all()


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=44, max_size=2048), st.integers(min_value=0, max_value=43))
def test_fuzzed_wav_headers_decode_or_raise_audio_error(noise, cut):
    header = _wav_bytes(tone(0.1))[:44]
    data = header[:cut] + noise
    try:
        decode_audio(data, name="hdr")
    except AudioError:
        pass


def test_stream_audio_blocks_join_to_the_whole_wave(write_wav):
    wave = tone(5.0, rate=44100)
    path = write_wav("long44.wav", wave, rate=44100)
    blocks, duration = stream_audio(path, 16000, block_seconds=1.0)
    joined = np.concatenate(list(blocks))
    whole = decode_audio(path)
    assert duration == pytest.approx(5.0)
    assert abs(len(joined) - len(whole)) <= 2
    n = min(len(joined), len(whole))
    assert (
        np.abs(joined[100 : n - 100] - whole[100 : n - 100]).max() < 1e-2
    )  # streaming vs one-shot resampler


def test_browser_webm_opus_bytes_decode():
    """What the web page's microphone recording sends (MediaRecorder: WebM / Opus)."""
    av = pytest.importorskip(
        "av", reason="PyAV decodes WebM (crabser[video]; in the dev extras CI installs)"
    )
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        wave = tone(1.0, rate=48000, freq=440)[None, :]
        for i in range(0, wave.shape[1], 960):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wave[:, i : i + 960]), format="fltp", layout="mono"
            )
            frame.sample_rate = 48000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = decode_audio(buffer.getvalue(), name="recording.webm")
    assert abs(len(out) - 16000) < 400
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 5


# --- hostile input: decompression bombs, lying headers, absurd rates (issue 19)
# ----------------------


def _flac_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def _claiming(flac: bytes, total_samples: int) -> bytes:
    """The FLAC with STREAMINFO's 36-bit total-samples field replaced (0 = unknown, as streaming
    encoders write)."""
    field = int.from_bytes(flac[18:26], "big") & ~((1 << 36) - 1) | total_samples
    return flac[:18] + field.to_bytes(8, "big") + flac[26:]


def _peak_bytes(function) -> tuple[int, object]:
    """Peak memory (tracemalloc, numpy included) added while ``function()`` runs, and its result or
    error."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            result = function()
        except AudioError as error:
            result = error
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


def test_a_header_over_the_limit_is_refused_before_decoding():
    ten_minutes = _flac_bytes(
        np.zeros(16000 * 600, dtype=np.int16), 16000
    )  # 600 s of silence, ~30 KB
    peak, result = _peak_bytes(lambda: decode_audio(ten_minutes, name="bomb.flac", max_seconds=60))
    assert (
        isinstance(result, AudioTooLong) and "600.0 s" in str(result) and "bomb.flac" in str(result)
    )
    assert peak < 256_000  # nothing decoded


@pytest.mark.parametrize("claim", [0, (1 << 36) - 1], ids=["unknown-length", "absurd-length"])
def test_a_header_that_cannot_be_trusted_is_read_up_to_the_limit_only(claim):
    seconds, limit = 120, 5.0
    rng = np.random.default_rng(0)
    noise = (3000 * rng.standard_normal((48000 * seconds, 2))).astype(
        np.int16
    )  # 48 kHz stereo: resampled
    bomb = _claiming(_flac_bytes(noise, 48000), claim)
    peak, result = _peak_bytes(
        lambda: decode_audio(bomb, 16000, name="bomb.flac", max_seconds=limit)
    )
    assert isinstance(result, AudioTooLong) and "over the limit of 5 s" in str(result)
    assert peak < limit * 16000 * 4 + 2 * 2**20  # the limit's own size plus a decode block
    short = _claiming(_flac_bytes((tone(3.0) * 32767).astype(np.int16), 16000), claim)
    wave = decode_audio(short, 16000, name="short.flac", max_seconds=limit)
    assert 3.0 - 0.1 < len(wave) / 16000 <= 3.0  # all but the last partial block


@pytest.mark.parametrize("rate", [10, 999, 800_000])
def test_absurd_header_rates_are_refused_before_decoding(rate):
    data = io.BytesIO()
    sf.write(data, np.full(rate // 10 + 1, 0.1, dtype=np.float32), rate, format="WAV")
    with pytest.raises(AudioError, match=f"implausible sample rate {rate} Hz"):
        decode_audio(data.getvalue(), name="odd.wav")


def test_stream_audio_refuses_audio_over_the_limit_before_reading():
    data = _flac_bytes((tone(20.0) * 32767).astype(np.int16), 16000)
    with pytest.raises(AudioTooLong, match="20.0 s long"):
        stream_audio(data, 16000, name="long.flac", max_seconds=10)
    blocks, total = stream_audio(_claiming(data, 0), 16000, name="unknown.flac", max_seconds=30)
    assert total == pytest.approx(20.0, abs=0.3) and sum(len(b) for b in blocks) == round(
        total * 16000
    )
    with pytest.raises(AudioTooLong, match="over the limit of 10 s"):
        stream_audio(_claiming(data, 0), 16000, name="unknown.flac", max_seconds=10)


def test_a_container_over_the_limit_is_refused(tmp_path):
    pytest.importorskip(
        "av", reason="PyAV decodes MP4 (crabser[video]; in the dev extras CI installs)"
    )
    path = tmp_path / "clip.mp4"
    _write_mp4(path, seconds=3.0)
    with pytest.raises(AudioTooLong, match="over the limit of 1 s"):
        decode_audio(path.read_bytes(), name="clip.mp4", max_seconds=1.0)
    assert len(decode_audio(path.read_bytes(), name="clip.mp4", max_seconds=4.0)) > 2.9 * 16000


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_unsigned_integer_arrays_are_centred(dtype):
    wave = tone(0.5)
    half = (np.iinfo(dtype).max + 1) / 2
    ints = np.round(wave * (half - 1) + half).astype(dtype)
    out = decode_audio((ints, 16000))
    assert abs(float(out.mean())) < 0.01  # no DC offset
    assert np.allclose(out, wave, atol=2 / half)


def test_float_arrays_at_integer_scale_are_used_with_a_warning():
    wave = tone(0.5)
    with pytest.warns(AudioScaleWarning, match="int16"):
        out = decode_audio((wave * 32768, 16000), name="loud")
    assert np.allclose(out, wave * 32768, rtol=1e-5)


def test_a_header_claiming_days_without_a_limit_is_no_allocation_request():
    # 2 s of audio whose STREAMINFO claims 5.8 days (under the 7 days a header is trusted for):
    # sized by the claim, the output buffer alone asked for 30 GB (a MemoryError, not an
    # AudioError). libsndfile cannot read such a file past its first failed read: a named
    # AudioError, in bounded memory.
    liar = _claiming(_flac_bytes((tone(2.0) * 32767).astype(np.int16), 16000), 500_000 * 16000)
    peak, result = _peak_bytes(lambda: decode_audio(liar, 16000, name="liar.flac"))
    assert isinstance(result, AudioError) and "liar.flac" in str(result)
    assert peak < 600 * 16000 * 4 + 4 * 2**20  # at most the first buffer (600 s) and a decode block


def test_a_flac_cut_short_keeps_the_samples_that_are_there():
    data = _flac_bytes((tone(20.0) * 32767).astype(np.int16), 16000)
    with pytest.warns(AudioTruncatedWarning, match="cut.flac: the audio data ends early"):
        wave = decode_audio(data[: len(data) // 2], 16000, name="cut.flac")
    assert 5.0 < len(wave) / 16000 < 15.0
    with pytest.raises(AudioError, match="cut.flac"):  # cut inside its header: nothing to keep
        decode_audio(data[:30], 16000, name="cut.flac")


@pytest.mark.parametrize("rate", [10**400, "16000", b"16000"])
def test_sample_rates_that_are_no_number_of_hz_are_named(rate):
    with pytest.raises(AudioError, match="sample rate must be a number of Hz"):
        decode_audio(tone(1.0), sample_rate=rate, name="odd")


@pytest.mark.parametrize("samples, rate", [(320, 16000), (399, 16000), (199, 8000)])
def test_audio_too_short_for_a_wav2vec_style_encoder_is_named(samples, rate):
    # 320-399 samples at 16 kHz passed the old 20 ms minimum, but give wav2vec 2.0 / WavLM zero
    # frames
    with pytest.raises(AudioError, match="short.wav: audio too short.*at least 25 ms"):
        decode_audio(tone(1.0, rate)[:samples], sample_rate=rate, name="short.wav")
    assert len(decode_audio(tone(1.0, rate)[: rate // 40], sample_rate=rate, name="ok.wav")) >= 400


def test_the_shortest_accepted_clip_gives_wav2vec_style_encoders_a_frame():
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from crabser.data.audio import MIN_DURATION_S

    model = Wav2Vec2Model(
        Wav2Vec2Config(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            conv_dim=(8,) * 7,
        )
    ).eval()
    samples = round(MIN_DURATION_S * 16000)
    with torch.no_grad():
        assert model(torch.randn(1, samples)).last_hidden_state.shape[1] == 1
        with pytest.raises(RuntimeError):  # one sample fewer: no frame at all
            model(torch.randn(1, samples - 1))
