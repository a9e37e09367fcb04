"""The models shipped in the package: ``Recognizer.load("default")``, ``crabser predict`` with no
``--model``, and ``crabser/<name>`` for each folder here (``crabser models`` lists them with their
cards).

- ``multicorpus_speech`` (the default): Crab's speech-only variant over hidden state 2 of the
  embedded Whisper tiny.en encoder, trained on EmoDB (German), EMOVO (Italian), ASED (Amharic) and
  URDU (Urdu) by ``scripts/build_default_model.py --config configs/multicorpus.yaml``; six classes.
- ``emodb_speech``: the same head trained on the vendored Berlin EmoDB alone (German, acted, seven
  classes, boredom included), by ``scripts/build_default_model.py``.

Both are fp16 (``crabser export --half``); each ``card.json`` states its cross-validated accuracy,
training data, terms of use and limits.
"""

from __future__ import annotations

from pathlib import Path

from crabser.errors import CrabserError

DEFAULT_MODEL = "multicorpus_speech"


PREFIX = "crabser/"  #: ``crabser/<name>`` names a packaged model


def packaged_models() -> dict[str, Path]:
    """Every model shipped in the package (a folder here with model.json), by name."""
    return {
        folder.name: folder
        for folder in sorted(Path(__file__).parent.iterdir())
        if (folder / "model.json").is_file()
    }


def packaged_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of the packaged model ``name`` (``crabser/`` prefix allowed)."""
    name = name.removeprefix(PREFIX)
    folder = Path(__file__).parent / name
    if not (folder / "model.json").is_file():
        known = ", ".join(PREFIX + n for n in packaged_models()) or "none"
        raise CrabserError(
            f"{folder}: no packaged model {name!r} (packaged: {known}); rebuild it with "
            "scripts/build_default_model.py"
        )
    return folder


def default_model_dir() -> Path:
    """The folder of the packaged default model."""
    return packaged_model_dir(DEFAULT_MODEL)
