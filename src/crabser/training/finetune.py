"""Fine-tuning: the speech and text encoders train together with the Crab head, from raw audio.

What the paper does (III-C) and the reference code specifies: encoders at LR 1e-6, head at 1e-5
(hierarchical AdamW groups), the speech model's CNN feature encoder frozen, audio cropped to 12 s
(``speech.max_seconds``; a random crop in training, the first seconds in evaluation). Our choices
where they are silent: gradient checkpointing on by default (``train.gradient_checkpointing``),
mixed precision through ``train.precision`` (e.g. ``bf16-mixed`` on a GPU), batches bucketed by
duration (:class:`crabser.data.sampling.LengthBucketSampler`) so little padding enters the speech
model. Speech models (``speech.kind: hf-speech``): WavLM / HuBERT / wav2vec 2.0, or Whisper's
encoder (``model: embedded`` = tiny.en in PyTorch from the bundled weights; the CTranslate2 encoder
is inference-only). Text: any transformers AutoModel (``embedded`` = MiniLM)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from crabser.data.audio import duration_seconds, load_audio
from crabser.data.augment import energy_adaptive_mixup
from crabser.data.manifest import Manifest
from crabser.data.text import clean_text
from crabser.errors import AudioError
from crabser.features.encoders import (
    load_speech_backbone,
    quiet_transformers,
    text_model_path,
    whisper_layers_needed,
)
from crabser.features.statistics import RunningMoments
from crabser.features.whisper_torch import WINDOW_SECONDS, whisper_mel_batch
from crabser.training.datamodule import Batch, RawBatch
from crabser.training.lit_module import CrabLitModule

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000


@dataclass
class RawUtterance:
    """One utterance for fine-tuning: audio path, transcript, label index, duration."""

    id: str
    audio: str
    text: str
    label: int
    seconds: float


def load_raw_utterances(
    manifest: Manifest, labels: list[str], modalities: Sequence[str]
) -> list[RawUtterance]:
    """Utterances usable for fine-tuning; unreadable audio or missing text is left out with a
    warning."""
    index = {label: i for i, label in enumerate(labels)}
    items, skipped = [], []
    for row in manifest.frame.itertuples(index=False):
        text = clean_text(getattr(row, "text", None)) or ""
        try:
            seconds = duration_seconds(row.audio) if "speech" in modalities else 0.0
        except AudioError as error:
            skipped.append(f"{row.id} ({error.problem})")
            continue
        if "text" in modalities and not text:
            skipped.append(f"{row.id} (missing transcript)")
            continue
        items.append(RawUtterance(row.id, row.audio, text, index[row.label], seconds))
    if skipped:
        log.warning(
            "%d utterances left out of fine-tuning: %s", len(skipped), "; ".join(skipped[:10])
        )
    return items


def bucket_lengths(items: Sequence[RawUtterance], uses_audio: bool) -> list[float]:
    """What raw batches are bucketed by: each clip's seconds, or, when no audio is read (text
    only), each transcript's characters, so that batches of short and long texts pad little."""
    return [float(i.seconds if uses_audio else len(i.text)) for i in items]


class RawDataset(Dataset[Any]):
    """Decodes audio on access and crops it to ``max_seconds`` (random crop when ``train``).

    With ``eam`` (training only), each utterance gets a segment of another random training
    utterance overlaid by energy-adaptive mixup (:mod:`crabser.data.augment`); the item then carries
    that utterance's label and its weight (``mix_label``, ``mix_lambda``) for the soft target.

    The random draws of an item depend on ``(seed, epoch, index)`` only, not on what was drawn
    before: keys are ``(epoch, index)`` pairs from :class:`crabser.data.sampling.EpochTagged` (a
    bare index is epoch 0). So a resumed run crops and mixes as the uninterrupted one did, and
    loader worker processes do not repeat each other's draws."""

    def __init__(
        self,
        items: list[RawUtterance],
        max_seconds: float | None,
        train: bool,
        uses_audio: bool = True,
        seed: int = 0,
        eam: bool = False,
    ) -> None:
        self.items, self.max_seconds, self.train, self.uses_audio = (
            items,
            max_seconds,
            train,
            uses_audio,
        )
        self.eam = eam and train and uses_audio and len(items) > 1
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def _wave(self, item: RawUtterance, rng: np.random.Generator) -> np.ndarray:
        wave = (
            load_audio(item.audio, SAMPLE_RATE)
            if self.uses_audio
            else np.zeros(0, dtype=np.float32)
        )
        return crop_wave(wave, self.max_seconds, rng if self.train else None)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        item = self.items[index]
        sample: dict[str, Any] = {
            "id": item.id,
            "wave": self._wave(item, rng),
            "text": item.text,
            "label": item.label,
        }
        if self.eam:
            other = self.items[(index + int(rng.integers(1, len(self.items)))) % len(self.items)]
            sample["wave"], sample["mix_lambda"] = energy_adaptive_mixup(
                sample["wave"], self._wave(other, rng), rng
            )
            sample["mix_label"] = other.label
        return sample


