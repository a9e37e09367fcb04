"""Transcript helpers that need no pandas (the inference path imports them on every cold start)."""

from __future__ import annotations

import unicodedata

_WHITESPACE_CONTROLS = "\t\n\r"


def clean_text(value: object) -> str | None:
    """A transcript without control characters (NUL, escapes; tabs and line breaks become spaces),
    stripped of outer whitespace; None when it is missing or nothing is left (a NUL-only transcript
    counts as missing, in the Python API, the CLI and the service alike)."""
    if not isinstance(value, str):
        return None
    kept = "".join(
        " " if c in _WHITESPACE_CONTROLS else c
        for c in value
        if c in _WHITESPACE_CONTROLS or unicodedata.category(c) != "Cc"
    )
    return kept.strip() or None
