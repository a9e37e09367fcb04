"""Prediction with ONNX Runtime, without torch or Lightning: :class:`OnnxRecognizer`.

``crabser export --onnx`` (:mod:`crabser.onnx_export`) writes a speech model over the Whisper
encoder in PyTorch as two graphs: ``speech_encoder.onnx`` (log-mels of one clip -> the encoder
layer the model reads) and ``head.onnx`` (padded frames and their mask -> logits and the ``fused``
embedding), with ``onnx.json`` (labels and the encoder's settings). Prediction then runs what the
PyTorch :class:`crabser.inference.Recognizer` runs, in the same order: decode to 16 kHz (numpy),
Whisper's log-mel (numpy, :mod:`crabser.features.log_mel`), the encoder clip by clip over 30 s
windows, the head on the batch. Equal to PyTorch within the tolerance ``crabser export`` measures
and states (tests: 1e-4 on class probabilities; int8 weights: labels, not digits). An int8 build
runs its head one clip at a time, so that a clip's answer does not depend on its batch-mates.

Needs ``onnxruntime`` (``pip install 'crabser[onnx]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from crabser.errors import CrabserError
from crabser.features.log_mel import WINDOW_SECONDS, log_mel, whisper_frames
from crabser.predictor import SAMPLE_RATE, Predictor
from crabser.pretrained import ENCODER_FILE, HEAD_FILE, ONNX_META

ONNX_FORMAT = "crabser-onnx/1"


def read_meta(folder: Path) -> dict[str, Any]:
    """The ``onnx.json`` of an ONNX model folder; CrabserError naming it if unreadable or of
    another format."""
    path = folder / ONNX_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CrabserError(f"{path}: not a readable ONNX model description ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != ONNX_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CrabserError(f"{path}: unknown model format {found!r} (expected {ONNX_FORMAT})")
    speech = meta.get("speech")
    needed = ("n_mels", "pad_to_seconds", "max_seconds")
    if (
        not meta.get("labels")
        or not isinstance(speech, dict)
        or any(k not in speech for k in needed)
    ):
        raise CrabserError(f"{path}: incomplete (labels and speech.{', speech.'.join(needed)})")
    return meta


def _session(path: Path) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CrabserError(
            f"{path}: running an ONNX model needs onnxruntime: pip install 'crabser[onnx]'"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's
    # idle worker threads sleep instead of spinning: spinning threads took the cores from the
    # log-mel and decoding between two runs (a 3 s clip: 38 ms warm with spinning, see
    # BENCHMARKS.md "ONNX")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 (onnxruntime raises its own kinds for damage)
        raise CrabserError(f"{path}: not a loadable ONNX graph ({error})") from None


def _run(session: Any, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A session's outputs; its failure as a CrabserError (one line, and a segment's error)."""
    try:
        return list(session.run(None, inputs))
    except Exception as error:  # noqa: BLE001 (onnxruntime's own kinds)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CrabserError(f"the ONNX model failed on this input ({first})") from None


class OnnxRecognizer(Predictor):
    """A speech model exported to ONNX: :meth:`predict`, :meth:`predict_batch`,
    :meth:`predict_table` and :meth:`embed` as the PyTorch recognizer has them."""

    gives_embeddings = True

    def __init__(self, meta: dict[str, Any], encoder: Any, head: Any) -> None:
        self.labels = list(meta["labels"])
        self.modalities = list(meta.get("modalities", ["speech"]))
        speech = meta["speech"]
        self.n_mels = int(speech["n_mels"])
        self.pad_to_seconds: float | None = speech["pad_to_seconds"]
        self.max_seconds: float | None = speech["max_seconds"]
        self.encoder, self.head = encoder, head
        # int8 (dynamic quantisation) scales the head's activations per tensor: over a padded
        # batch a clip's answer would depend on its batch-mates, so such a head runs clip by clip
        self.head_per_clip = bool(meta.get("int8", False))

    @classmethod
    def load(cls, folder: str | Path) -> OnnxRecognizer:
        """Load a folder written by ``crabser export --onnx``."""
        folder = Path(folder)
        meta = read_meta(folder)
        return cls(meta, _session(folder / ENCODER_FILE), _session(folder / HEAD_FILE))

    def frames(self, wave: np.ndarray) -> np.ndarray:
        """The encoder frames of one 16 kHz wave, ``(T, D)``: 30 s windows encoded one by one and
        joined, each at its own length (or padded as the model was trained)."""
        if self.max_seconds is not None:
            wave = wave[: int(self.max_seconds * SAMPLE_RATE)]
        window = WINDOW_SECONDS * SAMPLE_RATE
        pieces = []
        for start in range(0, max(len(wave), 1), window):
            piece = wave[start : start + window]
            own, target = whisper_frames(len(piece), self.pad_to_seconds)
            mels = log_mel(piece, target, self.n_mels)[None].astype(np.float32)
            pieces.append(_run(self.encoder, {"mels": mels})[0][0][: own // 2])
        return np.concatenate(pieces, axis=0)

    def scores(
        self, waves: list[np.ndarray | None], texts: list[str], embed: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        frames = [self.frames(wave) for wave in waves if wave is not None]
        if self.head_per_clip and len(frames) > 1:
            return self._head_clip_by_clip(frames, embed)
        return self._head(frames, embed)

    def _head_clip_by_clip(
        self, frames: list[np.ndarray], embed: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        results = [self._head([f], embed) for f in frames]
        probabilities = np.concatenate([p for p, _ in results])
        if not embed:
            return probabilities, None
        return probabilities, np.concatenate([e for _, e in results if e is not None])

    def _head(self, frames: list[np.ndarray], embed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Softmax (and ``fused``) of the head on the padded batch of ``frames``."""
        longest = max(len(f) for f in frames)
        batch = np.zeros((len(frames), longest, *frames[0].shape[1:]), dtype=np.float32)
        mask = np.zeros((len(frames), longest), dtype=bool)
        for i, f in enumerate(frames):
            batch[i, : len(f)], mask[i, : len(f)] = f, True
        logits, fused = _run(self.head, {"speech": batch, "mask": mask})
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True), fused if embed else None

    def probabilities(self, waves: list[np.ndarray | None], texts: list[str]) -> np.ndarray:
        return self.scores(waves, texts)[0]
