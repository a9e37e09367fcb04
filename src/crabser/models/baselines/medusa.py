"""Medusa (SER in Naturalistic Conditions challenge 2025 winner; Crab paper section IV-4): deep
late-branch fusion of the modalities, trained with MixUp and weighted CE.

Like the Crab paper we evaluate one model, not the ensemble. Each modality is its own deep
branch (FC + LayerNorm, attentive statistics pooling, FC -> ReLU -> Dropout) and the branches
meet only at the end (concatenation, then the classification head). MixUp (Zhang et al. 2018)
with ``model.mixup_alpha`` > 0: in training, the batch's branch embeddings are mixed with a
shuffled copy, lambda ~ Beta(alpha, alpha), and the objective mixes the labels the same way.
Where Medusa mixes (inputs or embeddings) is not in the Crab paper; mixing the fixed-size branch
embeddings (manifold mixup) avoids mixing sequences of different lengths. Taps: ``<m>_pooled``
(branch embeddings, before mixing) and ``fused``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from crabser.models.base import ModelOutput, SERModel
from crabser.models.blocks import (
    AttentiveStatisticsPooling,
    ClassifierHead,
    ModalityProjection,
)


class Branch(nn.Module):
    """One modality's branch: frames -> one embedding ``(B, hidden)``."""

    def __init__(self, input_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.projection = ModalityProjection(input_dim, hidden)
        self.pooling = AttentiveStatisticsPooling(hidden)
        self.deep = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.deep(self.pooling(self.projection(x), mask))
        return out


class Medusa(SERModel):
    """Independent branches per modality, fused late; MixUp of the branch embeddings in training."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        num_classes: int,
        mixup_alpha: float = 0.0,
        **common: Any,
    ) -> None:
        """``common``: the :class:`~crabser.models.base.SERModel` arguments."""
        super().__init__(input_dims, num_classes, **common)
        hidden, dropout = self.hidden, self.dropout
        self.mixup_alpha = mixup_alpha
        self.branches = nn.ModuleDict(
            {m: Branch(d, hidden, dropout) for m, d in input_dims.items()}
        )
        self.classifier = ClassifierHead(
            hidden * len(self.modalities), hidden, num_classes, dropout
        )

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
        branches = {
            m: self.branches[m](inputs[m], frame_masks[m]) for m in self.modalities
        }  # (B, h) each
        joined = torch.cat([branches[m] for m in self.modalities], dim=-1)
        mixup = None
        if self.training and self.mixup_alpha > 0:
            lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            permutation = torch.randperm(len(joined), device=joined.device)
            joined = lam * joined + (1.0 - lam) * joined[permutation]
            mixup = (permutation, lam)
        logits, fused = self.classifier(joined)
        taps = (
            {**{f"{m}_pooled": branches[m] for m in self.modalities}, "fused": fused}
            if return_taps
            else {}
        )
        return ModelOutput(logits, taps, mixup)
