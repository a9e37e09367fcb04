"""Building blocks of Crab, each respecting padding masks (True = a real frame or token)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``(B, T, D)`` using only the frames where ``mask`` ``(B, T)`` is True."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def downsample_frames(x: torch.Tensor, mask: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each run of ``stride`` frames (real frames only): ``(B, T, D) -> (B, ceil(T/stride), D)``."""
    if stride == 1:
        return x, mask
    batch, length, dim = x.shape
    pad = (-length) % stride
    weights = mask.to(x.dtype)
    x = torch.nn.functional.pad(x * weights.unsqueeze(-1), (0, 0, 0, pad))
    weights = torch.nn.functional.pad(weights, (0, pad))
    sums = x.view(batch, -1, stride, dim).sum(dim=2)
    counts = weights.view(batch, -1, stride).sum(dim=2)
    return sums / counts.clamp(min=1.0).unsqueeze(-1), counts > 0


class FeatureNormalizer(nn.Module):
    """Z-normalise features with fixed statistics (buffers saved with the model; identity until set).

    ``shape`` is the trailing feature shape, ``(D,)`` or ``(L, D)`` for stacked layers.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor, floor: float = 1e-5) -> None:
        """Use these statistics from now on (``std`` is floored to avoid division by ~0)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).clamp(min=floor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LayerWeightedSum(nn.Module):
    """Learnable softmax-weighted sum of encoder layers: ``(B, T, L, D) -> (B, T, D)``."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btld,l->btd", x, self.logits.softmax(dim=0))


class ModalityProjection(nn.Module):
    """FC to the hidden size, then LayerNorm to bring both modalities to one scale."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


class BiGRU(nn.Module):
    """One-layer bidirectional GRU over the real frames only (packed), ``(B, T, h) -> (B, T, 2h)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


class CrossModalAttention(nn.Module):
    """Queries from one modality attend to another's keys/values (the caller adds the residual)."""

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        attended, _ = self.attention(query, context, context, key_padding_mask=~context_mask, need_weights=False)
        return attended


class AttentionPooling(nn.Module):
    """w_i = softmax_i(r_i . m / sqrt(D)) over real frames; returns sum_i w_i r_i (paper eqs. 3-4)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.randn(dim) * 0.02)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (x @ self.m) * self.scale  # (B, T)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1)
        return torch.einsum("bt,btd->bd", weights, x)


class ContrastiveSupervisionLeg(nn.Module):
    """CSL: FC -> ReLU -> FC into the contrastive space (training only)."""

    def __init__(self, input_dim: int, hidden: int, output_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
