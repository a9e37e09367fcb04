"""Crab: a bimodal cross-modal transformer head over speech frames and text tokens (paper III-B).

Reads top-down like the paper's figure 1::

    speech (B, Fs, Ds) --FC+LN--> (B, Fs, h) --biGRU--> S (B, Fs, 2h)
    text   (B, L, Dt)  --FC+LN--> (B, L, h)  --biGRU--> T (B, L, 2h)
    S' = S + Attn(q=S, kv=T)      T' = T + Attn(q=T, kv=S)        (one head each, residual)
    C  = [AttnPool(S') ; AttnPool(T')]                            (B, 4h)
    logits = FC(ReLU(FC(LayerNorm(C))))                           (B, classes)

``forward(..., return_taps=True)`` also returns the five representations where MLCS attaches its
Contrastive Supervision Legs; the legs themselves live in the training objective
(:class:`crabser.training.objective.MLCSObjective`), so a trained Crab has no leg parameters and
no leg cost at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from crabser.models.blocks import (
    AttentionPooling,
    BiGRU,
    CrossModalAttention,
    LayerWeightedSum,
    ModalityProjection,
    downsample_frames,
    masked_mean,
)

TAP_NAMES = ("speech_unimodal", "text_unimodal", "speech_pooled", "text_pooled", "fused")


@dataclass
class CrabOutput:
    """Logits and, when asked for, the MLCS tap points (name -> ``(B, dim)``)."""

    logits: torch.Tensor
    taps: dict[str, torch.Tensor] = field(default_factory=dict)


class Crab(nn.Module):
    """The Crab head.

    ``speech_layers`` > 0 adds a learnable weighted sum over encoder layers (input ``(B, Fs, L, Ds)``).
    ``speech_frame_stride`` > 1 averages runs of speech frames before the projection (not in the
    paper, which runs the bi-GRU at the encoder's 50 Hz; a CPU budget option, 1 = the paper).
    """

    def __init__(
        self,
        speech_dim: int,
        text_dim: int,
        num_classes: int,
        hidden: int = 512,
        heads: int = 1,
        dropout: float = 0.5,
        attention_dropout: float = 0.5,
        unimodal_leg_input: str = "gru",
        speech_layers: int = 0,
        speech_frame_stride: int = 1,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.unimodal_leg_input = unimodal_leg_input
        self.speech_frame_stride = speech_frame_stride
        self.speech_layer_sum = LayerWeightedSum(speech_layers) if speech_layers else None
        # unimodal block
        self.speech_projection = ModalityProjection(speech_dim, hidden)
        self.text_projection = ModalityProjection(text_dim, hidden)
        self.speech_gru = BiGRU(hidden)
        self.text_gru = BiGRU(hidden)
        # cross-modal block
        self.speech_to_text = CrossModalAttention(2 * hidden, heads, attention_dropout)
        self.text_to_speech = CrossModalAttention(2 * hidden, heads, attention_dropout)
        self.speech_pooling = AttentionPooling(2 * hidden)
        self.text_pooling = AttentionPooling(2 * hidden)
        # classifier block
        self.classifier_norm = nn.LayerNorm(4 * hidden)
        self.classifier_fc1 = nn.Linear(4 * hidden, hidden)
        self.classifier_out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def tap_dims(self) -> dict[str, int]:
        """Width of each MLCS tap point."""
        unimodal = 2 * self.hidden if self.unimodal_leg_input == "gru" else self.hidden
        return {
            "speech_unimodal": unimodal,
            "text_unimodal": unimodal,
            "speech_pooled": 2 * self.hidden,
            "text_pooled": 2 * self.hidden,
            "fused": self.hidden,
        }

    def forward(
        self,
        speech: torch.Tensor,
        speech_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        return_taps: bool = False,
    ) -> CrabOutput:
        if self.speech_layer_sum is not None:
            speech = self.speech_layer_sum(speech)  # (B, Fs, L, Ds) -> (B, Fs, Ds)
        speech, speech_mask = downsample_frames(speech, speech_mask, self.speech_frame_stride)
        speech_h = self.speech_projection(speech)  # (B, Fs, h)
        text_h = self.text_projection(text)  # (B, L, h)
        speech_seq = self.speech_gru(speech_h, speech_mask)  # (B, Fs, 2h)
        text_seq = self.text_gru(text_h, text_mask)  # (B, L, 2h)

        speech_cross = self.speech_to_text(speech_seq, text_seq, text_mask)  # (B, Fs, 2h)
        text_cross = self.text_to_speech(text_seq, speech_seq, speech_mask)  # (B, L, 2h)
        speech_pooled = self.speech_pooling(speech_cross, speech_mask)  # (B, 2h)
        text_pooled = self.text_pooling(text_cross, text_mask)  # (B, 2h)

        fused = self.classifier_fc1(self.classifier_norm(torch.cat([speech_pooled, text_pooled], dim=-1)))
        logits = self.classifier_out(fused)  # (B, classes)
        if not return_taps:
            return CrabOutput(logits)
        speech_uni, text_uni = (speech_seq, text_seq) if self.unimodal_leg_input == "gru" else (speech_h, text_h)
        taps = {
            "speech_unimodal": masked_mean(speech_uni, speech_mask),
            "text_unimodal": masked_mean(text_uni, text_mask),
            "speech_pooled": speech_pooled,
            "text_pooled": text_pooled,
            "fused": fused,
        }
        return CrabOutput(logits, taps)
