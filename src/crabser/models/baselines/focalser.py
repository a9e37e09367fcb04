"""FocalSER (the SER in Naturalistic Conditions challenge 2024 winner; Crab paper section IV-2):
a bimodal speech + text model fused by cross-attention and trained with focal loss.

The original is an ensemble over several SSL encoders; like the Crab paper we build one model on
the run's speech and text encoders. Its loss is a training setting, not part of the model:
``loss.classifier: focal`` (``loss.focal_gamma``, 2 by default as in Lin et al.), which
``configs/experiments/table2_*.yaml`` sets. The fusion block is our reading of "cross-attention
fusion": each modality is projected to ``hidden`` and attends to the other in a transformer
block (multi-head attention + residual + LayerNorm, feed-forward + residual + LayerNorm), then
masked mean pooling, concatenation and the classification head. Taps: ``<m>_pooled``, ``fused``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from crabser.models.base import ModelOutput, SERModel
from crabser.models.blocks import ClassifierHead, ModalityProjection, masked_mean


class CrossAttentionBlock(nn.Module):
    """Transformer block whose queries come from one sequence and keys/values from another."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        attended, _ = self.attention(
            query, context, context, key_padding_mask=~context_mask, need_weights=False
        )
        x = self.norm1(query + attended)
        out: torch.Tensor = self.norm2(x + self.feed_forward(x))
        return out


class FocalSER(SERModel):
    """Speech and text attend to each other; pooled, concatenated and classified."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        heads: int = 4,
        attention_dropout: float = 0.1,
        **common: Any,
    ) -> None:
        """``common``: the :class:`~crabser.models.base.SERModel` arguments."""
        if sorted(input_dims) != ["speech", "text"]:
            raise ValueError(
                f"FocalSER is bimodal (model.modalities: [speech, text]), got {list(input_dims)}"
            )
        super().__init__(input_dims, num_classes, **common)
        hidden, dropout = self.hidden, self.dropout
        self.projections = nn.ModuleDict(
            {m: ModalityProjection(d, hidden) for m, d in input_dims.items()}
        )
        self.cross = nn.ModuleDict(
            {m: CrossAttentionBlock(hidden, heads, attention_dropout) for m in self.modalities}
        )
        self.classifier = ClassifierHead(2 * hidden, hidden, num_classes, dropout)

    def tap_dims(self) -> dict[str, int]:
        """Width of each tap point."""
        return {**{f"{m}_pooled": self.hidden for m in self.modalities}, "fused": self.hidden}

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        return_taps: bool = False,
    ) -> ModelOutput:
        inputs, frame_masks = self.input_stage(features, masks)
        projected = {m: self.projections[m](inputs[m]) for m in self.modalities}  # (B, T_m, h)
        (a, b) = self.modalities
        other = {a: b, b: a}
        pooled = {
            m: masked_mean(
                self.cross[m](projected[m], projected[other[m]], frame_masks[other[m]]),
                frame_masks[m],
            )
            for m in self.modalities
        }
        logits, fused = self.classifier(torch.cat([pooled[m] for m in self.modalities], dim=-1))
        taps = (
            {**{f"{m}_pooled": pooled[m] for m in self.modalities}, "fused": fused}
            if return_taps
            else {}
        )
        return ModelOutput(logits, taps)
