"""Robust audio decoding: soundfile decode, down-mix to mono, soxr resampling, named errors.

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


def duration_seconds(path: str | Path) -> float:
    """Duration of an audio file from its header, without decoding; AudioError if unreadable."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"corrupt or unsupported audio format ({error})") from None
    return info.frames / info.samplerate
