"""Building blocks of Crab, each respecting padding masks (True = a real frame or token)."""

from __future__ import annotations

import math

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``(B, T, D)`` using only the frames where ``mask`` ``(B, T)`` is True."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[mean ; std]`` over time of ``(B, T, D)`` on the real frames only: ``(B, 2D)`` (population
    std, floored at 1e-6 before the square root so a one-frame clip has a finite gradient)."""
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean.unsqueeze(1)).pow(2), mask)
    return torch.cat([mean, variance.clamp(min=1e-6).sqrt()], dim=-1)


def downsample_frames(
    x: torch.Tensor, mask: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each run of ``stride`` frames (real frames only): ``(B, T, D) -> (B, ceil(T/stride),
    D)``."""
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
    """Z-normalise features with fixed statistics (buffers saved with the model; identity until
    set).

    ``shape`` is the trailing feature shape, ``(D,)`` or ``(L, D)`` for stacked layers.
    """

    mean: torch.Tensor
    std: torch.Tensor

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


class InputMasking(nn.Module):
    """SpecAugment-style masking of (normalised) input features, in training only.

    Per utterance, each real frame starts a span of ``span`` frames set to 0 (the training mean when
    inputs are z-normalised) with probability ``time_share / span``, as wav2vec 2.0's
    ``mask_time_prob``: spans overlap, so the share covered is 1 - (1 - time_share / span) ** span
    (.18 at .2, .41 at .5), less where a span runs past the clip's end, and clips of ``span`` frames
    or fewer are left whole. Each channel is set to 0 over the whole utterance with probability
    ``feature_share``. Channels are drawn one by one, not in bands: the dimensions of a
    self-supervised encoder have no order (SpecAugment's bands are for filterbanks). Not in the Crab
    paper, whose encoders are fine-tuned; a regulariser for heads on frozen features (issue 18).
    Both shares 0 (the default) = off; evaluation is never masked."""

    def __init__(self, time_share: float = 0.0, feature_share: float = 0.0, span: int = 5) -> None:
        super().__init__()
        self.time_share, self.feature_share, self.span = time_share, feature_share, span

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, D)`` with ``mask`` ``(B, T)`` (True = real): ``x`` with masked parts
        zeroed."""
        if not self.training or (self.time_share <= 0 and self.feature_share <= 0):
            return x
        keep = torch.ones_like(x[..., :1])  # (B, T, 1)
        if self.time_share > 0:
            lengths = mask.sum(dim=1, keepdim=True).to(x.dtype)  # (B, 1)
            # each real frame starts a span with probability share / span
            starts = (torch.rand(mask.shape, device=x.device) < self.time_share / self.span) & mask
            starts = torch.nn.functional.pad(starts.to(x.dtype).unsqueeze(1), (self.span - 1, 0))
            covered = torch.nn.functional.max_pool1d(starts, self.span, stride=1)[
                :, 0
            ]  # a start in (t - span, t]
            covered = covered * (lengths > self.span).to(x.dtype)  # never blank a very short clip
            keep = keep * (1.0 - covered).unsqueeze(-1)
        if self.feature_share > 0:
            channels = (
                torch.rand(x.shape[0], 1, x.shape[-1], device=x.device) >= self.feature_share
            ).to(x.dtype)
            keep = keep * channels
        return x * keep


class InputStage(nn.Module):
    """What every model does to its inputs first: z-normalise each modality with fixed statistics,
    sum stacked speech layers with learnt weights (``speech_layers`` > 0, input ``(B, T, L, D)``),
    mask parts of the speech frames in training (``masking``, :class:`InputMasking`; off unless
    configured), and average runs of ``frame_strides[m]`` frames (a CPU budget option; 1 = every
    frame)."""

    def __init__(
        self,
        input_dims: dict[str, int],
        speech_layers: int = 0,
        frame_strides: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = tuple(input_dims)
        self.frame_strides = {m: (frame_strides or {}).get(m, 1) for m in self.modalities}
        self.speech_layer_sum = LayerWeightedSum(speech_layers) if speech_layers else None
        self.masking = InputMasking()
        self.normalizers = nn.ModuleDict(
            {
                m: FeatureNormalizer(
                    (speech_layers, d) if m == "speech" and speech_layers else (d,)
                )
                for m, d in input_dims.items()
            }
        )

    def set_statistics(self, modality: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Normalise ``modality`` with these training-split statistics from now on."""
        normalizer = self.normalizers[modality]
        assert isinstance(normalizer, FeatureNormalizer)
        normalizer.set_statistics(mean, std)

    def statistics(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(mean, std)`` that normalise ``modality``."""
        normalizer = self.normalizers[modality]
        assert isinstance(normalizer, FeatureNormalizer)
        return normalizer.mean, normalizer.std

    def forward(
        self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per modality ``(B, T', D)`` features and ``(B, T')`` masks."""
        out, out_masks = {}, {}
        for m in self.modalities:
            x = self.normalizers[m](features[m])
            if m == "speech" and self.speech_layer_sum is not None:
                x = self.speech_layer_sum(x)  # (B, T, L, D) -> (B, T, D)
            if m == "speech":
                x = self.masking(x, masks[m])
            out[m], out_masks[m] = downsample_frames(x, masks[m], self.frame_strides[m])
        return out, out_masks


class ModalityProjection(nn.Module):
    """FC to the hidden size, then LayerNorm to bring both modalities to one scale."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = self.norm(self.linear(x))
        return projected


class BiGRU(nn.Module):
    """One-layer bidirectional GRU over the real frames only, ``(B, T, h) -> (B, T, 2h)``.

    The backward direction reads each sequence reversed within its own length, so both directions
    see exactly the real frames (as with a packed sequence); padded outputs are zero. Two
    unidirectional GRUs on padded batches instead of one on a packed sequence: on a CPU, the packed
    path's backward pass costs O(T^2) (a full-size zero tensor per time step), about twice the time
    at T = 110 (BENCHMARKS.md).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.forward_gru = nn.GRU(hidden, hidden, batch_first=True)
        self.backward_gru = nn.GRU(hidden, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
        lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
        reverse = lengths - 1 - steps
        reverse = (
            torch.where(reverse >= 0, reverse, steps).unsqueeze(-1).expand_as(x)
        )  # an involution
        forward_out, _ = self.forward_gru(x)
        backward_out, _ = self.backward_gru(x.gather(1, reverse))
        out = torch.cat([forward_out, backward_out.gather(1, reverse)], dim=-1)  # (B, T, 2h)
        return out * mask.unsqueeze(-1).to(out.dtype)


class CrossModalAttention(nn.Module):
    """Queries from one modality attend to another's keys/values (the caller adds the residual)."""

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        attended: torch.Tensor = self.attention(
            query, context, context, key_padding_mask=~context_mask, need_weights=False
        )[0]
        return attended


class AttentionPooling(nn.Module):
    """w_i = softmax_i(r_i . m / sqrt(D)) over real frames; returns sum_i w_i r_i (paper eqs.
    3-4)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.randn(dim) * 0.02)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (x @ self.m) * self.scale  # (B, T)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1)
        return torch.einsum("bt,btd->bd", weights, x)


class AttentiveStatisticsPooling(nn.Module):
    """Attentive statistics pooling (Okabe et al., Interspeech 2018): frame scores
    e_t = v . tanh(W x_t + b), weights softmax over real frames, output [weighted mean ; weighted
    std]
    ``(B, T, D) -> (B, 2D)``."""

    def __init__(self, dim: int, attention_hidden: int = 128) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(dim, attention_hidden), nn.Tanh(), nn.Linear(attention_hidden, 1)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = (
            self.score(x).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(dim=1).unsqueeze(-1)
        )
        mean = (weights * x).sum(dim=1)
        variance = (weights * x.pow(2)).sum(dim=1) - mean.pow(2)
        return torch.cat([mean, variance.clamp(min=1e-6).sqrt()], dim=-1)


class ClassifierHead(nn.Module):
    """LayerNorm -> FC (the ``fused`` tap, before its ReLU) -> ReLU -> Dropout -> FC to the
    classes."""

    def __init__(self, input_dim: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden)
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, fused)``."""
        fused = self.fc1(self.norm(x))
        return self.out(fused), fused


class ContrastiveSupervisionLeg(nn.Module):
    """CSL: FC -> ReLU -> FC into the contrastive space (training only)."""

    def __init__(self, input_dim: int, hidden: int, output_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, output_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out