def crop_wave(
    wave: np.ndarray, max_seconds: float | None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A 16 kHz wave cut to ``max_seconds`` (none: whole): a random window drawn from ``rng``
    (training), else its first seconds (evaluation and prediction)."""
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    if not limit or len(wave) <= limit:
        return wave
    start = int(rng.integers(0, len(wave) - limit + 1)) if rng is not None else 0
    return wave[start : start + limit]


def collate_raw(items: list[dict[str, Any]]) -> RawBatch:
    """A raw batch: ids, waves (list), texts (list), labels (and the EAM labels and weights)."""
    batch: RawBatch = {
        "ids": [i["id"] for i in items],
        "waves": [i["wave"] for i in items],
        "texts": [i["text"] for i in items],
        "labels": torch.tensor([i["label"] for i in items], dtype=torch.long),
    }
    if "mix_label" in items[0]:
        batch["mix_labels"] = torch.tensor([i["mix_label"] for i in items], dtype=torch.long)
        batch["mix_lambdas"] = torch.tensor([i["mix_lambda"] for i in items], dtype=torch.float32)
    return batch


class TrainableEncoders(nn.Module):
    """Transformers speech and/or text models whose outputs feed Crab: raw batch -> features, masks.

    Speech: WavLM / HuBERT / wav2vec 2.0 (the CNN feature encoder frozen, as in the reference code)
    or Whisper's encoder (``embedded`` = tiny.en from the bundled weights; its two-convolution stem
    frozen, our analogue of that choice), on each clip's own length with a padding mask, and only
    the layers up to the one read (layer 2 of 4 runs half the encoder); clips longer than Whisper's
    30 s window are cut to their first 30 s (set ``speech.max_seconds`` for a random crop instead).
    ``speech_layer`` ``all``
    gives every hidden state ``(B, T, L + 1, D)`` for the model's learnable weighted sum.
    """

    def __init__(
        self,
        speech_model: str | None,
        text_model: str | None,
        speech_layer: int | Literal["all"] = -1,
        text_layer: int = -1,
        max_tokens: int = 128,
        gradient_checkpointing: bool = True,
    ) -> None:
        super().__init__()
        from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

        quiet_transformers()
        self.speech_layer, self.text_layer, self.max_tokens = speech_layer, text_layer, max_tokens
        self.dims: dict[str, int] = {}
        self.speech_layers = 0  #: hidden states stacked per frame (layer "all"), 0 = one layer
        #: the speech and text backbones (transformers models or crabser's Whisper); None: unused
        self.speech: Any = None
        self.text: Any = None
        self.processor: Any = None  #: the feature extractor of a non-Whisper speech backbone
        self.is_whisper = False
        if speech_model:
            self.speech, _, self.is_whisper = load_speech_backbone(speech_model)
            if self.is_whisper:
                self._cut_whisper()
            else:
                self.processor = AutoFeatureExtractor.from_pretrained(speech_model)  # type: ignore[no-untyped-call]
                self.speech.freeze_feature_encoder()  # the CNN stays frozen (reference code)
                if speech_layer == "all":
                    self.speech_layers = self.speech.config.num_hidden_layers + 1
            self.dims["speech"] = int(
                self.speech.d_model if self.is_whisper else self.speech.config.hidden_size
            )
        if text_model:
            path, _ = text_model_path(text_model)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.text = AutoModel.from_pretrained(path)
            self.dims["text"] = int(self.text.config.hidden_size)
        for model in (self.speech, self.text):
            if model is None:
                continue
            model.train()  # from_pretrained returns eval mode; dropout belongs to fine-tuning
            if gradient_checkpointing and model.supports_gradient_checkpointing:
                enable = (
                    getattr(model, "activation_checkpointing_enable", None)
                    or model.gradient_checkpointing_enable
                )
                enable()

    def _cut_whisper(self) -> None:
        """Keep the Whisper layers up to the one read; freeze the convolutional stem."""
        kept = whisper_layers_needed(self.speech_layer, self.speech.full_depth)
        self.speech.cut(kept)
        self.speech_layers = kept + 1 if self.speech_layer == "all" else 0
        for conv in (self.speech.conv1, self.speech.conv2):
            conv.requires_grad_(False)

    def _speech(self, waves: list[Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.is_whisper:
            waves = [wave[: WINDOW_SECONDS * SAMPLE_RATE] for wave in waves]
            mels, frames = whisper_mel_batch(waves, self.speech.n_mels)
            frames = frames.to(device)
            states = self.speech(mels.to(device), frames, hidden_states=True)
        else:
            inputs = self.processor(
                waves,
                sampling_rate=SAMPLE_RATE,
                padding=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            values, sample_mask = (
                inputs["input_values"].to(device),
                inputs["attention_mask"].to(device),
            )
            out = self.speech(
                values, attention_mask=sample_mask, output_hidden_states=self.speech_layer != -1
            )
            states = (
                out.hidden_states
                if self.speech_layer == "all"
                else (
                    out.last_hidden_state
                    if self.speech_layer == -1
                    else out.hidden_states[self.speech_layer],
                )
            )
            lengths = self.speech._get_feat_extract_output_lengths(sample_mask.sum(dim=1))
            frames = torch.arange(states[0].shape[1], device=device)[None, :] < lengths[:, None]
        hidden = torch.stack(states, dim=2) if self.speech_layer == "all" else states[-1]
        return hidden, frames

    def forward(self, batch: RawBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        device = next(self.parameters()).device
        features, masks = {}, {}
        if self.speech is not None:
            features["speech"], masks["speech"] = self._speech(batch["waves"], device)
        if self.text is not None:
            tokens = self.tokenizer(
                list(batch["texts"]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(device)
            out = self.text(**tokens, output_hidden_states=self.text_layer != -1)
            features["text"] = (
                out.last_hidden_state
                if self.text_layer == -1
                else out.hidden_states[self.text_layer]
            )
            masks["text"] = tokens["attention_mask"].bool()
        return features, masks


class FinetuneLitModule(CrabLitModule):
    """Crab + MLCS with its encoders trained too (encoder parameters in the low-LR group)."""

    def __init__(
        self,
        encoders: dict[str, Any],
        labels: list[str],
        model: dict[str, Any],
        loss: dict[str, Any],
        train: dict[str, Any],
        class_weights: list[float] | None = None,
    ) -> None:
        trainable = TrainableEncoders(**encoders)
        super().__init__(
            trainable.dims, labels, model, loss, train, class_weights, trainable.speech_layers
        )
        self.save_hyperparameters()
        self.encoders = trainable
        #: raw training batches to fit the input statistics on at the fit's start (training.fit)
        self.statistics_loader: Iterable[RawBatch] | None = None

    def inputs(self, batch: Batch) -> tuple[dict[str, Any], dict[str, Any]]:
        encoded: tuple[dict[str, Any], dict[str, Any]] = self.encoders(batch)
        return encoded

    def on_fit_start(self) -> None:
        """Fit the input statistics on ``statistics_loader`` (when set) on the training device; a
        resumed fit keeps the checkpoint's. Under DDP every process computes them over the whole
        split, so all hold the same statistics."""
        loader, self.statistics_loader = self.statistics_loader, None
        if loader is not None and self.trainer.ckpt_path is None:
            self.fit_input_statistics(loader)

    @torch.no_grad()
    def fit_input_statistics(self, loader: Iterable[RawBatch]) -> None:
        """Z-normalise the head's inputs with the pre-trained encoders' statistics on ``loader``
        (the
        training split as evaluation reads it: each clip's first ``speech.max_seconds``, Whisper's
        first 30 s, no random crop or mixup), as the frozen-feature runs do with the cached
        features; the
        statistics stay fixed while the encoders train (our choice: the reference code normalises
        cached features only). One forward pass over the split."""
        moments = {modality: RunningMoments() for modality in self.encoders.dims}
        was_training = self.encoders.training
        self.encoders.eval()
        for batch in loader:
            features, masks = self.encoders(batch)
            for modality, values in features.items():
                moments[modality].add(values[masks[modality]].cpu().numpy())  # real frames only
        self.encoders.train(was_training)
        for modality, running in moments.items():
            mean, std = running.result()
            self.model.input_stage.set_statistics(
                modality, torch.from_numpy(mean), torch.from_numpy(std)
            )

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoders.parameters() if p.requires_grad]
