"""Robust audio decoding: soundfile decode, down-mix to mono, soxr resampling, named errors.

Video and compressed containers (``.mp4``, ``.mkv``, ``.m4a``, ``.webm``, ``.aac``: MELD's clips)
are decoded with PyAV, which ships its own FFmpeg (``pip install crabser[video]``).

Every failure raises :class:`~crabser.errors.AudioError` naming the file and the problem
(missing, corrupt / unsupported format, empty, silent). Callers decide the policy: stop, or skip
the file with a warning and go on with the others (see ``features.extract``).
"""

from __future__ import annotations

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
        audio, rate = _decode_container(path)
    else:
        try:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
            raise AudioError(path, f"corrupt or unsupported audio format ({error})") from None
    if audio.shape[0] < max(1, int(MIN_DURATION_S * rate)):
        raise AudioError(path, f"empty audio ({audio.shape[0]} samples)")
    if not np.isfinite(audio).all():
        raise AudioError(path, "corrupt audio (NaN or infinite samples)")
    mono = audio.mean(axis=1)
    if float(np.abs(mono).max()) < silence_peak:
        raise AudioError(path, f"silent audio (peak below {silence_peak:g} of full scale)")
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode_container(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream of a container, down-mixed by FFmpeg: ``(samples, 1)`` float32, rate."""
    try:
        import av
    except ImportError:
        raise AudioError(path, "decoding this container needs PyAV: pip install 'crabser[video]'") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(path, "no audio stream in the file")
            stream = container.streams.audio[0]
            rate = int(stream.rate or 16000)
            to_mono = av.AudioResampler(format="fltp", layout="mono", rate=rate)
            chunks = [out.to_ndarray()[0] for frame in container.decode(stream) for out in to_mono.resample(frame)]
            chunks += [out.to_ndarray()[0] for out in to_mono.resample(None)]  # flush
    except av.error.FFmpegError as error:
        raise AudioError(path, f"corrupt or unsupported container ({error})") from None
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return audio.astype(np.float32)[:, None], rate


def duration_seconds(path: str | Path) -> float:
    """Duration of an audio file from its header, without decoding; AudioError if unreadable."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"corrupt or unsupported audio format ({error})") from None
    return info.frames / info.samplerate
