"""Errors that name the offending input, so a user sees the file and the problem, not a
traceback."""

from __future__ import annotations


class CrabserError(Exception):
    """Base class of every error crabser raises on purpose."""


class AudioError(CrabserError):
    """An audio file that cannot be used: missing, corrupt, empty, silent or of a wrong format."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class TranscriptError(CrabserError):
    """An utterance whose transcript is missing or unusable where text is required."""

    def __init__(self, utterance_id: str, problem: str) -> None:
        super().__init__(f"utterance {utterance_id!r}: {problem}")
        self.utterance_id = utterance_id
        self.problem = problem


class ManifestError(CrabserError):
    """A manifest that fails validation; the message lists the offending rows."""


class ConfigError(CrabserError):
    """A configuration value or override that cannot be applied."""


class CorpusError(CrabserError):
    """A corpus folder that does not have the layout its adapter expects; names what is missing."""

    def __init__(self, corpus: str, root: object, problem: str) -> None:
        super().__init__(f"{corpus} at {root}: {problem}")
        self.corpus = corpus
        self.root = str(root)
        self.problem = problem


class TextEncodingError(CrabserError):
    """A text file (transcript, CSV) that is not UTF-8; names the file and the first bad byte."""

    def __init__(self, path: object, error: UnicodeDecodeError) -> None:
        bad = (
            error.object[error.start : error.start + 1].hex()
            if isinstance(error.object, bytes)
            else "?"
        )
        super().__init__(
            f"{path}: not UTF-8 text (byte 0x{bad} at offset {error.start}); save it as UTF-8"
        )
        self.path = str(path)
