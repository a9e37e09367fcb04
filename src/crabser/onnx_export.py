"""``crabser export --onnx``: a speech model over the Whisper encoder as two ONNX graphs that
:class:`crabser.onnx_runtime.OnnxRecognizer` runs without torch.

- ``speech_encoder.onnx``: log-mels ``(1, n_mels, F)`` of one clip (``F`` even, up to 3000) -> the
  hidden state the model reads ``(1, F / 2, D)`` (or every one stacked, ``(1, F / 2, L + 1, D)``,
  for ``speech.layer: all``). torch's dynamo exporter, opset 18.
- ``head.onnx``: frames ``(B, T, ...)`` and their mask ``(B, T)`` -> logits and the ``fused``
  embedding. torch's TorchScript exporter, opset 17: the dynamo exporter cannot yet translate
  the head's GRU (``aten.gru``).
- ``int8``: weights quantised to 8 bits after export (onnxruntime's dynamic quantisation of
  MatMul and GRU weights): less than half the size, but probabilities move (up to 0.45) and a few
  labels change (2.8 % of EmoDB's clips; BENCHMARKS.md, "ONNX"). Its activations are quantised
  per tensor, so :class:`~crabser.onnx_runtime.OnnxRecognizer` runs an int8 head clip by clip.

Our choices: the encoder runs one clip (and one 30 s window) at a time, as the PyTorch encoder
does, so no padding ever enters it; fp32 graphs (the fp16 weights of an exported model are widened
once). Export needs ``onnx`` and ``onnxscript`` besides torch (``pip install 'crabser[onnx]'``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from crabser.errors import CrabserError
from crabser.features.encoders import HFSpeechEncoder
from crabser.features.whisper_torch import whisper_mel_batch
from crabser.inference import Recognizer
from crabser.io import atomic_path, ensure_folder
from crabser.onnx_runtime import ONNX_FORMAT, OnnxRecognizer
from crabser.pretrained import (
    ENCODER_FILE,
    EXPORT_FILES,
    HEAD_FILE,
    MODEL_CARD,
    ONNX_META,
    TUNED_ENCODERS,
    is_model_folder,
    model_fingerprint,
    resolve_model,
)
from crabser.runs import git_commit


class _EncoderGraph(torch.nn.Module):
    """Log-mels -> the hidden state(s) a speech model reads."""

    def __init__(self, model: torch.nn.Module, layer: int | str) -> None:
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        states = self.model(mels, hidden_states=True)  # the encoder is cut at the layer read
        return torch.stack(states, dim=2) if self.layer == "all" else states[-1]


class _HeadGraph(torch.nn.Module):
    """Frames and mask -> logits and the fused embedding."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, speech: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model({"speech": speech}, {"speech": mask}, return_taps=True)
        return output.logits, output.taps["fused"]


def _speech_encoder(recognizer: object, model: str | Path) -> tuple[Recognizer, HFSpeechEncoder]:
    """A speech-only PyTorch recognizer and its Whisper encoder, or CrabserError saying why the
    model cannot be exported."""
    if isinstance(recognizer, OnnxRecognizer):
        raise CrabserError(f"{model}: is an ONNX model already")
    if not isinstance(recognizer, Recognizer) or not recognizer.encoders:
        raise CrabserError(
            f"{model}: only a single model with frozen encoders exports to ONNX (not a stack or a "
            "fine-tuned run folder: `crabser export` a fine-tuned run first, then its export)"
        )
    encoder = recognizer.encoders.get("speech")
    if recognizer.modalities != ["speech"] or not isinstance(encoder, HFSpeechEncoder):
        raise CrabserError(
            f"{model}: ONNX export covers speech-only models over the Whisper encoder in PyTorch "
            f"(speech.kind hf-speech); this one reads {' + '.join(recognizer.modalities)}"
            + (f" with {type(encoder).__name__}" if encoder is not None else "")
        )
    if not encoder.is_whisper:
        raise CrabserError(f"{model}: ONNX export covers Whisper speech encoders only")
    return recognizer, encoder


