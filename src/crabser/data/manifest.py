"""The manifest: one row per utterance, the common currency between corpora, features and training.

Required columns: ``id``, ``audio`` (path), ``label``. Optional known columns: ``text``,
``speaker``,
``split`` (train / val / test), ``fold``. Any other column is kept as a free extra column.
Relative audio paths are resolved against the manifest file's folder when read from disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crabser.errors import ManifestError
from crabser.io import read_csv_utf8

REQUIRED_COLUMNS = ("id", "audio", "label")
OPTIONAL_COLUMNS = ("text", "speaker", "split", "fold")
SPLITS = ("train", "val", "test")
_MAX_LISTED_ROWS = 10


@dataclass
class Manifest:
    """A validated table of utterances (a thin, typed wrapper over a pandas DataFrame)."""

    frame: pd.DataFrame

    def __post_init__(self) -> None:
        self.frame = _normalise(self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> list[str]:
        """Sorted distinct labels present in the manifest."""
        return sorted(self.frame["label"].unique().tolist())

    def subset(self, split: str) -> Manifest:
        """Rows of one split (``train`` / ``val`` / ``test``)."""
        if "split" not in self.frame:
            raise ManifestError("manifest has no 'split' column; assign a protocol first")
        return Manifest(self.frame[self.frame["split"] == split].reset_index(drop=True))

    def validate(self, labels: Sequence[str] | None = None, check_files: bool = True) -> Manifest:
        """Check ids are unique, labels are known and audio files exist; raise listing bad rows."""
        problems: list[str] = []
        frame = self.frame
        dup = frame[frame["id"].duplicated(keep=False)]
        if len(dup):
            problems.append(_rows("duplicate ids", dup, "id"))
        empty_label = frame[frame["label"].isna() | (frame["label"] == "")]
        if len(empty_label):
            problems.append(_rows("missing labels", empty_label, "id"))
        if labels is not None:
            unknown = frame[
                ~frame["label"].isin(list(labels)) & ~frame.index.isin(empty_label.index)
            ]
            if len(unknown):
                problems.append(
                    _rows(f"unknown labels (allowed: {', '.join(labels)})", unknown, "label")
                )
        if "split" in frame:
            bad_split = frame[~frame["split"].isin(SPLITS + ("",))]
            if len(bad_split):
                problems.append(_rows(f"unknown splits (allowed: {SPLITS})", bad_split, "split"))
        if check_files:
            missing = frame[~frame["audio"].map(lambda p: Path(p).is_file())]
            if len(missing):
                problems.append(_rows("missing audio files", missing, "audio"))
        if problems:
            raise ManifestError("invalid manifest:\n" + "\n".join(problems))
        return self


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"manifest lacks required column(s) {missing}; it has {list(frame.columns)}"
        )
    frame = frame.reset_index(drop=True).copy()
    for column in ("id", "audio", "label", "speaker", "split"):
        if column in frame:
            frame[column] = frame[column].fillna("").astype(str)
    if "text" in frame:
        frame["text"] = frame["text"].astype(object).where(frame["text"].notna(), None)
    return frame


def _rows(title: str, rows: pd.DataFrame, column: str) -> str:
    listed = [
        f"  row {i}: id={r['id']!r} {column}={r[column]!r}"
        for i, r in rows.head(_MAX_LISTED_ROWS).iterrows()
    ]
    more = len(rows) - _MAX_LISTED_ROWS
    if more > 0:
        listed.append(f"  ... and {more} more")
    return f"{title} ({len(rows)} rows):\n" + "\n".join(listed)


def read_manifest(
    path: str | Path, labels: Sequence[str] | None = None, check_files: bool = True
) -> Manifest:
    """Read a CSV or Parquet manifest, resolve relative audio paths, and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix in (".csv", ".tsv"):
        frame = read_csv_utf8(
            path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False
        )
        if "text" in frame:
            frame["text"] = frame["text"].where(frame["text"] != "", None)
    else:
        raise ManifestError(f"{path}: unsupported manifest format (use .csv, .tsv or .parquet)")
    try:
        manifest = Manifest(frame)
    except ManifestError as error:
        raise ManifestError(f"{path}: {error}") from None
    base = path.parent
    manifest.frame["audio"] = [
        p if not p or Path(p).is_absolute() else str((base / p).resolve())
        for p in manifest.frame["audio"]
    ]
    return manifest.validate(labels=labels, check_files=check_files)


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write a manifest as CSV or Parquet (by suffix), atomically."""
    from crabser.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            manifest.frame.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            manifest.frame.to_csv(tmp, index=False)
        else:
            raise ManifestError(f"{path}: unsupported manifest format (use .csv or .parquet)")
    return path


def from_records(records: Iterable[dict]) -> Manifest:
    """Build a manifest from dict rows (used by corpus adapters)."""
    return Manifest(pd.DataFrame(list(records)))
