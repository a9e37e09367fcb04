"""Using a trained run: :class:`Recognizer` turns audio (+ transcript) into a label and probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from crabser.data.audio import load_audio
from crabser.errors import TranscriptError
from crabser.features.encoders import Encoder, pad_batch


@dataclass
class Prediction:
    """The predicted label of one input and the probability of every class."""

    source: str
    label: str
    probabilities: dict[str, float]


class Recognizer:
    """A trained Crab with its encoders; loads once, predicts many times."""

    def __init__(self, module, encoders: dict[str, Encoder]) -> None:
        self.module = module.eval()
        self.encoders = encoders
        self.labels: list[str] = list(module.labels)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best.ckpt") -> Recognizer:
        """Load the best checkpoint and the encoders of a run folder."""
        from crabser.pipeline import build_encoders, load_run_config
        from crabser.training.lit_module import CrabLitModule

        config = load_run_config(Path(run_dir))
        path = config.run_dir / "checkpoints" / checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no checkpoint; train the run first")
        module = CrabLitModule.load_from_checkpoint(str(path), map_location="cpu")
        return cls(module, build_encoders(config))

    @torch.no_grad()
    def predict(self, audio_paths: list[str | Path], texts: list[str | None]) -> list[Prediction]:
        """Predict each (audio, transcript) pair; AudioError / TranscriptError name the bad input.

        A text-only model reads no audio (``audio_paths`` then only name the inputs); a model
        without a text stream ignores the transcripts.
        """
        clean_texts = []
        if "text" in self.encoders:
            for path, text in zip(audio_paths, texts):
                if text is None or not str(text).strip():
                    raise TranscriptError(str(path), "missing transcript: pass --text or put a .txt file beside the audio")
                clean_texts.append(str(text).strip())
        features, masks = {}, {}
        for modality, encoder in self.encoders.items():
            if modality == "text":
                inputs = clean_texts
            else:
                inputs = [load_audio(path, encoder.sample_rate or 16000) for path in audio_paths]
            padded = pad_batch(encoder.encode(inputs).unpadded())
            features[modality], masks[modality] = padded.features, padded.mask
        probabilities = self.module.model(features, masks).logits.softmax(dim=-1)
        results = []
        for path, probs in zip(audio_paths, probabilities):
            scores = {label: float(p) for label, p in zip(self.labels, probs)}
            results.append(Prediction(str(path), max(scores, key=scores.get), scores))
        return results
