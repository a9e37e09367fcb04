"""Multi-loss learning SER (../shared/papers/multi-loss-learning-ser.md): SSL frames -> frame-level
attention module (FLAM) -> classifier, with a 64-d utterance embedding for the center loss and
64-d frame embeddings with context broadcasting for the frame-level SupCon loss (the losses are in
:class:`crabser.training.objective.MultiLossObjective`). Speech only, like the paper.

FLAM (section 2.3): F' = F + MSA(F) with 16 heads, then attention pooling with a learnt vector w,
f = sum_t softmax_t(F' w) f'_t. Context broadcasting (eq. 9): h~_t = (h_t + mean_m h_m) / 2 over the
real frames. Where the paper is silent: frames are first projected to ``hidden`` with LayerNorm
(so 16 heads divide any encoder width), the classifier is dropout + one linear layer, and the
frame embeddings are a linear projection of F'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from crabser.models.base import ModelOutput, SERModel
from crabser.models.blocks import AttentionPooling, ModalityProjection, masked_mean


class MultiLossSER(SERModel):
    """FLAM pooling over speech frames; utterance and frame embeddings for the auxiliary losses."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        heads: int = 16,
        attention_dropout: float = 0.1,
        embedding_dim: int = 64,
        **common: Any,
    ) -> None:
        """``common``: the :class:`~crabser.models.base.SERModel` arguments."""
        common.setdefault("hidden", 256)
        hidden = common["hidden"]
        if list(input_dims) != ["speech"]:
            raise ValueError(
                "the multi-loss model is speech only (model.modalities: [speech]), got "
                f"{list(input_dims)}"
            )
        if hidden % heads:
            raise ValueError(f"model.hidden ({hidden}) must be a multiple of model.heads ({heads})")
        super().__init__(input_dims, num_classes, **common)
        dropout = self.dropout
        self.embedding_dim = embedding_dim
        self.projection = ModalityProjection(input_dims["speech"], hidden)
        self.self_attention = nn.MultiheadAttention(
            hidden, heads, dropout=attention_dropout, batch_first=True
        )
        self.pooling = AttentionPooling(hidden)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        self.center_projection = nn.Linear(hidden, embedding_dim)
        self.frame_projection = nn.Linear(hidden, embedding_dim)

    def tap_dims(self) -> dict[str, int]:
        """Width of each tap point: the pooled utterance feature and its center-loss embedding."""
        return {"fused": self.hidden, "center": self.embedding_dim}

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        return_taps: bool = False,
    ) -> ModelOutput:
        inputs, frame_masks = self.input_stage(features, masks)
        x, mask = self.projection(inputs["speech"]), frame_masks["speech"]  # (B, T, h)
        attended, _ = self.self_attention(x, x, x, key_padding_mask=~mask, need_weights=False)
        frames = x + attended  # F' (B, T, h)
        pooled = self.pooling(frames, mask)  # f (B, h)
        logits = self.classifier(pooled)
        if not return_taps:
            return ModelOutput(logits)
        h = self.frame_projection(frames)  # (B, T, e)
        broadcast = 0.5 * (h + masked_mean(h, mask).unsqueeze(1))  # eq. 9
        taps = {"fused": pooled, "center": self.center_projection(pooled)}
        return ModelOutput(logits, taps, frames=(broadcast, mask))
