"""Batch feature extraction from a manifest into the feature store, resumable and fault-tolerant.

Inputs are read ``bucket_batches`` batches at a time, sorted by length inside that window and
encoded in batches of similar length (length bucketing), so a batch pads little; the window
bounds the memory held. With ``bucket_batches=1`` batches follow the manifest order.

Already-cached utterances are skipped (a second run does no encoding); a damaged cache file
(truncated, empty, wrong shape, NaN: :meth:`FeatureStore.problem`) counts as a miss, is named in a
warning and is encoded again. A bad audio file or a
missing transcript is recorded in the report and, with ``on_error="skip"``, logged as a warning
while the other files go on; with ``on_error="raise"`` the first one stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from crabser.data.audio import load_audio
from crabser.data.manifest import Manifest
from crabser.data.text import clean_text
from crabser.errors import AudioError, CrabserError, TranscriptError
from crabser.features.encoders import Encoder
from crabser.features.store import FeatureStore
from crabser.io import file_sha256, text_sha256

log = logging.getLogger(__name__)


@dataclass
class ExtractionReport:
    """What one extraction pass did."""

    encoded: int = 0
    cached: int = 0
    seconds_of_audio: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  #: utterance id -> problem


def content_hashes(manifest: Manifest, modality: str) -> dict[str, str]:
    """Utterance id -> content hash (audio bytes or transcript text); unusable rows are left out."""
    hashes = {}
    for row in manifest.frame.itertuples(index=False):
        if modality != "text":  # speech and paralinguistic encoders read the audio
            try:
                hashes[row.id] = file_sha256(row.audio)
            except OSError:
                continue
        else:
            text = clean_text(getattr(row, "text", None))
            if text:
                hashes[row.id] = text_sha256(text)
    return hashes


def _load_input(row, encoder: Encoder):
    if encoder.modality != "text":
        return load_audio(row.audio, encoder.sample_rate or 16000)
    text = clean_text(getattr(row, "text", None))
    if text is None:
        raise TranscriptError(row.id, "missing transcript (empty text)")
    return text


def _usable(store: FeatureStore, encoder: Encoder, digest: str) -> bool:
    """Whether the store holds usable features of this content; a damaged file is a miss, with a
    warning."""
    if not store.has(encoder.cache_id, digest):
        return False
    problem = store.problem(encoder.cache_id, digest, getattr(encoder, "output_dim", None))
    if problem is not None:
        log.warning(
            "re-extracting %s: damaged feature cache file (%s)",
            store.path(encoder.cache_id, digest),
            problem,
        )
    return problem is None


def extract(
    manifest: Manifest,
    encoder: Encoder,
    store: FeatureStore,
    on_error: str = "skip",
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    bucket_batches: int = 8,
) -> ExtractionReport:
    """Encode every utterance not yet in the store; return counts and per-file failures."""
    report = ExtractionReport()
    hashes = content_hashes(manifest, encoder.modality)
    pending: dict[str, Any] = {}  # content hash -> input; identical content is encoded once

    def flush() -> None:
        by_length = sorted(pending.items(), key=lambda item: len(item[1]))
        for start in range(0, len(by_length), batch_size):
            chunk = by_length[start : start + batch_size]
            encoded = encoder.encode([item for _, item in chunk]).unpadded()
            for (digest, _), features in zip(chunk, encoded):
                store.put(encoder.cache_id, digest, features)
            report.encoded += len(chunk)
            if progress:
                progress(len(chunk))
        pending.clear()

    for row in manifest.frame.itertuples(index=False):
        digest = hashes.get(row.id)
        if digest is not None and (digest in pending or _usable(store, encoder, digest)):
            report.cached += 1
            if progress:
                progress(1)
            continue
        try:
            if digest is None and encoder.modality != "text":
                raise AudioError(row.audio, "file not found or unreadable")
            item = _load_input(row, encoder)
        except CrabserError as error:
            if on_error == "raise":
                raise
            log.warning("skipping %s: %s", row.id, error)
            report.failures[row.id] = str(error)
            if progress:
                progress(1)
            continue
        if encoder.modality != "text":
            report.seconds_of_audio += len(item) / (encoder.sample_rate or 16000)
        pending[cast(str, digest)] = item  # no hash: no input either (_load_input raised)
        if len(pending) >= batch_size * max(1, bucket_batches):
            flush()
    flush()
    return report
