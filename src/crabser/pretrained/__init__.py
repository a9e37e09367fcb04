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


def default_model_dir() -> Path:
    """The folder of the packaged default model."""
    folder = Path(__file__).parent / DEFAULT_MODEL
    if not (folder / "model.json").is_file():
        raise CrabserError(f"{folder}: the packaged default model is missing; rebuild it with scripts/build_default_model.py")
    return folder
