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

Models by name (:func:`resolve_model`), besides run and export folders given by path:

- ``crabser/<name>``: a packaged model, else a folder ``<name>`` in the local models folder
  (:func:`local_models_dir`: ``$CRABSER_MODELS``, else ``$XDG_DATA_HOME/crabser/models``, else
  ``~/.local/share/crabser/models``), where ``crabser export --out`` can put one;
- ``hf://<org>/<repo>[@<revision>]``: an exported model (``crabser export``, with or without
  ``--onnx``) in a Hugging Face Hub repository, fetched with ``huggingface_hub`` into its cache
  (``$HF_HUB_CACHE``) and taken from there afterwards. A revision (commit, tag or branch) pins it.
  Offline (``HF_HUB_OFFLINE=1``) only the cache is read; online, a Hub that cannot be reached
  falls back to the cache too. Only :data:`HUB_FILES` are fetched and only an exported model is
  loaded from a Hub folder (weights as safetensors or ONNX: no pickle is ever read from it, even
  one an earlier download left in the cache). Encoders its ``config.yaml`` names by hub id are
  loaded as for any config (and are not pinned by the revision); the embedded ones need nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from crabser.errors import CrabserError
from crabser.io import file_sha256, text_sha256

DEFAULT_MODEL = "multicorpus_speech"


PREFIX = "crabser/"  #: ``crabser/<name>`` names a packaged model
HUB_PREFIX = "hf://"  #: ``hf://<org>/<repo>[@<revision>]`` names a model on the Hugging Face Hub
TUNED_ENCODERS = "encoders.safetensors"  #: a fine-tuned export's trained encoder weights
#: a packaged model's description (``crabser models``); it describes that model only, so an
#: export over the folder removes it, and an ONNX export copies its source's
MODEL_CARD = "card.json"
#: the files every exported PyTorch model holds (``crabser export``; a fine-tuned one adds
#: TUNED_ENCODERS), in the order its fingerprint hashes them
EXPORT_FILES = ("model.safetensors", "model.json", "config.yaml")
ONNX_META = "onnx.json"  #: marks a model folder written by ``crabser export --onnx``
ENCODER_FILE = "speech_encoder.onnx"  #: an ONNX export's speech encoder graph
HEAD_FILE = "head.onnx"  #: an ONNX export's head graph
#: every file of the model an ONNX export writes (it copies the source's MODEL_CARD too)
ONNX_FILES = (ONNX_META, ENCODER_FILE, HEAD_FILE)
#: the files of an exported model (``crabser export``, ``--onnx``) fetched from the Hub
HUB_FILES = [*EXPORT_FILES, TUNED_ENCODERS, MODEL_CARD, *ONNX_FILES]
#: the file that names a model folder: an exported PyTorch model, or an ONNX one
MODEL_MARKERS = ("model.json", ONNX_META)


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an exported model (PyTorch or ONNX)."""
    return any((folder / marker).is_file() for marker in MODEL_MARKERS)


def packaged_models() -> dict[str, Path]:
    """Every model shipped in the package (a folder here with model.json), by name."""
    return {
        folder.name: folder
        for folder in sorted(Path(__file__).parent.iterdir())
        if (folder / "model.json").is_file()
    }


def local_models_dir() -> Path:
    """The local models folder: ``$CRABSER_MODELS``, else ``$XDG_DATA_HOME/crabser/models``, else
    ``~/.local/share/crabser/models`` (it need not exist)."""
    if os.environ.get("CRABSER_MODELS"):
        return Path(os.environ["CRABSER_MODELS"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "crabser" / "models"


def local_models() -> dict[str, Path]:
    """Every model in the local models folder (a sub-folder with model.json), by name."""
    folder = local_models_dir()
    if not folder.is_dir():
        return {}
    return {m.name: m for m in sorted(folder.iterdir()) if is_model_folder(m)}


def installed_models() -> dict[str, Path]:
    """The packaged models, then the local ones (a packaged name wins)."""
    return {**local_models(), **packaged_models()}


def packaged_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of the model ``crabser/<name>`` (the prefix may be left out): packaged, else in
    the local models folder."""
    name = name.removeprefix(PREFIX)
    folder = installed_models().get(name)
    if folder is None or "/" in name or name in ("", ".", ".."):
        known = ", ".join(PREFIX + n for n in installed_models()) or "none"
        raise CrabserError(
            f"{PREFIX}{name}: no such model (installed: {known}; local models folder: "
            f"{local_models_dir()}); the packaged ones are rebuilt by "
            "scripts/build_default_model.py"
        )
    return folder


def model_fingerprint(folder: Path) -> str:
    """A hash of what an exported model answers with: its weights (a fine-tuned one's encoder
    weights too), model.json and config.yaml."""
    names = [*EXPORT_FILES, *([TUNED_ENCODERS] if (folder / TUNED_ENCODERS).is_file() else [])]
    parts = [file_sha256(folder / name) for name in names]
    return text_sha256("".join(parts))


def onnx_build_dir(name: str) -> Path:
    """Where ``crabser export --onnx --model crabser/<name>`` puts the ONNX build of a packaged
    model, which :func:`crabser.loading.load_predictor` then prefers: the local models folder's
    ``onnx/<name>-<fingerprint>`` (:func:`model_fingerprint`: a rebuilt model gets a new folder).
    CrabserError for a name that is not a packaged model."""
    name = DEFAULT_MODEL if name == "default" else name.removeprefix(PREFIX)
    folder = packaged_models().get(name)
    if folder is None:
        raise CrabserError(
            f"{name}: not a packaged model; give --out for the ONNX build of another model"
        )
    return local_models_dir() / "onnx" / f"{name}-{model_fingerprint(folder)[:16]}"


def hub_model_dir(name: str) -> Path:
    """The local folder of ``hf://<org>/<repo>[@<revision>]`` (see the module docstring);
    CrabserError naming it when it is neither in the cache nor reachable."""
    spec = name.removeprefix(HUB_PREFIX)
    repo_id, _, revision = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise CrabserError(f"{name}: a Hub model is hf://<org>/<repo>[@<revision>]")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    except ImportError:
        raise CrabserError(f"{name}: loading Hub models needs huggingface_hub") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision or None,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            allow_patterns=HUB_FILES,
            local_files_only=offline,
        )
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as error:
        where = "the local Hugging Face cache" + ("" if offline else " or on the Hub")
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CrabserError(f"{name}: not found in {where} ({first_line})") from None
    if not is_model_folder(Path(str(folder))):
        raise CrabserError(
            f"{name}: the repository holds no exported crabser model (model.json or onnx.json)"
        )
    return Path(str(folder))


def resolve_model(name: str | Path) -> Path:
    """The folder of a model named ``default``, ``crabser/<name>`` or ``hf://<org>/<repo>``;
    any other name is returned as a path."""
    text = str(name)
    if text == "default":
        return default_model_dir()
    if text.startswith(HUB_PREFIX):
        return hub_model_dir(text)
    if text.startswith(PREFIX) and not Path(text).exists():
        return packaged_model_dir(text)
    return Path(name)


def default_model_dir() -> Path:
    """The folder of the packaged default model."""
    return packaged_model_dir(DEFAULT_MODEL)
