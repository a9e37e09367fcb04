"""Robust audio decoding: bounded block-wise decode, down-mix to mono, soxr resampling, named
errors.

Inputs (:data:`AudioInput`): a file path, the bytes of an audio file (an upload), or a numpy array
with its sample rate (``(wave, rate)`` or ``sample_rate=``). Arrays are ``(samples,)`` or
``(samples, channels)`` as soundfile returns them; ``(channels, samples)`` with at most 8 channels
is recognised and transposed. Signed integer arrays are scaled to [-1, 1); unsigned ones (8-bit WAV
convention) are centred first (``(x - 2^(bits-1)) / 2^(bits-1)``), so they carry no DC offset. A
float array that peaks above :data:`FLOAT_SCALE_WARNING` (an int16-scale array passed as float) is
used as it is, with a warning (:class:`AudioScaleWarning`).

Video and compressed containers (``.mp4``, ``.mkv``, ``.m4a``, ``.webm``, ``.aac``: MELD's clips, a
browser's microphone recording) are decoded with PyAV, which ships its own FFmpeg
(``pip install crabser[video]``).

Hostile input: every file is decoded block by block (at most :data:`BLOCK_SAMPLES` samples over all
channels per read), down-mixed and resampled per block, so memory never depends on what a header
claims. The sample rate is checked before decoding (:data:`MIN_RATE` to :data:`MAX_RATE`). With
``max_seconds``, a header that says the audio is longer is refused at once (:class:`AudioTooLong`);
a header that says nothing or something absurd (unknown length: libsndfile reports 2^63 - 1 frames;
more than :data:`HEADER_TRUST_SECONDS`) is not trusted: decoding goes on until the limit and stops
there. Memory is then bounded by the limit: ``max_seconds x target_rate x 4`` bytes for the output
plus one decode block. Without ``max_seconds`` the output buffer is first sized by the header's
claim up to :data:`FIRST_BUFFER_SECONDS` and grows only as samples arrive.

Every failure raises :class:`~crabser.errors.AudioError` naming the input and the problem
(missing, corrupt / unsupported format, empty, silent, NaN samples, implausible sample rate, too
long). A truncated file keeps the samples that are there (the data is cut, not the header: the
decodable part is used, with an :class:`AudioTruncatedWarning`); a file cut inside its header
raises. Callers decide the policy: stop, or
skip the file with a warning and go on with the others (see ``features.extract``).
:func:`stream_audio` reads long files block by block in bounded memory.
"""

from __future__ import annotations

import importlib.util
import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from crabser.errors import AudioError

#: Peak amplitude (full scale = 1.0) under which a whole file counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4
#: Suffixes decoded with PyAV instead of soundfile.
CONTAINER_SUFFIXES = (".mp4", ".mkv", ".m4a", ".webm", ".aac", ".mov")
#: Shortest usable clip, in seconds: the receptive field of the CNN of wav2vec 2.0 / HuBERT / WavLM
#: (400 samples at 16 kHz). A shorter clip gives those encoders zero frames (and a NaN loss for its
#: whole batch), so it is refused with :func:`_length_problem`'s message.
MIN_DURATION_S = 0.025
#: Accepted sample rates, Hz; others are refused before decoding (a 10 Hz header means 1600x
#: upsampling).
MIN_RATE, MAX_RATE = 1000, 768_000
#: Samples (frames x channels) decoded per read: bounds the decode buffer (1 MiB of float32).
BLOCK_SAMPLES = 1 << 18
#: Frames per read of a file of unknown length (the read that passes its end fails: at most this
#: many frames at the end are lost, 64 ms at 16 kHz).
UNKNOWN_LENGTH_FRAMES = 1024
#: A header claiming more seconds than this is not trusted (read until the limit instead).
HEADER_TRUST_SECONDS = 7 * 24 * 3600.0
#: The output buffer is first allocated for at most this many seconds (a header's claim is not an
#: allocation request); it grows as samples actually arrive.
FIRST_BUFFER_SECONDS = 600.0
#: A float array peaking above this is probably at integer scale (e.g. int16 as float): warned
#: about.
FLOAT_SCALE_WARNING = 2.0
#: What :func:`decode_audio` accepts.
AudioInput = str | Path | bytes | np.ndarray | tuple[np.ndarray, int]
_SOUNDFILE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


