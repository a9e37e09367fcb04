import numpy as np
import pytest

from crabser.data.audio import load_audio
from crabser.data.manifest import from_records
from crabser.errors import AudioError
from crabser.features.extract import extract
from crabser.features.store import FeatureStore
from conftest import tone


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
        (lambda d, w: _write_bytes(d / "junk.wav", b"RIFF\x00\x01not audio at all" * 20), "corrupt"),
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
        return pad_batch([w[: len(w) // 1600 * 1600].reshape(-1, 1600).mean(1, keepdims=True) for w in batch])


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
            frame = av.AudioFrame.from_ndarray(planar[:, start : start + 1024].copy(), format="fltp", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_mp4_audio_track_is_decoded_to_16k_mono(tmp_path):
    path = tmp_path / "dia0_utt0.mp4"
    _write_mp4(path)
    wave = load_audio(path, 16000)
    assert wave.ndim == 1 and abs(len(wave) / 16000 - 1.0) < 0.1  # AAC adds ~1024 samples of priming
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 5  # the tone survives decoding
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(AudioError, match="broken.mp4"):
        load_audio(broken)
