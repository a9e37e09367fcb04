"""Helpers shared by the corpus adapters: layout checks with clear errors, text clean-up.

A transcript file that is not UTF-8 does not stop a corpus from being prepared: it counts as a
missing transcript (the offline ASR fills it when enabled) and a warning names the file and byte.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from crabser.data.manifest import Manifest, from_records
from crabser.errors import CorpusError, TextEncodingError
from crabser.io import read_utf8

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")

_TYPOGRAPHIC = str.maketrans(
    {"’": "'", "‘": "'", "“": '"', "”": '"', "—": "-", "–": "-", "…": "...", "\u00a0": " "}
)


def require_dir(corpus: str, root: Path, relative: str = "", hint: str = "") -> Path:
    """``root/relative`` if it is a folder, else a :class:`CorpusError` naming it and the layout."""
    path = root / relative if relative else root
    if not path.is_dir():
        what = f"folder {relative!r} not found" if relative else "folder not found"
        raise CorpusError(corpus, root, what + (f"; expected {hint}" if hint else ""))
    return path


def require_file(corpus: str, root: Path, relative: str, hint: str = "") -> Path:
    """``root/relative`` if it is a file, else a :class:`CorpusError` naming it."""
    path = root / relative
    if not path.is_file():
        raise CorpusError(
            corpus, root, f"file {relative!r} not found" + (f"; expected {hint}" if hint else "")
        )
    return path


def audio_files(root: Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> list[Path]:
    """Audio files below ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def named_audio(root: Path, pattern: re.Pattern[str]) -> Iterator[tuple[Path, re.Match[str]]]:
    """Audio files below ``root`` whose stem matches a corpus's naming ``pattern``, with the
    match."""
    for path in audio_files(root):
        match = pattern.match(path.stem)
        if match is not None:
            yield path, match


def read_transcript(path: Path) -> str | None:
    """The stripped text of a transcript file; None if it is absent, empty or not UTF-8 (with a
    warning)."""
    if not path.is_file():
        return None
    try:
        return read_utf8(path).strip() or None
    except TextEncodingError as error:
        log.warning("transcript left out (counts as missing): %s", error)
        return None


def ascii_punctuation(text: str) -> str:
    """Typographic quotes, dashes and ellipses as ASCII (tokenizers trained on ASCII text prefer
    it)."""
    return text.translate(_TYPOGRAPHIC).strip()


def manifest_or_error(corpus: str, root: Path, records: Iterable[dict], expected: str) -> Manifest:
    """The manifest of the records, or a :class:`CorpusError` if there are none."""
    records = list(records)
    if not records:
        raise CorpusError(corpus, root, f"no utterances found; expected {expected}")
    return from_records(records)


def manifest_from_names(
    corpus: str,
    root: str | Path,
    parse: Callable[[str], dict | None],
    prefix: str,
    hint: str,
    example: str,
    text: Callable[[dict], str | None] = lambda fields: None,
) -> Manifest:
    """The manifest of a corpus whose file names carry everything: every audio file under ``root``
    whose stem ``parse`` reads (others are skipped) becomes a row ``{prefix}_{stem}`` with the
    parsed fields and ``text(fields)``; ``hint`` describes the expected layout, ``example`` one file
    stem."""
    root = Path(root)
    require_dir(corpus, root, hint=f"{hint} of files named like {example}.wav")
    records = []
    for path in audio_files(root):
        fields = parse(path.stem)
        if fields is not None:
            records.append(
                {
                    "id": f"{prefix}_{path.stem}",
                    "audio": str(path.resolve()),
                    "text": text(fields),
                    **fields,
                }
            )
    return manifest_or_error(
        corpus, root, records, f"files named like {example}.wav or {example}.flac"
    )
