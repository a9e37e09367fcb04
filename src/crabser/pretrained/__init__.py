"""The model shipped in the package: ``Recognizer.load("default")`` and ``crabser predict`` with no ``--model``.

``emodb_speech/`` is Crab's speech-only variant over the embedded Whisper tiny.en encoder, trained
on all ten speakers of the vendored Berlin EmoDB (German, acted, 7 classes) by
``scripts/build_default_model.py``; fp16 weights (``crabser export --half``). Its README section
states its cross-validated speaker-independent accuracy and what an acted German corpus means for
real-world speech.
"""

from __future__ import annotations

from pathlib import Path

from crabser.errors import CrabserError

DEFAULT_MODEL = "emodb_speech"


PREFIX = "crabser/"  #: ``crabser/<name>`` names a packaged model


def packaged_models() -> dict[str, Path]:
    """Every model shipped in the package (a folder here with model.json), by name."""
    return {folder.name: folder for folder in sorted(Path(__file__).parent.iterdir()) if (folder / "model.json").is_file()}


def packaged_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of the packaged model ``name`` (``crabser/`` prefix allowed)."""
    name = name.removeprefix(PREFIX)
    folder = Path(__file__).parent / name
    if not (folder / "model.json").is_file():
        known = ", ".join(PREFIX + n for n in packaged_models()) or "none"
        raise CrabserError(f"{folder}: no packaged model {name!r} (packaged: {known}); rebuild it with scripts/build_default_model.py")
    return folder


def default_model_dir() -> Path:
    """The folder of the packaged default model."""
    return packaged_model_dir(DEFAULT_MODEL)
