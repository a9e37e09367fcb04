"""Using a trained model: ``Recognizer.load(path_or_name).predict(audio, text)``.

``Recognizer.load`` takes ``"default"`` (the model shipped in the package, see
:mod:`crabser.pretrained`), a run folder, a checkpoint file inside one, an exported model folder
(``crabser export``) or a stack folder (``crabser stack``). ``predict`` takes a file path, the
bytes of an audio file, or a numpy array with its sample rate (see
:func:`crabser.data.audio.decode_audio`), and an optional transcript.

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

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import soxr
import torch

if TYPE_CHECKING:
    import pandas as pd

    from crabser.tables import TableInput

from crabser.data.audio import AudioInput, decode_audio
from crabser.data.text import clean_text
from crabser.errors import AudioError, CrabserError, TranscriptError
from crabser.features.encoders import Encoder, pad_batch
from crabser.models.base import ModelOutput
from crabser.prediction import Prediction, check_min_confidence, decided_label

SAMPLE_RATE = 16000  #: every input is decoded once to 16 kHz mono; encoders at other rates resample
DEFAULT = "default"  #: the name of the packaged model
EXPORT_FORMAT = "crabser-model/1"
#: the tap whose vector is an input's embedding: the classifier's input, present in every model
EMBEDDING_TAP = "fused"


def _input_name(audio: object, index: int) -> str:
    if isinstance(audio, (str, Path)):
        return str(audio)
    return "<text>" if audio is None else f"<input {index}>"


class _Predictor:
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
        texts = list(texts) if texts is not None else [None] * len(audios)
        names = (
            list(names) if names is not None else [_input_name(a, i) for i, a in enumerate(audios)]
        )
        if not (len(audios) == len(texts) == len(names)):
            raise ValueError(
                f"got {len(audios)} audio inputs, {len(texts)} transcripts and {len(names)} names"
            )
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


class ExportedModule(torch.nn.Module):
    """An exported model for inference: the network and its labels, without training state."""

    def __init__(self, hparams: dict, weights: dict[str, torch.Tensor]) -> None:
        from crabser.models.registry import build_model

        super().__init__()
        self.labels = list(hparams["labels"])
        self.model = build_model(
            hparams["model"],
            hparams["input_dims"],
            len(self.labels),
            hparams.get("speech_layers", 0),
        )
        self.model.load_state_dict(weights)


class Recognizer(_Predictor):
    """A trained model with its encoders; loads once, predicts many times."""

    gives_embeddings = True

    def __init__(
        self,
        module,
        encoders: dict[str, Encoder],
        asr: Callable[[], object] | None = None,
        modalities: list[str] | None = None,
    ) -> None:
        """``encoders`` are the frozen feature extractors (empty for a fine-tuned module, which
        carries its own); ``asr`` builds the ASR model for inputs without a transcript (on first
        need)."""
        self.module = module.eval()
        self.encoders = encoders
        self.modalities = list(modalities or encoders)
        self.labels: list[str] = list(module.labels)
        self._asr_factory = asr
        self._asr = None

    @staticmethod
    def load(
        path_or_name: str | Path = DEFAULT, overrides: list[str] | None = None
    ) -> Recognizer | StackedRecognizer:
        """The recognizer of ``"default"`` (the packaged default model), ``"crabser/<name>"`` (a
        packaged or local model), ``"hf://<org>/<repo>[@<revision>]"`` (a Hub repository holding
        an exported model; see :mod:`crabser.pretrained`), a run folder, a checkpoint file, an
        exported model folder or a stack folder."""
        from crabser.pretrained import resolve_model

        path = resolve_model(path_or_name)
        if path.is_file() and path.suffix == ".ckpt":
            return Recognizer.from_run(
                path.parent.parent, checkpoint=path.name, overrides=overrides
            )
        if not path.is_dir():
            raise CrabserError(
                f"{path}: no such model (give 'default', crabser/<name>, hf://<org>/<repo>, or a "
                "run, checkpoint, exported model or stack folder)"
            )
        if (path / "stack.json").is_file():
            return StackedRecognizer.from_run(path)
        if (path / "model.json").is_file():
            return Recognizer.from_export(path, overrides)
        return Recognizer.from_run(path, overrides=overrides)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, checkpoint: str | None = None, overrides: list[str] | None = None
    ) -> Recognizer:
        """Load a checkpoint of a run folder (by default its model: the refitted one, else the best)
        and its encoders (config ``overrides`` allowed)."""
        from crabser.config import load_run_config
        from crabser.training.checkpoint_io import load_module, run_checkpoint

        config = load_run_config(Path(run_dir), overrides)
        module = load_module(run_checkpoint(config.run_dir, checkpoint))
        return cls._with_config(module, config)

    @classmethod
    def from_export(cls, folder: str | Path, overrides: list[str] | None = None) -> Recognizer:
        """Load a folder written by :func:`export_model` (plain PyTorch: no Lightning import, a
        fast start)."""
        from safetensors.torch import load_file

        from crabser.config import load_run_config
        from crabser.training.checkpoint_io import guarded_read, require_finite

        folder = Path(folder)
        meta = guarded_read(
            folder / "model.json", lambda path: json.loads(path.read_text(encoding="utf-8"))
        )
        if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise CrabserError(
                f"{folder}: unknown model format {found!r} (expected {EXPORT_FORMAT})"
            )
        weights_file = folder / "model.safetensors"
        weights = {
            k: v.float()
            for k, v in guarded_read(weights_file, lambda path: load_file(str(path))).items()
        }
        require_finite(weights.items(), weights_file)
        module = guarded_read(weights_file, lambda _: ExportedModule(meta["hparams"], weights))
        return cls._with_config(module, load_run_config(folder, overrides))

    @classmethod
    def _with_config(cls, module, config) -> Recognizer:
        from crabser.features.encoders import build_encoders

        asr = None
        if config.asr.fill_missing:
            from crabser.features.asr import WhisperASR

            def asr() -> WhisperASR:
                return WhisperASR(config.asr.model, config.asr.language, config.asr.beam_size)

        encoders = {} if config.train.finetune else build_encoders(config)
        return cls(module, encoders, asr, modalities=config.model.modalities)

    def features(
        self, waves: list[np.ndarray | None], texts: list[str]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The encoders' frames of 16 kHz waves and resolved transcripts, per modality padded
        ``(n, T, ...)`` with their masks ``(n, T)``."""
        if not self.encoders:  # fine-tuned: the module's own encoders read raw audio and text
            return cast(
                tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
                self.module.inputs(
                    {"waves": waves if "speech" in self.modalities else [], "texts": texts}
                ),
            )
        features, masks = {}, {}
        for modality, encoder in self.encoders.items():
            inputs: list[Any]
            if modality == "text":
                inputs = texts
            else:
                rate = encoder.sample_rate or SAMPLE_RATE
                inputs = [
                    w if rate == SAMPLE_RATE else soxr.resample(w, SAMPLE_RATE, rate) for w in waves
                ]
            padded = pad_batch(encoder.encode(inputs).unpadded())
            features[modality], masks[modality] = padded.features, padded.mask
        return features, masks

    @torch.no_grad()
    def forward(
        self, waves: list[np.ndarray | None], texts: list[str], return_taps: bool = False
    ) -> ModelOutput:
        """The model's output (logits, and its taps with ``return_taps``) on 16 kHz waves and
        resolved transcripts."""
        features, masks = self.features(waves, texts)
        return cast(ModelOutput, self.module.model(features, masks, return_taps=return_taps))

    def logits(self, waves: list[np.ndarray | None], texts: list[str]) -> torch.Tensor:
        """Class logits ``(n, classes)`` of 16 kHz waves and resolved transcripts."""
        return self.forward(waves, texts).logits

    def probabilities(self, waves: list[np.ndarray | None], texts: list[str]) -> np.ndarray:
        return self.scores(waves, texts)[0]

    def scores(
        self, waves: list[np.ndarray | None], texts: list[str], embed: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, with ``embed``, the ``fused`` tap (the classifier's input, present
        in every model) as the utterance embedding."""
        output = self.forward(waves, texts, return_taps=embed)
        embeddings = output.taps[EMBEDDING_TAP].float().numpy() if embed else None
        return output.logits.softmax(dim=-1).numpy(), embeddings

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

    def embed_frames(
        self,
        audios: Sequence[AudioInput | None],
        texts: Sequence[str | None] | None = None,
        *,
        modality: str = "speech",
        sample_rate: int | None = None,
        names: Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """Frame-level embeddings: the ``modality`` encoder's frames of each input (``(T, dim)``,
        ``(T, layers, dim)`` for a model that weighs encoder layers), as the model reads them
        (emotion2vec's ``granularity="frame"``)."""
        if modality not in self.modalities:
            raise CrabserError(f"this model reads {' + '.join(self.modalities)}, not {modality}")
        texts = list(texts) if texts is not None else [None] * len(audios)
        names = [_input_name(a, i) for i, a in enumerate(audios)] if names is None else names
        waves, resolved, _ = self._resolved_inputs(audios, texts, sample_rate, names)
        with torch.no_grad():
            features, masks = self.features(waves, resolved)
        frames, mask = features[modality], masks[modality].bool()
        return [f[m].float().numpy() for f, m in zip(frames, mask)]


class StackedRecognizer(_Predictor):
    """A stacked ensemble (``crabser stack``): base models' logits -> the averaged random
    forests."""

    def __init__(self, bases: list[Recognizer], forest, labels: list[str]) -> None:
        self.bases, self.forest, self.labels = bases, forest, list(labels)
        self.modalities = sorted({m for b in bases for m in b.modalities})
        readers = [b for b in bases if "text" in b.modalities]
        self._asr_factory = readers[0]._asr_factory if readers else None

    @classmethod
    def from_run(cls, stack_dir: str | Path) -> StackedRecognizer:
        """Load the base runs and the forests of a stack folder."""
        import joblib

        summary = json.loads((Path(stack_dir) / "stack.json").read_text())
        if summary.get("folds"):
            raise CrabserError(
                f"{stack_dir}: a cross-validated stack (one per fold) is for evaluation; stack on "
                "one split to predict"
            )
        bases = [Recognizer.from_run(run) for run in summary["models"].values()]
        return cls(bases, joblib.load(Path(stack_dir) / "stack.joblib"), summary["labels"])

    def probabilities(self, waves: list[np.ndarray | None], texts: list[str]) -> np.ndarray:
        """Transcripts are resolved once for all bases; each base reads what it needs."""
        logits = [
            b.logits(waves, texts if "text" in b.modalities else []).numpy() for b in self.bases
        ]
        return self.forest.predict_proba(np.concatenate(logits, axis=1))


def export_model(
    run_dir: str | Path, out_dir: str | Path, half: bool = True, checkpoint: str | None = None
) -> Path:
    """Write a run's model as a small folder: ``model.safetensors`` (fp16 when ``half``; only the
    model's weights, no optimiser or loss state), ``model.json`` (format, hyper-parameters, labels)
    and ``config.yaml`` (encoders, ASR). ``Recognizer.load(out_dir)`` reads it."""
    from safetensors.torch import save_file

    from crabser.config import dump_config, load_run_config
    from crabser.io import atomic_path, ensure_folder
    from crabser.runs import git_commit
    from crabser.training.checkpoint_io import load_module, run_checkpoint

    config = load_run_config(Path(run_dir))
    module = load_module(run_checkpoint(config.run_dir, checkpoint))
    if module.encoder_parameters():
        raise CrabserError(
            f"{run_dir}: a fine-tuned run carries its encoders; load the run folder instead of "
            "exporting it"
        )
    out = ensure_folder(out_dir, "--out")
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in module.model.state_dict().items()
    }
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {
        "format": EXPORT_FORMAT,
        "labels": module.labels,
        "dtype": "float16" if half else "float32",
        "hparams": dict(module.hparams),
        "source_run": str(config.run_dir),
        "git_commit": git_commit(),
    }
    with atomic_path(out / "model.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(dump_config(config))
    for name in ("model.safetensors", "model.json", "config.yaml"):
        (out / name).chmod(0o644)  # readable by whoever installs or serves it (temp files are 0600)
    return out
