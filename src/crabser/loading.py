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
from crabser.onnx_runtime import ONNX_META, OnnxRecognizer
from crabser.predictor import Predictor
from crabser.pretrained import PREFIX, onnx_build_dir, resolve_model


def load_predictor(
    path_or_name: str | Path = "default", overrides: list[str] | None = None
) -> Predictor:
    """The recognizer of ``default``, ``crabser/<name>``, ``hf://<org>/<repo>`` or a folder; an
    ONNX folder without torch, any other through :meth:`crabser.inference.Recognizer.load`."""
    folder = _onnx_build(str(path_or_name), overrides) or resolve_model(path_or_name)
    if (folder / ONNX_META).is_file():
        return OnnxRecognizer.load(folder)
    from crabser.inference import Recognizer

    return Recognizer.load(folder, overrides)


def _onnx_build(name: str, overrides: list[str] | None) -> Path | None:
    """The ONNX build of a packaged model, where one exists and can run."""
    if overrides or not (name == "default" or name.startswith(PREFIX)) or Path(name).exists():
        return None
    try:
        build = onnx_build_dir(name)
    except CrabserError:
        return None  # not packaged: a local model by name
    if not (build / ONNX_META).is_file() or importlib.util.find_spec("onnxruntime") is None:
        return None
    return build
