"""On-disk feature cache: one safetensors file per (encoder, content) pair, written atomically;
ASR transcripts are cached the same way as ``.txt`` files.

The key is the encoder's ``cache_id`` (model, layer, padding, ...) plus the SHA-256 of the audio
file's bytes or of the transcript's text, so a renamed file is still a hit and an edited one a miss.

A file is only a hit if it can be used: :meth:`FeatureStore.problem` reads it and says what is
wrong (unreadable, truncated or zero-byte, no ``features`` tensor, not ``(T, D)`` / ``(T, L, D)``
with T >= 1, a last dimension other than the encoder's, NaN or infinite values). Extraction treats
such a file as a miss and encodes the utterance again (with a warning naming the file);
:meth:`FeatureStore.get` raises :class:`DamagedFeatureError` naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from crabser.errors import CrabserError
from crabser.io import atomic_path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DamagedFeatureError(CrabserError):
    """A cached feature file that exists but cannot be used."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: damaged feature cache file ({problem}); run `crabser extract` to encode it again")
        self.path = str(path)
        self.problem = problem


def _read_features(target: Path, dim: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """The features of a cache file and None, or None and what is wrong with the file."""
    try:
        tensors = load_file(str(target))
    except Exception as error:  # noqa: BLE001 - safetensors raises several types on damaged files
        return None, f"unreadable: {type(error).__name__}"
    features = tensors.get("features")
    if features is None:
        return None, "no 'features' tensor"
    if features.ndim not in (2, 3) or len(features) == 0:
        return None, f"shape {features.shape}, expected (frames >= 1, dim) or (frames, layers, dim)"
    if dim is not None and features.shape[-1] != dim:
        return None, f"dimension {features.shape[-1]}, the encoder gives {dim}"
    if not np.isfinite(features).all():
        return None, "NaN or infinite values"
    return features, None


class FeatureStore:
    """A folder of cached features, one sub-folder per encoder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, encoder_id: str, content_hash: str, suffix: str = ".safetensors") -> Path:
        """Where the features (or, with ``.txt``, the transcript) of this content live."""
        folder = _UNSAFE.sub("_", encoder_id).strip("_")
        return self.root / folder / content_hash[:2] / f"{content_hash}{suffix}"

    def has(self, encoder_id: str, content_hash: str) -> bool:
        """Whether the features are cached."""
        return self.path(encoder_id, content_hash).is_file()

    def put(self, encoder_id: str, content_hash: str, features: np.ndarray) -> Path:
        """Write features atomically (a crash never leaves a half-written file behind)."""
        target = self.path(encoder_id, content_hash)
        with atomic_path(target) as tmp:
            save_file({"features": np.ascontiguousarray(features, dtype=np.float32)}, str(tmp))
        return target

    def problem(self, encoder_id: str, content_hash: str, dim: int | None = None) -> str | None:
        """What makes a present cache file unusable (``dim``: the encoder's feature size, if known),
        or None when it is fine."""
        return _read_features(self.path(encoder_id, content_hash), dim)[1]

    def get(self, encoder_id: str, content_hash: str, dim: int | None = None) -> np.ndarray:
        """Read cached features; KeyError if absent, DamagedFeatureError naming the file if damaged."""
        target = self.path(encoder_id, content_hash)
        if not target.is_file():
            raise KeyError(f"no cached features for {encoder_id} / {content_hash[:12]}")
        features, problem = _read_features(target, dim)
        if problem is not None:
            raise DamagedFeatureError(target, problem)
        return features

    def put_text(self, model_id: str, content_hash: str, text: str) -> Path:
        """Cache a transcript (ASR output) atomically."""
        target = self.path(model_id, content_hash, ".txt")
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return target

    def get_text(self, model_id: str, content_hash: str) -> str | None:
        """A cached transcript, or None."""
        target = self.path(model_id, content_hash, ".txt")
        return target.read_text(encoding="utf-8") if target.is_file() else None
