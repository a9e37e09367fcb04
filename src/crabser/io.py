"""Small file-system helpers: atomic writes, content hashes, UTF-8 text and CSV with errors naming
the file."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crabser.errors import CrabserError, TextEncodingError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block
    succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    """Hex SHA-256 of a UTF-8 string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_utf8(path: str | Path) -> str:
    """A UTF-8 text file's contents; TextEncodingError naming the file if it is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TextEncodingError(path, error) from None


def read_csv_utf8(path: str | Path, **kwargs: Any):
    """``pandas.read_csv`` of a UTF-8 file (``kwargs`` passed on); TextEncodingError naming the
    file if it is not UTF-8."""
    import pandas as pd

    try:
        return pd.read_csv(path, encoding="utf-8", **kwargs)
    except UnicodeDecodeError as error:
        raise TextEncodingError(path, error) from None


def file_in_the_way(folder: str | Path) -> Path | None:
    """The existing file that is ``folder`` or one of its parents (no folder can be made there), or
    None."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def ensure_folder(path: str | Path, setting: str) -> Path:
    """Create the output folder ``path`` (and its parents); CrabserError naming ``setting`` when it,
    or a parent, is an existing file."""
    path = Path(path)
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise CrabserError(
            f"{setting} {path}: {blocker} is a file, not a folder; choose another output path"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def json_text(data: Any, indent: int | None = None, **kwargs: Any) -> str:
    """Strict JSON (no bare ``NaN`` / ``Infinity``, which most parsers refuse) of metrics or
    results: a number that is not finite (a score that cannot be computed, e.g. a silhouette over
    one class) is written as ``null``, and a warning names its key. Predictions never get here with
    NaN: the Recognizer refuses them (crabser.inference)."""
    replaced: list[str] = []
    clean = _finite_or_none(data, "", replaced)
    if replaced:
        logging.getLogger(__name__).warning(
            "not a finite number, written as null: %s", ", ".join(replaced[:10])
        )
    return json.dumps(clean, indent=indent, allow_nan=False, **kwargs)


def _finite_or_none(value: Any, key: str, replaced: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        replaced.append(key or "<value>")
        return None
    if isinstance(value, dict):
        return {
            k: _finite_or_none(v, f"{key}.{k}" if key else str(k), replaced)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v, f"{key}[{i}]", replaced) for i, v in enumerate(value)]
    return value
