"""Whisper's log-mel spectrogram in numpy (what ``transformers.WhisperFeatureExtractor`` computes).

Importing transformers for this alone cost about 1.7 s of every cold start (BENCHMARKS.md); the
numbers here are equal to transformers' within float32 rounding (tested). Whisper's recipe: a
400-point periodic Hann STFT with hop 160 at 16 kHz (centred, reflect padding at the start),
power spectrum, Slaney-scale mel filters with Slaney area normalisation over 0-8 kHz, log10
floored at 1e-10, values below the maximum minus 8 raised to it, then ``(x + 4) / 4``.

As in transformers, the input is zero-padded to 30 s before the STFT (so a short clip's last
frames see silence, not a reflection). The maximum is taken over the frames returned; frames of
silence beyond them could not raise it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

N_FFT = 400
HOP = 160
SAMPLE_RATE = 16000
CHUNK = 30 * SAMPLE_RATE  #: transformers' padded input length


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp(np.log(6.4) * (mel - 15.0) / 27.0)
    return np.where(mel >= 15.0, log_part, linear)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80) -> np.ndarray:
    """Triangular Slaney filters, area-normalised, shape ``(n_mels, N_FFT // 2 + 1)``."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), n_mels + 2))
    slopes = edges[:, None] - fft_hz[None, :]
    widths = np.diff(edges)
    rising = -slopes[:-2] / widths[:-1, None]
    falling = slopes[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(
        np.float32
    )  # periodic Hann


def log_mel(wave: np.ndarray, frames: int, n_mels: int = 80) -> np.ndarray:
    """Whisper's log-mel of ``wave`` (16 kHz mono), ``frames`` frames, shape ``(n_mels, frames)``.

    ``wave`` is zero-extended (or cut) to ``frames * 160`` samples; it needs at least 201.
    """
    length = frames * HOP
    if length <= N_FFT // 2:
        raise ValueError(f"log_mel needs more than {N_FFT // 2} samples, got {length}")
    signal = np.zeros(max(length, CHUNK), dtype=np.float32)  # transformers pads every input to 30 s
    usable = np.asarray(wave, dtype=np.float32)[:length]
    signal[: len(usable)] = usable
    padded = np.pad(signal, N_FFT // 2, mode="reflect")  # centred frames
    strided = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:frames]
    power = np.abs(np.fft.rfft(strided * _window(), axis=-1)) ** 2
    mel = mel_filters(n_mels) @ power.T.astype(np.float32)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


WINDOW_SECONDS = 30  #: Whisper's input window: 3000 mel frames, 1500 positions


def check_pad_to_seconds(pad_to_seconds: float | None) -> None:
    """ValueError unless ``pad_to_seconds`` is None or within Whisper's window, (0, 30]."""
    if pad_to_seconds is not None and not 0 < pad_to_seconds <= WINDOW_SECONDS:
        raise ValueError(f"pad_to_seconds must be in (0, {WINDOW_SECONDS}], got {pad_to_seconds}")


def whisper_frames(samples: int, pad_to_seconds: float | None) -> tuple[int, int]:
    """Mel frames for a clip of ``samples`` at 16 kHz: its own (even) count and the model input's
    (``pad_to_seconds`` = Whisper's padding, None = the clip's own length). Encoder frames are
    half."""
    own = max(2, math.ceil(samples / HOP))
    own += own % 2
    target = own if pad_to_seconds is None else max(own, int(pad_to_seconds * 16000 / HOP))
    return own, target + target % 2
