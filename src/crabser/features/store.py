"""On-disk feature cache: one safetensors file per (encoder, content) pair, written atomically;
ASR transcripts are cached the same way as ``.txt`` files.

The key is the encoder's ``cache_id`` (model, layer, padding, ...) plus the SHA-256 of the audio
file's bytes or of the transcript's text, so a renamed file is still a hit and an edited one a miss.

A file is only a hit if it can be used. :meth:`FeatureStore.problem` reads its safetensors header
only (a few hundred bytes, so a re-run over a large cache stays a matter of seconds) and says what
is wrong: unreadable, truncated or zero-byte (the size disagrees with the header), no ``features``
tensor, not float32 ``(T, D)`` / ``(T, L, D)`` with T >= 1, a last dimension other than the
encoder's. Extraction treats such a file as a miss and encodes the utterance again (with a warning
naming the file). :meth:`FeatureStore.get` reads the values too and also refuses NaN or infinite
ones: it moves a damaged file aside (``<name>.damaged``, so the next ``crabser extract`` encodes
it again) and raises :class:`DamagedFeatureError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from crabser.errors import CrabserError
from crabser.io import atomic_path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
log = logging.getLogger(__name__)
#: A safetensors header longer than this is taken as damage (ours are about 100 bytes).
MAX_HEADER_BYTES = 1 << 20


class DamagedFeatureError(CrabserError):
    """A cached feature file that exists but cannot be used."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(
            f"{path}: damaged feature cache file ({problem}); run `crabser extract` to encode it "
            "again"
        )
        self.path = str(path)
        self.problem = problem


def _header_problem(target: Path, dim: int | None = None) -> str | None:
    """What the safetensors header of ``target`` says is wrong (shape, dtype, size), or None."""
    try:
        size = target.stat().st_size
        with target.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                return f"unreadable: a header of {length} bytes in a file of {size}"
            header = json.loads(file.read(length))
    except (OSError, struct.error, ValueError) as error:
        return f"unreadable: {type(error).__name__}"
    entry = header.get("features") if isinstance(header, dict) else None
    if not isinstance(entry, dict):
        return "no 'features' tensor"
    shape, (start, end) = entry.get("shape", []), entry.get("data_offsets", (0, 0))
    if entry.get("dtype") != "F32" or len(shape) not in (2, 3) or not shape[0]:
        expected = "float32 (frames >= 1, dim) or (frames, layers, dim)"
        return f"{entry.get('dtype')} of shape {tuple(shape)}, expected {expected}"
    if dim is not None and shape[-1] != dim:
        return f"dimension {shape[-1]}, the encoder gives {dim}"
    if end - start != 4 * math.prod(shape) or size < 8 + length + end:
        return f"truncated: {size} bytes, the header needs {8 + length + end}"
    return None


def _read_features(target: Path, dim: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """The features of a cache file and None, or None and what is wrong with the file."""
    problem = _header_problem(target, dim)
    if problem is not None:
        return None, problem
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
        """What makes a present cache file unusable by its header (``dim``: the encoder's feature
        size, if known), or None when it looks fine; values are checked by :meth:`get`."""
        return _header_problem(self.path(encoder_id, content_hash), dim)

    def get(self, encoder_id: str, content_hash: str, dim: int | None = None) -> np.ndarray:
        """Read cached features; KeyError if absent, DamagedFeatureError naming the file if
        damaged."""
        target = self.path(encoder_id, content_hash)
        if not target.is_file():
            raise KeyError(f"no cached features for {encoder_id} / {content_hash[:12]}")
        features, problem = _read_features(target, dim)
        if problem is not None:
            aside = target.with_name(target.name + ".damaged")
            try:
                os.replace(target, aside)  # the next extraction sees a miss and encodes it again
                log.warning(
                    "moved the damaged feature cache file %s aside to %s (%s)",
                    target,
                    aside.name,
                    problem,
                )
            except OSError:
                pass
            raise DamagedFeatureError(target, problem)
        assert features is not None  # _read_features gives features or a problem
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