class AudioTooLong(AudioError):
    """Audio longer than the caller's ``max_seconds`` (known from the header, or found while
    decoding)."""


class ImplausibleRate(AudioError):
    """A sample rate outside :data:`MIN_RATE` to :data:`MAX_RATE`, or not a whole number of Hz."""


class AudioTruncatedWarning(UserWarning):
    """A file whose audio data ends before its header says: the decoded part is used."""


class AudioScaleWarning(UserWarning):
    """A float array whose samples look like integer scale (peak far above 1.0)."""


@dataclass
class _Opened:
    """An opened input: its rate, its trusted duration (None: unknown) and its mono blocks at
    ``rate``."""

    rate: int
    seconds: float | None
    blocks: Iterator[np.ndarray]
    streamable: bool = True  #: libsndfile reads it block by block with a trustworthy length


def load_audio(
    path: str | Path,
    target_rate: int = 16000,
    silence_peak: float = SILENCE_PEAK,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``target_rate``; raise AudioError on unusable input
    (AudioTooLong over ``max_seconds``)."""
    path = Path(path)
    _check_file(path)
    return _collect(_open_path(path), path, target_rate, max_seconds, silence_peak)


def decode_audio(
    source: AudioInput,
    target_rate: int = 16000,
    *,
    sample_rate: int | None = None,
    name: str | None = None,
    silence_peak: float = SILENCE_PEAK,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Any :data:`AudioInput` to mono float32 at ``target_rate``; AudioError names ``name`` (or the
    path).

    ``max_seconds`` bounds the decoded duration (and so the memory): longer input raises
    AudioTooLong without being decoded past the limit."""
    if isinstance(source, (str, Path)):
        return load_audio(source, target_rate, silence_peak, max_seconds)
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError(name or "<array>", "pass audio as (samples, sample_rate)")
        source, sample_rate = source
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<upload>"
        opened = _open_bytes(bytes(source), label)
    elif isinstance(source, np.ndarray):
        label = name or "<array>"
        rate = _checked_rate(sample_rate, label)
        frames = _as_frames(source, label)
        opened = _Opened(rate, len(frames) / rate, iter([frames.mean(axis=1)]))
    else:
        raise AudioError(
            name or type(source).__name__,
            "not audio: pass a path, bytes, or a numpy array with its sample rate",
        )
    return _collect(opened, label, target_rate, max_seconds, silence_peak)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _checked_rate(sample_rate: object, label: object) -> int:
    """A plausible integer sample rate, or AudioError (NaN, infinite, text, fractional, out of
    range)."""
    if sample_rate is None:
        raise AudioError(label, "a numpy array needs its sample rate (sample_rate=...)")
    if isinstance(sample_rate, (str, bytes)):
        raise ImplausibleRate(
            label, f"the sample rate must be a number of Hz, got the text {sample_rate!r}"
        )
    try:
        rate = float(sample_rate)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ImplausibleRate(
            label, f"the sample rate must be a number of Hz, got {sample_rate!r}"
        ) from None
    if not math.isfinite(rate) or rate != int(rate) or isinstance(sample_rate, bool):
        raise ImplausibleRate(
            label, f"the sample rate must be a whole number of Hz, got {sample_rate!r}"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ImplausibleRate(
            label, f"implausible sample rate {int(rate)} Hz (accepted: {MIN_RATE} to {MAX_RATE} Hz)"
        )
    return int(rate)


def _as_frames(array: np.ndarray, label: str) -> np.ndarray:
    """An array as float32 ``(samples, channels)`` at full scale 1.0."""
    if array.ndim == 1:
        array = array[:, None]
    elif array.ndim == 2:
        if array.shape[0] <= 8 < array.shape[1]:
            array = array.T  # (channels, samples)
    else:
        raise AudioError(label, f"audio arrays are 1-D or 2-D, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        half = float(info.max) + 1.0 if info.min < 0 else (float(info.max) + 1.0) / 2
        offset = 0.0 if info.min < 0 else half  # unsigned: centred, as 8-bit WAV stores samples
        return ((array.astype(np.float64) - offset) / half).astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(label, f"audio arrays hold numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    finite = array[np.isfinite(array)]
    if finite.size and float(np.abs(finite).max()) > FLOAT_SCALE_WARNING:
        warnings.warn(
            f"{label}: float samples peak at {float(np.abs(finite).max()):g}, far above full scale "
            "1.0"
            " (integer scale? divide by 32768 for int16); used as they are",
            AudioScaleWarning,
            stacklevel=4,
        )
    return array


def _open_path(path: Path) -> _Opened:
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        return _open_container(path, path)
    try:
        return _open_soundfile(str(path), path)
    except _SOUNDFILE_ERRORS as error:
        raise AudioError(path, f"corrupt or unsupported audio format ({error})") from None


def _open_bytes(data: bytes, label: str) -> _Opened:
    """The bytes of an audio file: soundfile first (WAV, FLAC, OGG, MP3), then PyAV (WebM, MP4,
    ...)."""
    if not data:
        raise AudioError(label, "empty file (0 bytes)")
    try:
        return _open_soundfile(io.BytesIO(data), label)
    except _SOUNDFILE_ERRORS as error:
        libsndfile_error = error
    if (
        importlib.util.find_spec("av") is None
    ):  # no FFmpeg to try: libsndfile's answer is the answer
        raise AudioError(label, f"not audio or an unsupported format ({libsndfile_error})")
    try:
        return _open_container(io.BytesIO(data), label)
    except (AudioTooLong, ImplausibleRate):
        raise
    except AudioError:
        raise AudioError(
            label,
            "not audio or an unsupported format (neither libsndfile nor FFmpeg can decode it)",
        ) from None


def _trusted_seconds(seconds: float | None) -> float | None:
    """A header's duration if it is believable (known, positive, under HEADER_TRUST_SECONDS), else
    None."""
    return seconds if seconds is not None and 0 < seconds <= HEADER_TRUST_SECONDS else None


def _open_soundfile(source, label: object) -> _Opened:
    """Open with libsndfile (raises its errors for the caller) and check the rate before any
    decoding."""
    audio = sf.SoundFile(source)
    try:
        rate = _checked_rate(audio.samplerate, label)
    except AudioError:
        audio.close()
        raise
    seconds = _trusted_seconds(audio.frames / rate)
    return _Opened(rate, seconds, _soundfile_blocks(audio, label, known_length=seconds is not None))


def _soundfile_blocks(
    audio: sf.SoundFile, label: object, known_length: bool = True
) -> Iterator[np.ndarray]:
    """Mono float32 blocks of an open SoundFile, at most :data:`BLOCK_SAMPLES` samples over all
    channels per read.

    Of unknown length (a streaming FLAC encoder writes 0), libsndfile fails on the read that passes
    the end: such a file is read in :data:`UNKNOWN_LENGTH_FRAMES` blocks and that failure ends the
    stream (the last partial block, under UNKNOWN_LENGTH_FRAMES frames, is lost)."""
    step = max(1, BLOCK_SAMPLES // max(1, audio.channels))
    step = step if known_length else min(step, UNKNOWN_LENGTH_FRAMES)
    read = 0
    with audio:
        while True:
            try:
                block = audio.read(step, dtype="float32", always_2d=True)
            except _SOUNDFILE_ERRORS as error:
                if step > UNKNOWN_LENGTH_FRAMES and _seek(
                    audio, read
                ):  # a read past a cut end fails whole:
                    step = UNKNOWN_LENGTH_FRAMES  # go on in small reads to keep what is there
                    continue
                if (
                    read and known_length
                ):  # data cut short (a truncated FLAC loses sync): keep what is there
                    warnings.warn(
                        f"{label}: the audio data ends early ({error}); using the "
                        f"{read / audio.samplerate:.2f} s decoded",
                        AudioTruncatedWarning,
                        stacklevel=2,
                    )
                if (
                    read
                ):  # of unknown length, this read passed the end: the normal end of the stream
                    return
                raise AudioError(label, f"corrupt audio ({error})") from None
            read += len(block)
            if len(block):
                yield block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
            if len(block) < step:
                return


def _seek(audio: sf.SoundFile, frame: int) -> bool:
    """Seek ``audio`` back to ``frame`` after a failed read; False if the file cannot."""
    try:
        audio.seek(frame)
    except _SOUNDFILE_ERRORS:
        return False
    return True


def _open_container(source, label: object) -> _Opened:
    """The first audio stream of a container (PyAV); its duration from the container's header."""
    try:
        import av
    except ImportError:
        raise AudioError(
            label, "decoding this container needs PyAV: pip install 'crabser[video]'"
        ) from None
    try:
        container = av.open(source if not isinstance(source, Path) else str(source))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise AudioError(label, f"corrupt or unsupported container ({error})") from None
    if not container.streams.audio:
        container.close()
        raise AudioError(label, "no audio stream in the file")
    stream = container.streams.audio[0]
    try:
        rate = _checked_rate(int(stream.rate or 16000), label)
    except AudioError:
        container.close()
        raise
    seconds = (
        float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    )
    if seconds is None and container.duration:
        seconds = container.duration / av.time_base
    return _Opened(
        rate,
        _trusted_seconds(seconds),
        _container_blocks(container, stream, rate, label),
        streamable=False,
    )


def _container_blocks(container, stream, rate: int, label: object) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``rate`` of a container's audio stream, decoded frame by frame."""
    import av

    to_mono = av.AudioResampler(format="fltp", layout="mono", rate=rate)
    with container:
        try:
            for frame in container.decode(stream):
                for out in to_mono.resample(frame):
                    yield out.to_ndarray()[0].astype(np.float32, copy=False)
            for out in to_mono.resample(None):  # flush
                yield out.to_ndarray()[0].astype(np.float32, copy=False)
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise AudioError(label, f"corrupt or unsupported container ({error})") from None


class _Growing:
    """A float32 buffer appended to in place: one allocation when the final size is known.

    ``capacity`` is what is allocated first (a header's claim, capped by the caller at what is
    plausible); the buffer doubles as samples arrive, never past ``ceiling`` (the limit's own size)
    unless a chunk needs it."""

    def __init__(self, capacity: int, ceiling: int | None = None) -> None:
        self.ceiling = ceiling
        self.data = np.empty(
            max(1, capacity if ceiling is None else min(capacity, ceiling)), dtype=np.float32
        )
        self.size = 0

    def append(self, chunk: np.ndarray) -> None:
        end = self.size + len(chunk)
        if end > len(self.data):
            grown = (
                2 * len(self.data)
                if self.ceiling is None
                else min(2 * len(self.data), self.ceiling)
            )
            self.data.resize(max(end, grown), refcheck=False)
        self.data[self.size : end] = chunk
        self.size = end

    def array(self) -> np.ndarray:
        self.data.resize(self.size, refcheck=False)  # shrink in place (realloc), no copy
        return self.data


def _too_long(label: object, seconds: float | None, max_seconds: float) -> AudioTooLong:
    if seconds is None:  # no trusted length: decoding stopped at the limit
        why = "its header gives no length one can trust; decoding stopped at the limit"
        return AudioTooLong(label, f"audio runs over the limit of {max_seconds:g} s ({why})")
    return AudioTooLong(
        label, f"audio is {seconds:.1f} s long, over the limit of {max_seconds:g} s"
    )


def _collect(
    opened: _Opened, label: object, target_rate: int, max_seconds: float | None, silence_peak: float
) -> np.ndarray:
    """Read, check and resample an opened input's blocks into one mono float32 wave at
    ``target_rate``.

    The checks every input passes: not longer than ``max_seconds`` (from a trusted header at once,
    else stopping at the limit), finite samples, long enough, not silent."""
    blocks, rate = opened.blocks, opened.rate
    try:
        if max_seconds is not None and opened.seconds is not None and opened.seconds > max_seconds:
            raise _too_long(label, opened.seconds, max_seconds)
        limit = None if max_seconds is None else int(max_seconds * rate)
        expected = min(opened.seconds or max_seconds or 0.0, FIRST_BUFFER_SECONDS) or 1.0
        ceiling = None if max_seconds is None else math.ceil(max_seconds * target_rate) + 64
        out = _Growing(int(expected * target_rate) + 64, ceiling)
        resampler = (
            None
            if rate == target_rate
            else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
        )
        read, peak = 0, 0.0
        for mono in blocks:
            read += len(mono)
            if limit is not None and read > limit:
                raise _too_long(label, None, max_seconds)  # type: ignore[arg-type]
            if not np.isfinite(mono).all():
                raise AudioError(label, "corrupt audio (NaN or infinite samples)")
            peak = max(peak, float(np.abs(mono).max(initial=0.0)))
            out.append(mono if resampler is None else resampler.resample_chunk(mono))
    finally:
        getattr(blocks, "close", lambda: None)()  # close the file even when stopped early
    length_problem = _length_problem(read, rate)
    if length_problem:
        raise AudioError(label, length_problem)
    if peak < silence_peak:
        raise AudioError(label, f"silent audio (peak below {silence_peak:g} of full scale)")
    if resampler is not None:
        out.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return out.array()


def _length_problem(samples: int, rate: int) -> str | None:
    """Why ``samples`` at ``rate`` are too few to encode (None: enough)."""
    if samples == 0:
        return "empty audio (0 samples)"
    if samples < math.ceil(MIN_DURATION_S * rate - 1e-9):
        return (
            f"audio too short ({samples} samples, {1000 * samples / rate:.1f} ms): speech encoders "
            "need at "
            f"least {1000 * MIN_DURATION_S:g} ms ({math.ceil(MIN_DURATION_S * 16000)} samples at "
            "16 kHz)"
        )
    return None


#: Leading bytes of the audio formats libsndfile or PyAV decode: (offset, signature) pairs, every
#: one of which must match. MP3 without an ID3 tag is recognised by its frame sync (see
#: :func:`looks_like_audio`).
AUDIO_SIGNATURES: tuple[tuple[tuple[int, bytes], ...], ...] = (
    ((0, b"RIFF"), (8, b"WAVE")),  # WAV
    ((0, b"RF64"), (8, b"WAVE")),  # WAV over 4 GB
    ((0, b"BW64"), (8, b"WAVE")),  # broadcast WAV over 4 GB
    ((0, b"riff"),),  # Sony Wave64
    ((0, b"fLaC"),),  # FLAC
    ((0, b"OggS"),),  # Ogg Vorbis / Opus / FLAC
    ((0, b"FORM"), (8, b"AIF")),  # AIFF, AIFF-C
    ((0, b".snd"),),  # Sun AU
    ((0, b"caff"),),  # Core Audio
    ((0, b"NIST_1A"),),  # NIST SPHERE (TIMIT)
    ((0, b"ID3"),),  # MP3 with an ID3v2 tag
    ((4, b"ftyp"),),  # MP4, M4A, MOV (PyAV)
    ((0, b"\x1a\x45\xdf\xa3"),),  # Matroska, WebM (PyAV)
)


def looks_like_audio(path: str | Path) -> bool:
    """Whether a file starts like audio (:data:`AUDIO_SIGNATURES`, or an MPEG audio frame header:
    MP2/MP3 or ADTS AAC without a tag), whatever its name; False for a file that cannot be read.
    A look at the first bytes only: the file may still fail to decode."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError:
        return False
    if any(
        all(head[at : at + len(sig)] == sig for at, sig in sig_set) for sig_set in AUDIO_SIGNATURES
    ):
        return True
    # An MPEG audio frame header: 11 sync bits, then a version other than "reserved" (01), layer II
    # or III (MP2, MP3; layer I is not taken: FF FE, FF FF open UTF-16 text and filler bytes),
    # and a bit-rate index other than "bad" (1111) and a rate index other than "reserved" (11).
    # Or ADTS, the raw form of AAC: layer 00 and a sampling-frequency index under 13.
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    if layer == 0b00:
        return head[1] & 0xF6 == 0xF0 and (head[2] >> 2) & 0xF < 13
    return version != 0b01 and layer != 0b11 and head[2] >> 4 != 0xF and (head[2] >> 2) & 3 != 3


def duration_seconds(path: str | Path) -> float:
    """Duration of an audio file from its header, without decoding; AudioError if unreadable."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"corrupt or unsupported audio format ({error})") from None
    return info.frames / info.samplerate


def stream_audio(
    source: str | Path | bytes,
    target_rate: int = 16000,
    block_seconds: float = 30.0,
    name: str | None = None,
    max_seconds: float | None = None,
) -> tuple[Iterator[np.ndarray], float]:
    """Mono float32 blocks at ``target_rate`` of a long file, read and resampled block by block.

        Returns the block iterator and the duration in seconds. Memory stays bounded by the block
        size for formats libsndfile reads with a trustworthy length (WAV, FLAC, OGG, MP3);
        containers (PyAV) and files of unknown length are decoded whole first, bounded by
        ``max_seconds``. Longer audio than ``max_seconds`` raises AudioTooLong: before any block is
        read when the header says so, else
    once decoding reaches the limit. Blocks are not checked for
        silence (a silent stretch of a long recording is normal), but NaN / infinite samples raise
        AudioError.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<upload>")
    if isinstance(source, (str, Path)):
        _check_file(Path(source))
        opened = _open_path(Path(source))
    else:
        opened = _open_bytes(bytes(source), label)
    if not opened.streamable or opened.seconds is None:
        wave = _collect(opened, label, target_rate, max_seconds, 0.0)
        step = max(1, int(block_seconds * target_rate))
        return (wave[i : i + step] for i in range(0, len(wave), step)), len(wave) / target_rate
    if max_seconds is not None and opened.seconds > max_seconds:
        opened.blocks.close()  # type: ignore[attr-defined]
        raise _too_long(label, opened.seconds, max_seconds)
    problem = _length_problem(round(opened.seconds * opened.rate), opened.rate)
    if problem:
        opened.blocks.close()  # type: ignore[attr-defined]
        raise AudioError(label, problem)
    return _stream_blocks(opened, label, target_rate, block_seconds), opened.seconds


def _stream_blocks(
    opened: _Opened, label: object, target_rate: int, block_seconds: float
) -> Iterator[np.ndarray]:
    """An opened file's mono blocks resampled to ``target_rate`` and regrouped to about
    ``block_seconds``;
    stops (AudioTooLong) if the file holds more than its header said."""
    resampler = (
        None
        if opened.rate == target_rate
        else soxr.ResampleStream(opened.rate, target_rate, 1, dtype="float32")
    )
    step, pending, size, read = max(1, int(block_seconds * target_rate)), [], 0, 0
    limit = int(opened.seconds * opened.rate) + BLOCK_SAMPLES  # type: ignore[operator]
    for mono in opened.blocks:
        read += len(mono)
        if read > limit:
            raise AudioTooLong(
                label, f"holds more audio than its header says ({opened.seconds:.1f} s)"
            )
        if not np.isfinite(mono).all():
            raise AudioError(label, "corrupt audio (NaN or infinite samples)")
        pending.append(mono if resampler is None else resampler.resample_chunk(mono))
        size += len(pending[-1])
        if size >= step:
            yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
            pending, size = [], 0
    if resampler is not None:
        pending.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    if pending and sum(len(p) for p in pending):
        yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
