"""Shared fixtures: the real EmoDB audio, small generated audio files, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def emodb_root() -> Path:
    """Real EmoDB: $CRABSER_EMODB, else ../shared/data/emodb beside the clone, else the vendored copy."""
    candidates = [os.environ.get("CRABSER_EMODB"), REPO.parent / "shared" / "data" / "emodb", REPO / "data" / "emodb"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError("no EmoDB copy found (neither ../shared/data/emodb nor data/emodb)")


@pytest.fixture(scope="session")
def emodb() -> Path:
    return emodb_root()


@pytest.fixture(scope="session")
def meld_csvs() -> Path:
    """The real MELD annotation CSVs (../shared/data/meld or $CRABSER_MELD); CI has them beside the clone."""
    root = Path(os.environ.get("CRABSER_MELD", REPO.parent / "shared" / "data" / "meld"))
    if not (root / "train_sent_emo.csv").is_file():
        pytest.skip(f"MELD CSVs not found at {root} (set CRABSER_MELD)")
    return root


def tone(seconds: float = 1.0, rate: int = 16000, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    """A sine tone with a little noise (so it is not silent), shape (n,) or (n, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
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
