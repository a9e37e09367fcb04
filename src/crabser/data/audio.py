"""Robust audio decoding: soundfile decode, down-mix to mono, soxr resampling, named errors.

Inputs (:data:`AudioInput`): a file path, the bytes of an audio file (an upload), or a numpy array
with its sample rate (``(wave, rate)`` or ``sample_rate=``). Arrays are ``(samples,)`` or
``(samples, channels)`` as soundfile returns them; ``(channels, samples)`` with at most 8 channels
is recognised and transposed. Integer arrays are scaled to [-1, 1].

Video and compressed containers (``.mp4``, ``.mkv``, ``.m4a``, ``.webm``, ``.aac``: MELD's clips, a
browser's microphone recording) are decoded with PyAV, which ships its own FFmpeg
(``pip install crabser[video]``).

Every failure raises :class:`~crabser.errors.AudioError` naming the input and the problem
(missing, corrupt / unsupported format, empty, silent, NaN samples). Callers decide the policy:
stop, or skip the file with a warning and go on with the others (see ``features.extract``).
:func:`stream_audio` reads long files block by block in bounded memory.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from crabser.errors import AudioError

#: Peak amplitude (full scale = 1.0) under which a whole file counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4
#: Suffixes decoded with PyAV instead of soundfile.
CONTAINER_SUFFIXES = (".mp4", ".mkv", ".m4a", ".webm", ".aac", ".mov")
#: Shortest usable clip, in seconds; shorter ones are refused as empty.
MIN_DURATION_S = 0.02
#: What :func:`decode_audio` accepts.
AudioInput = str | Path | bytes | np.ndarray | tuple[np.ndarray, int]


def load_audio(
    path: str | Path,
    target_rate: int = 16000,
    silence_peak: float = SILENCE_PEAK,
) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``target_rate``; raise AudioError on unusable input."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        audio, rate = _decode_container(path, path)
    else:
        try:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
            raise AudioError(path, f"corrupt or unsupported audio format ({error})") from None
    return _checked_mono(audio, rate, path, target_rate, silence_peak)


def decode_audio(
    source: AudioInput,
    target_rate: int = 16000,
    *,
    sample_rate: int | None = None,
    name: str | None = None,
    silence_peak: float = SILENCE_PEAK,
) -> np.ndarray:
    """Any :data:`AudioInput` to mono float32 at ``target_rate``; AudioError names ``name`` (or the path)."""
    if isinstance(source, (str, Path)):
        return load_audio(source, target_rate, silence_peak)
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError(name or "<array>", "pass audio as (samples, sample_rate)")
        source, sample_rate = source
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<upload>"
        audio, rate = _decode_bytes(bytes(source), label)
    elif isinstance(source, np.ndarray):
        label = name or "<array>"
        audio, rate = _as_frames(source, label), _checked_rate(sample_rate, label)
    else:
        raise AudioError(name or type(source).__name__, "not audio: pass a path, bytes, or a numpy array with its sample rate")
    return _checked_mono(audio, rate, label, target_rate, silence_peak)


def _checked_rate(sample_rate: int | None, label: str) -> int:
    if sample_rate is None:
        raise AudioError(label, "a numpy array needs its sample rate (sample_rate=...)")
    if not 1000 <= int(sample_rate) <= 768000:
        raise AudioError(label, f"implausible sample rate {sample_rate} Hz")
    return int(sample_rate)


def _as_frames(array: np.ndarray, label: str) -> np.ndarray:
    """An array as float32 ``(samples, channels)``."""
    if array.ndim == 1:
        array = array[:, None]
    elif array.ndim == 2:
        if array.shape[0] <= 8 < array.shape[1]:
            array = array.T  # (channels, samples)
    else:
        raise AudioError(label, f"audio arrays are 1-D or 2-D, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(label, f"audio arrays hold numbers, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


def _decode_bytes(data: bytes, label: str) -> tuple[np.ndarray, int]:
    """The bytes of an audio file: soundfile first (WAV, FLAC, OGG, MP3), then PyAV (WebM, MP4, ...)."""
    if not data:
        raise AudioError(label, "empty file (0 bytes)")
    try:
        return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        libsndfile_error = error
    if importlib.util.find_spec("av") is None:  # no FFmpeg to try: libsndfile's answer is the answer
        raise AudioError(label, f"not audio or an unsupported format ({libsndfile_error})")
    try:
        return _decode_container(io.BytesIO(data), label)
    except AudioError:
        raise AudioError(label, "not audio or an unsupported format (neither libsndfile nor FFmpeg can decode it)") from None


def _checked_mono(audio: np.ndarray, rate: int, label: object, target_rate: int, silence_peak: float) -> np.ndarray:
    """The checks every input passes: length, finite samples, not silent; then mono at ``target_rate``."""
    if audio.shape[0] < max(1, int(MIN_DURATION_S * rate)):
        raise AudioError(label, f"empty audio ({audio.shape[0]} samples)")
    if not np.isfinite(audio).all():
        raise AudioError(label, "corrupt audio (NaN or infinite samples)")
    mono = audio.mean(axis=1)
    if float(np.abs(mono).max()) < silence_peak:
        raise AudioError(label, f"silent audio (peak below {silence_peak:g} of full scale)")
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode_container(source, label: object) -> tuple[np.ndarray, int]:
    """The first audio stream of a container, down-mixed by FFmpeg: ``(samples, 1)`` float32, rate."""
    try:
        import av
    except ImportError:
        raise AudioError(label, "decoding this container needs PyAV: pip install 'crabser[video]'") from None
    try:
        with av.open(source if not isinstance(source, Path) else str(source)) as container:
            if not container.streams.audio:
                raise AudioError(label, "no audio stream in the file")
            stream = container.streams.audio[0]
            rate = int(stream.rate or 16000)
            to_mono = av.AudioResampler(format="fltp", layout="mono", rate=rate)
            chunks = [out.to_ndarray()[0] for frame in container.decode(stream) for out in to_mono.resample(frame)]
            chunks += [out.to_ndarray()[0] for out in to_mono.resample(None)]  # flush
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise AudioError(label, f"corrupt or unsupported container ({error})") from None
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return audio.astype(np.float32)[:, None], rate


def duration_seconds(path: str | Path) -> float:
    """Duration of an audio file from its header, without decoding; AudioError if unreadable."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"corrupt or unsupported audio format ({error})") from None
    return info.frames / info.samplerate


