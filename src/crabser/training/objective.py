"""The training objective of Crab: weighted CE + alpha * mean MPCL over the CSL legs (paper eq. 8).

The Contrastive Supervision Legs are owned here, not by the model, because they exist only for
training: a saved Crab carries no leg parameters and spends nothing on them at inference.
Leg sizes follow the reference code: hidden 256 for the two unimodal legs, 512 for the others,
all projecting to 512.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crabser.losses import multi_positive_contrastive_loss, weighted_cross_entropy
from crabser.models.blocks import ContrastiveSupervisionLeg
from crabser.models.crab import CrabOutput


@dataclass
class LossParts:
    """The total loss and its parts (for logging)."""

    total: torch.Tensor
    ce: torch.Tensor
    mlcs: torch.Tensor | None


class MLCSObjective(nn.Module):
    """Weighted CE on the logits plus, if legs are given, alpha times the mean MPCL of the legs."""

    def __init__(
        self,
        tap_dims: dict[str, int],
        class_weights: torch.Tensor | None,
        mlcs: bool = True,
        alpha: float = 2.0,
        tau: float = 0.1,
        leg_dim: int = 512,
        leg_hidden_unimodal: int = 256,
        leg_hidden: int = 512,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.tau = tau
        self.register_buffer("class_weights", class_weights, persistent=True)
        self.legs = nn.ModuleDict()
        if mlcs:
            for name, dim in tap_dims.items():
                hidden = leg_hidden_unimodal if name.endswith("_unimodal") else leg_hidden
                self.legs[name] = ContrastiveSupervisionLeg(dim, hidden, leg_dim)

    def forward(self, output: CrabOutput, labels: torch.Tensor) -> LossParts:
        ce = weighted_cross_entropy(output.logits, labels, self.class_weights)
        if not len(self.legs):
            return LossParts(ce, ce, None)
        terms = [
            multi_positive_contrastive_loss(leg(output.taps[name]), labels, self.tau)
            for name, leg in self.legs.items()
        ]
        mlcs = torch.stack(terms).mean()
        return LossParts(ce + self.alpha * mlcs, ce, mlcs)
