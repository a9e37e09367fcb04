"""Using a trained model: ``Recognizer.load(path_or_name).predict(audio, text)``.

``Recognizer.load`` takes ``"default"`` (the model shipped in the package, see
:mod:`crabser.pretrained`), a run folder, a checkpoint file inside one, an exported model folder
(``crabser export``) or a stack folder (``crabser stack``). ``predict`` takes a file path, the
bytes of an audio file, or a numpy array with its sample rate (see
:func:`crabser.data.audio.decode_audio`), and an optional transcript.

Its answers to partial inputs (no transcript, no audio, ...) are those of
:mod:`crabser.predictor`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import soxr
import torch

from crabser.data.audio import AudioInput, decode_audio
from crabser.errors import AudioError, CrabserError
from crabser.features.encoders import Encoder, pad_batch
from crabser.features.statistics import RunningMoments, to_reference
from crabser.models.base import ModelOutput
from crabser.onnx_runtime import OnnxRecognizer
from crabser.predictor import SAMPLE_RATE, Predictor, aligned
from crabser.pretrained import EXPORT_FILES, MODEL_CARD, ONNX_FILES, ONNX_META, TUNED_ENCODERS

log = logging.getLogger(__name__)

DEFAULT = "default"  #: the name of the packaged model
EXPORT_FORMAT = "crabser-model/1"
#: an export of a fine-tuned run: ``encoders.safetensors`` too (older crabser refuses it by name)
TUNED_EXPORT_FORMAT = "crabser-model/2"
#: the tap whose vector is an input's embedding: the classifier's input, present in every model
EMBEDDING_TAP = "fused"


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


class Recognizer(Predictor):
    """A trained model with its encoders; loads once, predicts many times."""

    gives_embeddings = True

    def __init__(
        self,
        module,
        encoders: dict[str, Encoder],
        asr: Callable[[], object] | None = None,
        modalities: list[str] | None = None,
        normalize_per: str | None = None,
        max_seconds: float | None = None,
    ) -> None:
        """``encoders`` are the frozen feature extractors (empty for a fine-tuned module, which
        carries its own); ``asr`` builds the ASR model for inputs without a transcript (on first
        need); ``normalize_per``: the model's ``model.normalize_per`` (see :meth:`adapt_to`);
        ``max_seconds``: a fine-tuned module reads each clip's first ``speech.max_seconds``, as
        its run's evaluation did."""
        self.module = module.eval()
        self.encoders = encoders
        self.max_seconds = max_seconds
        self.modalities = list(modalities or encoders)
        self.labels: list[str] = list(module.labels)
        self.normalize_per = normalize_per
        self._asr_factory = asr
        self._asr = None
        #: the speech frames' (mean, std) of the recordings adapted to; None = the training split's
        self._group_statistics: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def load(
        path_or_name: str | Path = DEFAULT, overrides: list[str] | None = None
    ) -> Recognizer | StackedRecognizer | OnnxRecognizer:
        """The recognizer of ``"default"`` (the packaged default model), ``"crabser/<name>"`` (a
        packaged or local model), ``"hf://<org>/<repo>[@<revision>]"`` (a Hub repository holding
        an exported model; see :mod:`crabser.pretrained`), a run folder, a checkpoint file, an
        exported model folder, an ONNX model folder (``crabser export --onnx``) or a stack
        folder."""
        from crabser.pretrained import HUB_PREFIX, resolve_model

        path = resolve_model(path_or_name)
        if (path / ONNX_META).is_file():
            if overrides:
                raise CrabserError(f"{path}: an ONNX model takes no config overrides (-o)")
            return OnnxRecognizer.load(path)
        if str(path_or_name).startswith(HUB_PREFIX):  # an exported model only: never a pickle
            return Recognizer.from_export(path, overrides)
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
        from crabser.config import load_run_config
        from crabser.training.checkpoint_io import guarded_read, read_weights

        folder = Path(folder)
        meta = guarded_read(folder / "model.json", _read_json)
        if not isinstance(meta, dict) or meta.get("format") not in (
            EXPORT_FORMAT,
            TUNED_EXPORT_FORMAT,
        ):
            found = meta.get("format") if isinstance(meta, dict) else None
            raise CrabserError(
                f"{folder}: unknown model format {found!r} (expected {EXPORT_FORMAT} or "
                f"{TUNED_EXPORT_FORMAT})"
            )
        weights_file = folder / "model.safetensors"
        weights = read_weights(weights_file)
        module = guarded_read(weights_file, lambda _: ExportedModule(meta["hparams"], weights))
        tuned = folder / TUNED_ENCODERS if meta["format"] == TUNED_EXPORT_FORMAT else None
        return cls._with_config(
            module, load_run_config(folder, overrides), exported=True, tuned=tuned
        )

    @classmethod
    def _with_config(
        cls, module, config, exported: bool = False, tuned: Path | None = None
    ) -> Recognizer:
        """``exported``: the module is an export, which never carries encoders of its own (a
        fine-tuned run's module does); ``tuned``: an exported fine-tuned run's encoder changes,
        added to the pre-trained encoders that ``config`` builds."""
        from crabser.features.encoders import build_encoders

        asr = None
        if config.asr.fill_missing:
            from crabser.features.asr import WhisperASR

            def asr() -> WhisperASR:
                return WhisperASR(config.asr.model, config.asr.language, config.asr.beam_size)

        if config.train.finetune and not exported:
            encoders = {}  # a fine-tuned run's module carries its own encoders
        else:  # on the CPU, as the head: a model trained on a GPU says so in its config
            encoders = build_encoders(config, device="cpu")
        if tuned is not None:
            load_tuned_encoders(encoders, tuned)
        return cls(
            module,
            encoders,
            asr,
            modalities=config.model.modalities,
            normalize_per=config.model.normalize_per,
            max_seconds=config.speech.max_seconds if not encoders else None,
        )

    def adapt_to(
        self,
        audios: Sequence[AudioInput] | None,
        *,
        sample_rate: int | None = None,
        names: Sequence[str] | None = None,
        batch_size: int = 16,
    ) -> int:
        """Speaker (or corpus) normalisation, for a model trained with ``model.normalize_per``:
        from now on the speech frames are z-normalised with the mean and std over all frames of
        these recordings (one speaker's, or one corpus's), as the model's training groups were;
        ``None`` goes back to the training split's statistics (what a model answers without
        them). Returns how many recordings were read; an unreadable one is skipped with a warning
        (AudioError if none could be read, CrabserError if none was given)."""
        if self.normalize_per is None:
            raise CrabserError(
                "this model was not trained with model.normalize_per: it takes no adaptation"
            )
        if audios is None:
            self._group_statistics = None
            return 0
        names = aligned(audios, None, names)[1]
        moments, errors = RunningMoments(), []
        for start in range(0, len(audios), batch_size):
            waves = []
            for audio, name in zip(audios[start : start + batch_size], names[start:]):
                try:
                    waves.append(
                        decode_audio(audio, SAMPLE_RATE, sample_rate=sample_rate, name=name)
                    )
                except AudioError as error:
                    errors.append(error)
                    log.warning("not adapted to: %s", error)
            for frames in self._frames(self.encoders["speech"], waves, adapted=False):
                moments.add(frames)
        if errors and not moments.count:
            raise errors[0]
        if not moments.count:
            raise CrabserError("adapt_to: no recordings given")
        self._group_statistics = moments.result()
        return len(audios) - len(errors)

    def _frames(
        self, encoder: Encoder, inputs: list[Any], adapted: bool = True
    ) -> list[np.ndarray]:
        """The encoder's unpadded frames of 16 kHz waves (resampled to its rate) or texts; with
        ``adapted``, speech frames mapped onto the adapted group's statistics (:meth:`adapt_to`)
        where set."""
        if not inputs:
            return []
        if encoder.modality != "text":
            rate = encoder.sample_rate or SAMPLE_RATE
            inputs = [
                w if rate == SAMPLE_RATE else soxr.resample(w, SAMPLE_RATE, rate) for w in inputs
            ]
        frames = encoder.encode(inputs).unpadded()
        if not adapted or encoder.modality != "speech" or self._group_statistics is None:
            return frames
        mean, std = self.module.model.input_stage.statistics("speech")
        reference = (mean.numpy(), std.numpy())
        return [to_reference(f, self._group_statistics, reference) for f in frames]

    def features(
        self, waves: list[np.ndarray | None], texts: list[str]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The encoders' frames of 16 kHz waves and resolved transcripts, per modality padded
        ``(n, T, ...)`` with their masks ``(n, T)``."""
        if not self.encoders:  # fine-tuned: the module's own encoders read raw audio and text
            from crabser.training.finetune import crop_wave

            speech = [w if w is None else crop_wave(w, self.max_seconds) for w in waves]
            return cast(
                tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
                self.module.inputs(
                    {"waves": speech if "speech" in self.modalities else [], "texts": texts}
                ),
            )
        features, masks = {}, {}
        for modality, encoder in self.encoders.items():
            inputs = texts if modality == "text" else waves
            padded = pad_batch(self._frames(encoder, list(inputs)))
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
        texts, names = aligned(audios, texts, names)
        waves, resolved, _ = self._resolved_inputs(audios, texts, sample_rate, names)
        with torch.no_grad():
            features, masks = self.features(waves, resolved)
        frames, mask = features[modality], masks[modality].bool()
        return [f[m].float().numpy() for f, m in zip(frames, mask)]


def encoder_changes(module) -> dict[str, torch.Tensor]:
    """How a fine-tuned run's encoder parameters differ from their pre-trained values
    (``<modality>.<parameter>``), for those that trained and moved; empty for a frozen run."""
    from crabser.training.finetune import TrainableEncoders

    encoders = getattr(module, "encoders", None)
    if not isinstance(encoders, TrainableEncoders):
        return {}
    settings = {**module.hparams["encoders"], "gradient_checkpointing": False}
    pretrained = TrainableEncoders(**settings).state_dict()
    changes = {}
    for name, parameter in encoders.named_parameters():
        change = parameter.detach().float() - pretrained[name].float()
        if parameter.requires_grad and bool(change.abs().max() > 0):
            changes[name] = change
    return changes


def load_tuned_encoders(encoders: dict[str, Encoder], path: Path) -> None:
    """Add a fine-tuned export's encoder changes (``<modality>.<parameter>``, see
    :func:`export_model`) to the pre-trained ``encoders`` built from its config, and give each
    changed encoder its own ``cache_id`` (the file's digest), so that no feature store ever mixes
    its frames with the pre-trained encoder's. A tuned Whisper left without ``max_seconds`` reads
    a clip's first 30 s, as its fine-tuning did (the pre-trained one reads every 30 s window).
    CrabserError if a change fits no encoder."""
    from crabser.features.whisper_torch import WINDOW_SECONDS
    from crabser.io import file_sha256
    from crabser.training.checkpoint_io import read_weights

    weights = read_weights(path)
    digest = file_sha256(path)[:12]
    for modality in sorted({name.split(".", 1)[0] for name in weights}):
        encoder = encoders.get(modality)
        model = getattr(encoder, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise CrabserError(
                f"{path}: holds fine-tuned {modality} encoder weights, but the config's "
                f"{modality} encoder ({type(encoder).__name__}) takes none"
            )
        state = model.state_dict()
        tuned = {
            k.removeprefix(f"{modality}."): v
            for k, v in weights.items()
            if k.startswith(f"{modality}.")
        }
        misfits = [k for k, v in tuned.items() if k not in state or state[k].shape != v.shape]
        if misfits:
            raise CrabserError(
                f"{path}: {len(misfits)} fine-tuned {modality} weights do not fit the config's "
                f"encoder (e.g. {misfits[0]}): export the model again"
            )
        model.load_state_dict(
            {**state, **{k: state[k] + v.to(state[k].dtype) for k, v in tuned.items()}}
        )
        if getattr(encoder, "is_whisper", False) and encoder.max_seconds is None:  # type: ignore[union-attr]
            encoder.max_seconds = WINDOW_SECONDS  # type: ignore[union-attr]
        encoder.cache_id = f"{encoder.cache_id}:tuned-{digest}"  # type: ignore[union-attr]


def _read_json(path: Path) -> Any:
    """A UTF-8 JSON file's contents (read under ``guarded_read``, which names it on failure)."""
    return json.loads(path.read_text(encoding="utf-8"))


def _read_stack_summary(path: Path) -> dict:
    """``stack.json``: an object whose ``models`` maps names to base-run folders and whose
    ``labels`` lists the class names; an error (named by ``guarded_read``) for any other shape."""
    summary = _read_json(path)
    if not isinstance(summary, dict):
        raise TypeError(f"a JSON object was expected, not a {type(summary).__name__}")
    models, labels = summary.get("models"), summary.get("labels")
    if not isinstance(models, dict) or not all(isinstance(r, str) for r in models.values()):
        raise ValueError("'models' must map each base model's name to its run folder")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError("'labels' must be a non-empty list of class names")
    return summary


class StackedRecognizer(Predictor):
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

        from crabser.training.checkpoint_io import guarded_read

        again = "run crabser stack again"
        summary = guarded_read(Path(stack_dir) / "stack.json", _read_stack_summary, again)
        if summary.get("folds"):
            raise CrabserError(
                f"{stack_dir}: a cross-validated stack (one per fold) is for evaluation; stack on "
                "one split to predict"
            )
        forest = guarded_read(Path(stack_dir) / "stack.joblib", joblib.load, again)
        bases = [Recognizer.from_run(run) for run in summary["models"].values()]
        return cls(bases, forest, summary["labels"])

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
    and ``config.yaml`` (encoders, ASR). ``Recognizer.load(out_dir)`` reads it.

    A fine-tuned run also gets ``encoders.safetensors`` (format ``crabser-model/2``): how each
    encoder parameter that trained differs from its pre-trained value (e.g. Whisper's layers up to
    the one read; not its frozen stem or positions, nor layers no gradient reached), keyed by
    modality (``speech.layers.0...``). A difference, not the weight: in fp16 it keeps the small
    change fine-tuning makes, which rounding the weight itself to fp16 would partly erase (the
    embedded Whisper weights are fp16 already). Loading builds the pre-trained encoders the config
    names and adds the differences (:func:`load_tuned_encoders`), so the export predicts like a
    frozen-encoder model: clip by clip, speaker adaptation and ONNX export included. The
    pre-trained weights are not stored again: the embedded ones ship with crabser, and a hub id or
    folder must still be there, unchanged.

    An earlier ONNX export in ``out_dir`` (``crabser export --onnx``) is removed: loading prefers
    it, so it would answer instead of this model. So is a ``card.json``: it describes the model
    it came with."""
    from safetensors.torch import save_file

    from crabser.config import dump_config, load_run_config
    from crabser.io import atomic_path, ensure_folder
    from crabser.runs import git_commit
    from crabser.training.checkpoint_io import load_module, run_checkpoint

    config = load_run_config(Path(run_dir))
    module = load_module(run_checkpoint(config.run_dir, checkpoint))
    out = ensure_folder(out_dir, "--out")
    # an earlier ONNX export here (loading would prefer it to this one), and the card of a model
    # exported here before (it would describe that model)
    for name in (*ONNX_FILES, MODEL_CARD):
        (out / name).unlink(missing_ok=True)

    def stored(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            k: (v.half() if half and v.is_floating_point() else v).detach().contiguous()
            for k, v in state.items()
        }

    with atomic_path(out / "model.safetensors") as tmp:
        save_file(stored(module.model.state_dict()), str(tmp))
    names = list(EXPORT_FILES)
    tuned = encoder_changes(module)
    (out / TUNED_ENCODERS).unlink(missing_ok=True)  # none, or a stale one of an earlier export
    if tuned:
        names.append(TUNED_ENCODERS)
        with atomic_path(out / TUNED_ENCODERS) as tmp:
            save_file(stored(tuned), str(tmp))
    meta = {
        "format": TUNED_EXPORT_FORMAT if tuned else EXPORT_FORMAT,
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
    for name in names:
        (out / name).chmod(0o644)  # readable by whoever installs or serves it (temp files are 0600)
    return out
