"""On-disk feature cache: one safetensors file per (encoder, content) pair, written atomically;
ASR transcripts are cached the same way as ``.txt`` files.

The key is the encoder's ``cache_id`` (model, layer, padding, ...) plus the SHA-256 of the audio
file's bytes or of the transcript's text, so a renamed file is still a hit and an edited one a miss.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from crabser.io import atomic_path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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

    def get(self, encoder_id: str, content_hash: str) -> np.ndarray:
        """Read cached features; KeyError if absent."""
        target = self.path(encoder_id, content_hash)
        if not target.is_file():
            raise KeyError(f"no cached features for {encoder_id} / {content_hash[:12]}")
        return load_file(str(target))["features"]

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