def stream_audio(
    source: str | Path | bytes, target_rate: int = 16000, block_seconds: float = 30.0, name: str | None = None
) -> tuple[Iterator[np.ndarray], float]:
    """Mono float32 blocks at ``target_rate`` of a long file, read and resampled block by block.

    Returns the block iterator and the duration in seconds. Memory stays bounded by the block size
    for formats libsndfile reads (WAV, FLAC, OGG, MP3); containers (PyAV) are decoded whole first.
    Blocks are not checked for silence (a silent stretch of a long recording is normal), but NaN /
    infinite samples raise AudioError.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<upload>")
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        info = sf.info(handle)
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        wave = decode_audio(source, target_rate, name=label, silence_peak=0.0)
        step = max(1, int(block_seconds * target_rate))
        return (wave[i : i + step] for i in range(0, len(wave), step)), len(wave) / target_rate
    if info.frames < max(1, int(MIN_DURATION_S * info.samplerate)):
        raise AudioError(label, f"empty audio ({info.frames} samples)")

    def blocks() -> Iterator[np.ndarray]:
        resampler = None if info.samplerate == target_rate else soxr.ResampleStream(info.samplerate, target_rate, 1, dtype="float32")
        frames = max(1, int(block_seconds * info.samplerate))
        with sf.SoundFile(handle) as audio:
            while True:
                block = audio.read(frames, dtype="float32", always_2d=True)
                last = len(block) < frames
                if not np.isfinite(block).all():
                    raise AudioError(label, "corrupt audio (NaN or infinite samples)")
                mono = block.mean(axis=1) if len(block) else np.zeros(0, dtype=np.float32)
                out = mono if resampler is None else resampler.resample_chunk(mono, last=last)
                if len(out):
                    yield np.ascontiguousarray(out, dtype=np.float32)
                if last:
                    return

    return blocks(), info.frames / info.samplerate