def export_onnx(model: str | Path, out: str | Path, int8: bool = False) -> Path:
    """Write ``model`` (a name, run or exported folder; see ``Recognizer.load``) as an ONNX model
    folder ``out``: the two graphs, ``onnx.json`` and the source's ``card.json`` if it has one (a
    card already in ``out`` is removed otherwise).

    A PyTorch export in ``out`` stays only when it is the model exported (same fingerprint, e.g.
    ``--model M --out M``); another model's is removed, since its labels and config would describe
    a model the folder no longer serves. ``onnx.json`` goes first and comes back last, so an
    interrupted export leaves no ONNX model of mixed graphs."""
    try:
        import onnx  # noqa: F401 (the exporters need it)
        import onnxscript  # noqa: F401
    except ImportError:
        raise CrabserError("ONNX export needs onnx and onnxscript: pip install 'crabser[onnx]'")
    recognizer, encoder = _speech_encoder(Recognizer.load(model), model)
    source = resolve_model(model)
    fingerprint = _fingerprint(source)
    folder = ensure_folder(out, "--out")
    (folder / ONNX_META).unlink(missing_ok=True)
    whisper = encoder.model.float().eval()
    head = recognizer.module.model.float().eval()
    mels, _ = whisper_mel_batch([np.zeros(16000, dtype=np.float32)], whisper.n_mels, None)
    frames = torch.export.Dim("frames", min=1, max=1500)
    with _quiet(), atomic_path(folder / ENCODER_FILE) as tmp:
        torch.onnx.export(
            _EncoderGraph(whisper, encoder.layer),
            (mels,),
            str(tmp),
            input_names=["mels"],
            output_names=["frames"],
            dynamic_shapes={"mels": {2: 2 * frames}},
            dynamo=True,
            opset_version=18,
            external_data=False,
        )
    with torch.no_grad():  # a batch of two lengths, so no size is traced as a constant
        features = _EncoderGraph(whisper, encoder.layer)(mels).repeat(2, *[1] * (mels.dim() - 1))
    mask = torch.ones(features.shape[:2], dtype=torch.bool)
    mask[1, features.shape[1] // 2 :] = False
    with _quiet(), atomic_path(folder / HEAD_FILE) as tmp:
        torch.onnx.export(
            _HeadGraph(head),
            (features, mask),
            str(tmp),
            input_names=["speech", "mask"],
            output_names=["logits", "fused"],
            dynamic_axes={"speech": {0: "batch", 1: "frames"}, "mask": {0: "batch", 1: "frames"}},
            dynamo=False,
            opset_version=17,
        )
    if int8:
        _quantise(folder / ENCODER_FILE)
        _quantise(folder / HEAD_FILE)
    meta = {
        "format": ONNX_FORMAT,
        "labels": recognizer.labels,
        "modalities": ["speech"],
        "speech": {
            "n_mels": whisper.n_mels,
            "layer": encoder.layer,
            "pad_to_seconds": encoder.pad_to_seconds,
            "max_seconds": encoder.max_seconds,
        },
        "int8": int8,
        "source": str(model),
        "source_fingerprint": fingerprint,
        "git_commit": git_commit(),
    }
    _remove_other_export(folder, fingerprint)
    with atomic_path(folder / ONNX_META) as tmp:
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    card, target = source / MODEL_CARD, folder / MODEL_CARD
    if not card.is_file():  # another model's card would describe what no longer answers
        target.unlink(missing_ok=True)
    elif card.resolve() != target.resolve():
        shutil.copyfile(card, target)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def _fingerprint(source: Path) -> str | None:
    """The source's :func:`model_fingerprint` when it is an exported model folder."""
    if (source / "model.json").is_file() and is_model_folder(source):
        return model_fingerprint(source)
    return None


def _remove_other_export(folder: Path, fingerprint: str | None) -> None:
    """Remove the PyTorch export in ``folder`` unless it is the one of ``fingerprint``."""
    try:
        same = _fingerprint(folder) == fingerprint
    except OSError:  # model.json without the weights it names: no model to keep
        same = False
    if not same:
        for name in (*EXPORT_FILES, TUNED_ENCODERS):
            (folder / name).unlink(missing_ok=True)


def _quantise(path: Path) -> None:
    """Replace an ONNX graph by its int8-weight form."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(), atomic_path(path) as tmp:
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines and warnings are for torch developers, not our users."""
    loggers = [logging.getLogger("torch.onnx"), logging.getLogger()]  # root: the quantiser's
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
