"""Loading a model by name or folder with the fewest imports: :func:`load_predictor`.

It answers as :meth:`crabser.inference.Recognizer.load` does, but a model folder written by
``crabser export --onnx`` loads without importing torch (a cold ``crabser predict`` then costs
onnxruntime's import instead of torch's), and a packaged model (``default``, ``crabser/<name>``)
whose ONNX build exists (``crabser export --onnx --model default``:
:func:`crabser.pretrained.onnx_build_dir`) runs on it when onnxruntime is installed and no config
override is given. The ONNX build answers as the PyTorch model within 1e-5 (BENCHMARKS.md, "ONNX").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from crabser.errors import CrabserError
from crabser.onnx_runtime import OnnxRecognizer, read_meta
from crabser.predictor import Predictor
from crabser.pretrained import ONNX_META, PREFIX, onnx_build_dir, resolve_model


def load_predictor(
    path_or_name: str | Path = "default", overrides: list[str] | None = None
) -> Predictor:
    """The recognizer of ``default``, ``crabser/<name>``, ``hf://<org>/<repo>`` or a folder; an
    ONNX folder without torch, any other through :meth:`crabser.inference.Recognizer.load`."""
    build = _onnx_build(str(path_or_name), overrides)
    if build is not None:
        return OnnxRecognizer.load(build)
    folder = resolve_model(path_or_name)
    if (folder / ONNX_META).is_file() and not overrides:
        return OnnxRecognizer.load(folder)
    from crabser.inference import Recognizer

    return Recognizer.load(path_or_name, overrides)


def _onnx_build(name: str, overrides: list[str] | None) -> Path | None:
    """The ONNX build of a packaged model, where one exists for its present weights and settings
    (its onnx.json names the fingerprint it was built from) and onnxruntime can run it."""
    if overrides or not (name == "default" or name.startswith(PREFIX)):
        return None
    try:
        build = onnx_build_dir(name)
        fingerprint = read_meta(build).get("source_fingerprint") if build.is_dir() else None
    except CrabserError:
        return None  # not packaged (a local model by name), or a damaged build: PyTorch
    if fingerprint is None or not build.name.endswith(fingerprint[:16]):
        return None
    return build if importlib.util.find_spec("onnxruntime") is not None else None
