"""Using a trained run: :class:`Recognizer` turns audio (+ transcript) into a label and probabilities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crabser.data.audio import load_audio
from crabser.data.manifest import clean_text
from crabser.errors import CrabserError, TranscriptError
from crabser.features.encoders import Encoder, pad_batch


@dataclass
class Prediction:
    """The predicted label of one input and the probability of every class."""

    source: str
    label: str
    probabilities: dict[str, float]
    transcript: str | None = None  #: the text the model read (None for a model without text)
    text_source: str | None = None  #: "given" or "asr"


class Recognizer:
    """A trained Crab with its encoders; loads once, predicts many times."""

    def __init__(
        self, module, encoders: dict[str, Encoder], asr: Callable[[], object] | None = None,
        modalities: list[str] | None = None,
    ) -> None:
        """``encoders`` are the frozen feature extractors (empty for a fine-tuned module, which
        carries its own); ``asr`` builds the ASR model for inputs without a transcript (on first need)."""
        self.module = module.eval()
        self.encoders = encoders
        self.modalities = list(modalities or encoders)
        self.labels: list[str] = list(module.labels)
        self._asr_factory = asr
        self._asr = None

    def _transcribe(self, path: str | Path) -> str:
        if self._asr_factory is None:
            raise TranscriptError(str(path), "missing transcript: pass --text or put a .txt file beside the audio")
        if self._asr is None:
            self._asr = self._asr_factory()
        text = self._asr.transcribe(load_audio(path, self._asr.sample_rate)).strip()
        if not text:
            raise TranscriptError(str(path), "missing transcript and ASR heard no words")
        return text

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best.ckpt", overrides: list[str] | None = None) -> Recognizer:
        """Load the best checkpoint and the encoders of a run folder (config ``overrides`` allowed)."""
        from crabser.pipeline import build_encoders, load_module, load_run_config

        config = load_run_config(Path(run_dir), overrides)
        path = config.run_dir / "checkpoints" / checkpoint
        module = load_module(path)
        asr = None
        if config.asr.fill_missing:
            from crabser.features.asr import WhisperASR

            def asr() -> WhisperASR:
                return WhisperASR(config.asr.model, config.asr.language, config.asr.beam_size)

        encoders = {} if config.train.finetune else build_encoders(config)
        return cls(module, encoders, asr, modalities=config.model.modalities)

    def resolve_texts(self, audio_paths: list[str | Path], texts: list[str | None]) -> tuple[list[str], list[str]]:
        """The transcript of each input (given, or from ASR when the run allows it) and its source;
        empty lists for a model without text."""
        clean_texts, sources = [], []
        if "text" in self.modalities:
            for path, text in zip(audio_paths, texts):
                given = clean_text(text)
                clean_texts.append(given or self._transcribe(path))
                sources.append("given" if given else "asr")
        return clean_texts, sources

    @torch.no_grad()
    def logits(self, audio_paths: list[str | Path], clean_texts: list[str]) -> torch.Tensor:
        """Class logits ``(n, classes)`` of the inputs, with their resolved transcripts."""
        if not self.encoders:  # fine-tuned: the module's own encoders read raw audio and text
            waves = [load_audio(path, 16000) for path in audio_paths] if "speech" in self.modalities else []
            features, masks = self.module.inputs({"waves": waves, "texts": clean_texts})
        else:
            features, masks = {}, {}
            for modality, encoder in self.encoders.items():
                if modality == "text":
                    inputs = clean_texts
                else:
                    inputs = [load_audio(path, encoder.sample_rate or 16000) for path in audio_paths]
                padded = pad_batch(encoder.encode(inputs).unpadded())
                features[modality], masks[modality] = padded.features, padded.mask
        return self.module.model(features, masks).logits

    def predict(self, audio_paths: list[str | Path], texts: list[str | None]) -> list[Prediction]:
        """Predict each (audio, transcript) pair; AudioError / TranscriptError name the bad input.

        A missing transcript comes from ASR when the run allows it (``asr.fill_missing``). A
        text-only model with transcripts reads no audio; a model without text ignores them.
        """
        clean_texts, sources = self.resolve_texts(audio_paths, texts)
        probabilities = self.logits(audio_paths, clean_texts).softmax(dim=-1)
        return _predictions(audio_paths, probabilities.numpy(), self.labels, clean_texts, sources)


def _predictions(audio_paths, probabilities, labels: list[str], clean_texts: list[str], sources: list[str]) -> list[Prediction]:
    results = []
    for i, (path, probs) in enumerate(zip(audio_paths, probabilities)):
        scores = {label: float(p) for label, p in zip(labels, probs)}
        transcript, source = (clean_texts[i], sources[i]) if clean_texts else (None, None)
        results.append(Prediction(str(path), max(scores, key=scores.get), scores, transcript, source))
    return results


class StackedRecognizer:
    """A stacked ensemble (``crabser stack``): base models' logits -> the averaged random forests."""

    def __init__(self, bases: list[Recognizer], forest, labels: list[str]) -> None:
        self.bases, self.forest, self.labels = bases, forest, list(labels)

    @classmethod
    def from_run(cls, stack_dir: str | Path) -> StackedRecognizer:
        """Load the base runs and the forests of a stack folder."""
        import json

        import joblib

        summary = json.loads((Path(stack_dir) / "stack.json").read_text())
        if summary.get("folds"):
            raise CrabserError(f"{stack_dir}: a cross-validated stack (one per fold) is for evaluation; stack on one split to predict")
        bases = [Recognizer.from_run(run) for run in summary["models"].values()]
        return cls(bases, joblib.load(Path(stack_dir) / "stack.joblib"), summary["labels"])

    def predict(self, audio_paths: list[str | Path], texts: list[str | None]) -> list[Prediction]:
        """As :meth:`Recognizer.predict`; transcripts are resolved once (by the first base with text)."""
        readers = [b for b in self.bases if "text" in b.modalities]
        clean_texts, sources = readers[0].resolve_texts(audio_paths, texts) if readers else ([], [])
        logits = [b.logits(audio_paths, clean_texts if "text" in b.modalities else []).numpy() for b in self.bases]
        probabilities = self.forest.predict_proba(np.concatenate(logits, axis=1))
        return _predictions(audio_paths, probabilities, self.labels, clean_texts, sources)


def load_recognizer(run_dir: str | Path, overrides: list[str] | None = None) -> Recognizer | StackedRecognizer:
    """The recognizer of a run folder or of a stack folder."""
    from crabser.stacking import is_stack

    if is_stack(run_dir):
        return StackedRecognizer.from_run(run_dir)
    return Recognizer.from_run(run_dir, overrides=overrides)
