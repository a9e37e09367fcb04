"""Transcript helpers that need no pandas (the inference path imports them on every cold start)."""

from __future__ import annotations


def clean_text(value: object) -> str | None:
    """A transcript stripped of outer whitespace, or None when it is missing or blank."""
    if not isinstance(value, str):
        return None
    return value.strip() or None
