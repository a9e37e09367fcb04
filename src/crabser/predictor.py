"""What every recognizer shares, without torch: input decoding, transcripts (given or offline
ASR), ``predict`` / ``predict_batch`` / ``predict_table`` (:class:`Predictor`). The PyTorch
:class:`crabser.inference.Recognizer`, the stacked ensemble and the ONNX
:class:`crabser.onnx_runtime.OnnxRecognizer` are predictors.

Documented answers to partial inputs:

- a model with text and no transcript given: the transcript comes from the offline ASR (embedded
  Whisper tiny.en) when the run allows it (``asr.fill_missing``), else TranscriptError;
- a model with speech and no audio (text only): AudioError ("this model needs audio");
- a text-only model with a transcript reads no audio; a model without text ignores the transcript
  (``Prediction.transcript`` is None);
- an empty or whitespace transcript counts as missing;
- a model whose output is not finite (NaN weights) raises CrabserError naming the input: no
  prediction, and so no NaN in JSON, is ever returned;
- the ASR model is built once, on first need, even when many threads predict at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from crabser.data.audio import AudioInput, decode_audio
from crabser.data.text import clean_text
from crabser.errors import AudioError, CrabserError, TranscriptError
from crabser.prediction import Prediction, check_min_confidence, decided_label

if TYPE_CHECKING:
    import pandas as pd

    from crabser.tables import TableInput

SAMPLE_RATE = 16000  #: every input is decoded once to 16 kHz mono; encoders at other rates resample


def _input_name(audio: object, index: int) -> str:
    if isinstance(audio, (str, Path)):
        return str(audio)
    return "<text>" if audio is None else f"<input {index}>"


def aligned(
    audios: Sequence[object], texts: Sequence[str | None] | None, names: Sequence[str] | None
) -> tuple[list[str | None], list[str]]:
    """A transcript (None: none given) and a name for every input; ValueError when the counts
    differ."""
    texts = list(texts) if texts is not None else [None] * len(audios)
    names = list(names) if names is not None else [_input_name(a, i) for i, a in enumerate(audios)]
    if not (len(audios) == len(texts) == len(names)):
        raise ValueError(
            f"got {len(audios)} audio inputs, {len(texts)} transcripts and {len(names)} names"
        )
    return texts, names


class Predictor:
    """What every recognizer shares: input decoding, transcripts, ``predict`` /
    ``predict_batch``."""

    labels: list[str]
    modalities: list[str]
    _asr_factory: Callable[[], Any] | None = None  #: builds the offline ASR on first need
    _asr: Any = None
    _asr_lock = threading.Lock()  #: building the ASR is rare and slow: one lock for every predictor
    gives_embeddings = False  #: whether ``embed=True`` can be asked for (one model, not a stack)

    @property
    def needs_audio(self) -> bool:
        """Whether the model reads the audio (speech or paralinguistic stream)."""
        return bool({"speech", "paralinguistic"} & set(self.modalities))

    def probabilities(self, waves: list[np.ndarray | None], texts: list[str]) -> np.ndarray:
        """Class probabilities ``(n, classes)`` of decoded 16 kHz waves and resolved transcripts."""
        raise NotImplementedError

    def scores(
        self, waves: list[np.ndarray | None], texts: list[str], embed: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and, with ``embed``, utterance embeddings ``(n, dim)``, from one
        forward pass."""
        if embed:
            raise CrabserError(f"{type(self).__name__} gives no embeddings; embed with one model")
        return self.probabilities(waves, texts), None

    def predict(
        self,
        audio: AudioInput | None = None,
        text: str | None = None,
        *,
        sample_rate: int | None = None,
        name: str | None = None,
        min_confidence: float | None = None,
        embed: bool = False,
    ) -> Prediction:
        """Predict one input: ``audio`` (path, bytes, or array with ``sample_rate``) and/or
        ``text``; ``min_confidence``: below it the label is ``"uncertain"`` (the probabilities
        are returned all the same); ``embed``: with the utterance embedding."""
        return self.predict_batch(
            [audio],
            [text],
            sample_rate=sample_rate,
            names=[name] if name else None,
            min_confidence=min_confidence,
            embed=embed,
        )[0]

    def predict_batch(
        self,
        audios: Sequence[AudioInput | None],
        texts: Sequence[str | None] | None = None,
        *,
        sample_rate: int | None = None,
        names: Sequence[str] | None = None,
        min_confidence: float | None = None,
        embed: bool = False,
    ) -> list[Prediction]:
        """Predict many inputs in one forward pass; AudioError / TranscriptError name the bad
        one. ``min_confidence`` and ``embed`` as in :meth:`predict`."""
        check_min_confidence(min_confidence)
        texts, names = aligned(audios, texts, names)
        if not audios:
            return []
        waves, resolved, sources = self._resolved_inputs(audios, texts, sample_rate, names)
        probabilities, embeddings = self.scores(waves, resolved, embed)
        _require_finite(probabilities, names)
        results = []
        for i, probs in enumerate(probabilities):
            scores = {label: float(p) for label, p in zip(self.labels, probs)}
            transcript, source = (resolved[i], sources[i]) if resolved else (None, None)
            embedding = embeddings[i].tolist() if embeddings is not None else None
            label = decided_label(scores, min_confidence)
            results.append(Prediction(names[i], label, scores, transcript, source, embedding))
        return results

    def _resolved_inputs(
        self,
        audios: Sequence[AudioInput | None],
        texts: Sequence[str | None],
        sample_rate: int | None,
        names: Sequence[str],
    ) -> tuple[list[np.ndarray | None], list[str], list[str]]:
        """The decoded waves, the transcripts the model reads (given, else ASR; none for a model
        without text) and where each came from."""
        given = [(clean_text(t) if t is not None else None) or "" for t in texts]
        waves = [self._wave(a, given[i], sample_rate, names[i]) for i, a in enumerate(audios)]
        resolved, sources = [], []
        if "text" in self.modalities:
            for wave, text, name in zip(waves, given, names):
                resolved.append(text or self._transcribe(wave, name))
                sources.append("given" if text else "asr")
        return waves, resolved, sources

    def embed(
        self,
        audios: Sequence[AudioInput | None],
        texts: Sequence[str | None] | None = None,
        *,
        sample_rate: int | None = None,
        names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Utterance embeddings ``(n, dim)``: the model's ``fused`` representation of each input
        (what its classifier reads), as :meth:`predict_batch` takes its inputs."""
        predictions = self.predict_batch(
            audios, texts, sample_rate=sample_rate, names=names, embed=True
        )
        return np.asarray([p.embedding for p in predictions], dtype=np.float32)

    def predict_table(
        self,
        sources: str | Path | Sequence[str | Path] | Sequence[TableInput],
        out: str | Path | None = None,
        *,
        text: str | None = None,
        path_column: str | None = None,
        text_column: str | None = None,
        batch_size: int = 16,
        min_confidence: float | None = None,
        overwrite: bool = False,
        embed: bool = False,
        progress: Callable[[int], Callable[[int], None]] | None = None,
    ) -> pd.DataFrame:
        """Predict folders, lists of paths, tables with a path column and audio files into one
        table, a row per input with its error where it fails; with ``out`` (``.csv``,
        ``.parquet``, ``.jsonl``) written there, and a second run resumes it; ``embed`` adds the
        utterance embeddings (see :mod:`crabser.tables`)."""
        from crabser.tables import TableInput, check_output, gather_inputs, predict_table

        if isinstance(sources, (str, Path)):  # one folder, list or table
            sources = [sources]
        if out is not None:
            check_output(Path(out), embed, [s for s in sources if not isinstance(s, TableInput)])
        inputs = [s for s in sources if isinstance(s, TableInput)]
        if len(inputs) != len(sources):
            inputs = gather_inputs(cast(Sequence[str | Path], sources), path_column, text_column)
        return predict_table(
            self,
            inputs,
            out,
            text=text,
            batch_size=batch_size,
            min_confidence=min_confidence,
            overwrite=overwrite,
            embed=embed,
            progress=progress,
        )

    def _wave(
        self, audio: AudioInput | None, text: str, sample_rate: int | None, name: str
    ) -> np.ndarray | None:
        """The 16 kHz wave of an input, or None where the model needs none (text-only with text)."""
        if audio is None:
            if self.needs_audio:
                kinds = " + ".join(self.modalities)
                raise AudioError(name, f"this model ({kinds}) needs audio; got only a transcript")
            if not text:
                raise TranscriptError(name, "no audio and no transcript")
            return None
        if not self.needs_audio and text:
            return None  # a text-only model with its transcript: the audio is not read
        return decode_audio(audio, SAMPLE_RATE, sample_rate=sample_rate, name=name)

    def _transcribe(self, wave: np.ndarray | None, name: str) -> str:
        if self._asr_factory is None:
            raise TranscriptError(
                name,
                "missing transcript: give the text (--text, FILE.txt) or use a model that allows "
                "ASR",
            )
        if self._asr is None:
            with self._asr_lock:
                if self._asr is None:  # another thread may have built it while this one waited
                    self._asr = self._asr_factory()
        text = clean_text(self._asr.transcribe(wave))
        if not text:
            raise TranscriptError(name, "missing transcript and ASR heard no words")
        return text


def _require_finite(probabilities: np.ndarray, names: list[str]) -> None:
    """CrabserError naming the first input whose class probabilities are NaN or infinite."""
    finite = np.isfinite(probabilities).all(axis=-1)
    if not finite.all():
        name = names[int(np.argmin(finite))]
        raise CrabserError(
            f"{name}: the model gave non-finite probabilities (NaN); its weights are damaged or "
            "its training diverged"
        )
