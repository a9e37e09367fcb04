"""Feature extraction: length bucketing changes the batches, never the cached features."""

import numpy as np
import pandas as pd
import pytest
import torch

from crabser.data.manifest import Manifest
from crabser.features.encoders import pad_batch
from crabser.features.extract import content_hashes, extract
from crabser.features.store import FeatureStore


class RecordingTextEncoder:
    """One feature row per character (value = its code), recording every batch it is given."""

    modality = "text"
    sample_rate = None
    cache_id = "recording-text"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, batch: list[str]):
        self.batches.append(list(batch))
        return pad_batch([torch.tensor([[float(ord(c))] for c in text]) for text in batch])


def _manifest(texts: list[str]) -> Manifest:
    return Manifest(
        pd.DataFrame(
            {"id": [f"u{i}" for i in range(len(texts))], "audio": "", "label": "x", "text": texts}
        )
    )


def _padding(batches: list[list[str]]) -> int:
    return sum(max(map(len, b)) * len(b) - sum(map(len, b)) for b in batches)


@pytest.mark.parametrize("bucket_batches", [1, 4])
def test_bucketing_changes_batches_not_features(tmp_path, bucket_batches):
    rng = np.random.default_rng(0)
    texts = ["w" * int(n) + str(i) for i, n in enumerate(rng.integers(1, 60, size=37))]
    manifest, encoder = _manifest(texts), RecordingTextEncoder()
    store = FeatureStore(tmp_path / str(bucket_batches))
    report = extract(manifest, encoder, store, batch_size=4, bucket_batches=bucket_batches)
    assert report.encoded == 37 and sorted(t for b in encoder.batches for t in b) == sorted(texts)
    assert max(map(len, encoder.batches)) == 4
    hashes = content_hashes(manifest, "text")
    for row in manifest.frame.itertuples():
        assert store.get(encoder.cache_id, hashes[row.id])[:, 0].tolist() == [
            float(ord(c)) for c in row.text
        ]
    if bucket_batches == 1:  # manifest order: the batches are consecutive rows
        assert encoder.batches[0] == sorted(texts[:4], key=len)


def test_bucketing_pads_less_than_manifest_order(tmp_path):
    rng = np.random.default_rng(1)
    texts = ["w" * int(n) + str(i) for i, n in enumerate(rng.integers(1, 60, size=64))]
    padding = {}
    for window in (1, 8):
        encoder = RecordingTextEncoder()
        extract(
            _manifest(texts),
            encoder,
            FeatureStore(tmp_path / str(window)),
            batch_size=8,
            bucket_batches=window,
        )
        padding[window] = _padding(encoder.batches)
    assert padding[8] < padding[1] / 3


def _damage(path, how: str) -> None:
    """Damage a cached feature file the ways a crash, a full disk or a bug would."""
    from safetensors.numpy import save_file

    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-7])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "wrong_key":
        save_file({"other": np.ones((3, 1), dtype=np.float32)}, str(path))
    elif how == "wrong_shape":
        save_file({"features": np.ones((0, 1), dtype=np.float32)}, str(path))
    elif how == "wrong_dim":
        save_file({"features": np.ones((3, 5), dtype=np.float32)}, str(path))
    elif how == "nan":
        save_file({"features": np.full((3, 1), np.nan, dtype=np.float32)}, str(path))


@pytest.mark.parametrize(
    "how", ["truncated", "empty", "wrong_key", "wrong_shape", "wrong_dim", "nan"]
)
def test_a_damaged_cache_file_is_re_extracted_and_named(tmp_path, caplog, how):
    from crabser.features.store import DamagedFeatureError

    manifest, encoder = _manifest(["abc", "hello"]), RecordingTextEncoder()
    encoder.output_dim = 1
    store = FeatureStore(tmp_path)
    extract(manifest, encoder, store)
    digest = content_hashes(manifest, "text")["u1"]
    victim = store.path(encoder.cache_id, digest)
    _damage(victim, how)
    with pytest.raises(DamagedFeatureError, match="crabser extract") as caught:
        store.get(encoder.cache_id, digest, dim=1)
    assert str(victim) in str(caught.value)
    report = extract(manifest, encoder, store)
    assert (report.encoded, report.cached) == (1, 1)
    assert str(victim) in caplog.text
    assert store.get(encoder.cache_id, digest, dim=1)[:, 0].tolist() == [
        float(ord(c)) for c in "hello"
    ]


def test_a_cache_hit_reads_the_header_only(tmp_path, monkeypatch):
    import crabser.features.store as store_module

    manifest, encoder = _manifest(["abc", "hello"]), RecordingTextEncoder()
    encoder.output_dim = 1
    store = FeatureStore(tmp_path)
    extract(manifest, encoder, store)

    def no_values(*args, **kwargs):
        raise AssertionError("a cache hit loaded the feature values")

    monkeypatch.setattr(store_module, "load_file", no_values)
    report = extract(manifest, encoder, store)
    assert (report.encoded, report.cached) == (0, 2)
