"""Training objectives: a classification loss on the logits plus alpha times the mean auxiliary loss
of supervision legs at tap points of the model (Crab paper eq. 8 and its table IV ablations).

The settings (``LossConfig``) span the paper's rows:

==================  ==========  ========  ==========  ==============
row                 classifier  legs      leg_loss    class_weights
==================  ==========  ========  ==========  ==============
CE                  ce          none      (unused)    false
WCE                 ce          none      (unused)    true
CE + MPCL           ce          final     mpcl        true
MLS + CE            ce          all       ce          true
MLCS w/ SupCon      ce          all       supcon      true
MLCS (Crab)         ce          all       mpcl        true
FocalSER            focal       none      (unused)    true
==================  ==========  ========  ==========  ==============

``legs: final`` attaches one leg at the classifier's tap (``fused``, the first classifier layer's
output): contrastive learning "applied solely at the classifier block". ``leg_loss: ce`` makes each
leg a small classifier (FC -> ReLU -> FC to the classes) trained with the same (weighted) CE: the
paper's multi-layer supervision with CE, whose head shape it does not give — ours is the CSL's
shape with the classes as output.

The legs are owned here, not by the model, because they exist only for training: a saved model
carries no leg parameters and spends nothing on them at inference. Leg sizes follow the reference
code: hidden 256 for the unimodal legs, 512 for the others, all projecting to 512.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crabser.losses import (
    focal_loss,
    multi_positive_contrastive_loss,
    supervised_contrastive_loss,
    weighted_cross_entropy,
)
from crabser.models.blocks import ContrastiveSupervisionLeg
from crabser.models.crab import CrabOutput

FINAL_TAP = "fused"


@dataclass
class LossParts:
    """The total loss and its parts (for logging); ``legs`` is None without legs."""

    total: torch.Tensor
    classification: torch.Tensor
    legs: torch.Tensor | None


class TrainingObjective(nn.Module):
    """Classification loss + ``alpha`` * mean leg loss over the chosen taps."""

    def __init__(
        self,
        tap_dims: dict[str, int],
        class_weights: torch.Tensor | None,
        num_classes: int,
        classifier: Literal["ce", "focal"] = "ce",
        focal_gamma: float = 2.0,
        legs: Literal["all", "final", "none"] = "all",
        leg_loss: Literal["mpcl", "supcon", "ce"] = "mpcl",
        supcon_variant: Literal["out", "in"] = "out",
        alpha: float = 2.0,
        tau: float = 0.1,
        leg_dim: int = 512,
        leg_hidden_unimodal: int = 256,
        leg_hidden: int = 512,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.focal_gamma = focal_gamma
        self.leg_loss = leg_loss
        self.supcon_variant = supcon_variant
        self.alpha = alpha
        self.tau = tau
        self.register_buffer("class_weights", class_weights, persistent=True)
        taps = {"all": dict(tap_dims), "final": {FINAL_TAP: tap_dims.get(FINAL_TAP, 0)}, "none": {}}[legs]
        if any(dim == 0 for dim in taps.values()):
            raise ValueError(f"the model has no {FINAL_TAP!r} tap for legs: final")
        output_dim = num_classes if leg_loss == "ce" else leg_dim
        self.legs = nn.ModuleDict({
            name: ContrastiveSupervisionLeg(dim, leg_hidden_unimodal if name.endswith("_unimodal") else leg_hidden, output_dim)
            for name, dim in taps.items()
        })

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(Weighted) CE or focal loss; ``targets`` are class indices or soft labels ``(B, C)``."""
        if self.classifier == "focal":
            return focal_loss(logits, targets, self.focal_gamma, self.class_weights)
        if targets.ndim == 2:  # soft labels: focal with gamma 0 is CE, with the same weighted mean
            return focal_loss(logits, targets, 0.0, self.class_weights)
        return weighted_cross_entropy(logits, targets, self.class_weights)

    def leg_term(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The auxiliary loss of one leg's output."""
        if self.leg_loss == "ce":
            return self.classification_loss(embedding, labels)
        if self.leg_loss == "supcon":
            return supervised_contrastive_loss(embedding, labels, self.tau, self.supcon_variant)
        return multi_positive_contrastive_loss(embedding, labels, self.tau)

    def forward(self, output: CrabOutput, labels: torch.Tensor) -> LossParts:
        targets = labels
        if output.mixup is not None:  # the model mixed its batch: mix the labels the same way
            if len(self.legs):
                raise ValueError("supervision legs need unmixed batches: use loss.legs: none with model.mixup_alpha")
            permutation, lam = output.mixup
            one_hot = torch.nn.functional.one_hot(labels, output.logits.shape[-1]).to(output.logits.dtype)
            targets = lam * one_hot + (1.0 - lam) * one_hot[permutation]
        classification = self.classification_loss(output.logits, targets)
        if not len(self.legs):
            return LossParts(classification, classification, None)
        terms = [self.leg_term(leg(output.taps[name]), labels) for name, leg in self.legs.items()]
        leg_mean = torch.stack(terms).mean()
        return LossParts(classification + self.alpha * leg_mean, classification, leg_mean)
