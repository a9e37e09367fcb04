"""MemoCMT (Khan et al., Scientific Reports 2025; Crab paper section IV-3): a cross-modal
transformer over speech (HuBERT) and text (BERT) with min aggregation.

Following the authors' public code (tpnam0901/MemoCMT, read for facts, not copied): speech
queries attend to the text and text queries to the speech, each result goes through FC +
LayerNorm; the two sequences are concatenated along time, pass one self-attention, FC +
LayerNorm, and are aggregated over time (``model.aggregation``: min, the paper's best; mean; max);
then dropout, FC + LeakyReLU, FC to the classes. Their speech sequence is HuBERT's output
mean-pooled per audio segment; ours is the encoder's frames averaged in runs of
``model.speech_frame_stride``. Both modalities are first projected to ``hidden`` so encoders of
different widths fit (theirs are both 768-d). The paper trains with batch size 1 (no padding):
``configs/experiments/table2_*.yaml`` sets ``train.batch_size: 1``; the masks make a padded
batch compute the same function. Tap: ``fused`` (the aggregated vector).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from crabser.models.base import ModelOutput, SERModel
from crabser.models.blocks import ModalityProjection, masked_mean


def masked_aggregate(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Min, max or mean over the real positions of ``(B, T, D)``."""
    if how == "mean":
        return masked_mean(x, mask)
    fill = float("inf") if how == "min" else float("-inf")
    reduced = x.masked_fill(~mask.unsqueeze(-1), fill)
    return reduced.amin(dim=1) if how == "min" else reduced.amax(dim=1)


class MemoCMT(SERModel):
    """Cross-attention both ways, self-attention over the joined sequence, min aggregation."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        heads: int = 1,
        attention_dropout: float = 0.1,
        aggregation: Literal["min", "mean", "max"] = "min",
        **common: Any,
    ) -> None:
        """``common``: the :class:`~crabser.models.base.SERModel` arguments."""
        if sorted(input_dims) != ["speech", "text"]:
            raise ValueError(
                f"MemoCMT is bimodal (model.modalities: [speech, text]), got {list(input_dims)}"
            )
        super().__init__(input_dims, num_classes, **common)
        self.modalities = ("speech", "text")
        hidden, dropout = self.hidden, self.dropout
        self.aggregation = aggregation
        self.projections = nn.ModuleDict(
            {m: ModalityProjection(d, hidden) for m, d in input_dims.items()}
        )
        self.text_on_speech = nn.MultiheadAttention(
            hidden, heads, dropout=attention_dropout, batch_first=True
        )
        self.speech_on_text = nn.MultiheadAttention(
            hidden, heads, dropout=attention_dropout, batch_first=True
        )
        self.after_cross = nn.ModuleDict(
            {m: ModalityProjection(hidden, hidden) for m in self.modalities}
        )
        self.fusion_attention = nn.MultiheadAttention(
            hidden, heads, dropout=attention_dropout, batch_first=True
        )
        self.after_fusion = ModalityProjection(hidden, hidden)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(),
            nn.Linear(hidden, num_classes),
        )

    def tap_dims(self) -> dict[str, int]:
        """Width of each tap point."""
        return {"fused": self.hidden}

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        return_taps: bool = False,
    ) -> ModelOutput:
        inputs, frame_masks = self.input_stage(features, masks)
        s, t = (self.projections[m](inputs[m]) for m in self.modalities)
        s_mask, t_mask = frame_masks["speech"], frame_masks["text"]
        at_speech, _ = self.text_on_speech(
            s, t, t, key_padding_mask=~t_mask, need_weights=False
        )  # (B, Ts, h)
        at_text, _ = self.speech_on_text(
            t, s, s, key_padding_mask=~s_mask, need_weights=False
        )  # (B, Tt, h)
        joined = torch.cat(
            [self.after_cross["speech"](at_speech), self.after_cross["text"](at_text)], dim=1
        )
        joined_mask = torch.cat([s_mask, t_mask], dim=1)
        fused_seq, _ = self.fusion_attention(
            joined, joined, joined, key_padding_mask=~joined_mask, need_weights=False
        )
        fused = masked_aggregate(
            self.after_fusion(fused_seq), joined_mask, self.aggregation
        )  # (B, h)
        return ModelOutput(self.head(fused), {"fused": fused} if return_taps else {})
