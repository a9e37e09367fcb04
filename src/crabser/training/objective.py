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

``soft_margin_weight`` > 0 adds StackingSER's neutral-vs-expressive soft-margin term (a one-output
head on the ``fused`` tap, training only) to the classification loss.

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

from crabser.config import saved_section
from crabser.losses import (
    focal_loss,
    multi_positive_contrastive_loss,
    supervised_contrastive_loss,
    weighted_cross_entropy,
)
from crabser.losses.center import center_loss
from crabser.losses.kl import kl_divergence
from crabser.losses.soft_margin import neutral_soft_margin_loss
from crabser.models.base import ModelOutput
from crabser.models.blocks import ContrastiveSupervisionLeg

FINAL_TAP = "fused"
Mix = tuple[
    torch.Tensor, torch.Tensor
]  # waveform mixup (EAM): the mixed-in labels and their weights


def soft_targets(output: ModelOutput, labels: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """Class indices, or soft labels ``(B, C)`` when the model (MixUp) or the data (EAM) mixed the
    batch: y = (1 - lambda) y_i + lambda y_j."""
    if output.mixup is None and mix is None:
        return labels
    one_hot = torch.nn.functional.one_hot(labels, output.logits.shape[-1]).to(output.logits.dtype)
    targets = one_hot
    if mix is not None:
        other, lam = mix
        lam = lam.to(one_hot.dtype).unsqueeze(-1)
        targets = (1.0 - lam) * targets + lam * torch.nn.functional.one_hot(
            other, one_hot.shape[-1]
        ).to(one_hot.dtype)
    if output.mixup is not None:
        permutation, weight = output.mixup
        targets = weight * targets + (1.0 - weight) * targets[permutation]
    return targets


@dataclass
class LossParts:
    """The total loss and its parts (for logging); ``legs`` is None without legs."""

    total: torch.Tensor
    classification: torch.Tensor
    legs: torch.Tensor | None


class TrainingObjective(nn.Module):
    """Classification loss + ``alpha`` * mean leg loss over the chosen taps."""

    class_weights: torch.Tensor | None  #: a buffer (saved with the model)

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
        mpcl_anchors: Literal["all", "with_positive"] = "all",
        leg_dim: int = 512,
        leg_hidden_unimodal: int = 256,
        leg_hidden: int = 512,
        soft_margin_weight: float = 0.0,
        neutral_index: int | None = None,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.focal_gamma = focal_gamma
        self.leg_loss = leg_loss
        self.supcon_variant = supcon_variant
        self.alpha = alpha
        self.tau = tau
        self.mpcl_anchors = mpcl_anchors
        self.register_buffer("class_weights", class_weights, persistent=True)
        taps = {
            "all": dict(tap_dims),
            "final": {FINAL_TAP: tap_dims.get(FINAL_TAP, 0)},
            "none": {},
        }[legs]
        if any(dim == 0 for dim in taps.values()):
            raise ValueError(f"the model has no {FINAL_TAP!r} tap for legs: final")
        output_dim = num_classes if leg_loss == "ce" else leg_dim
        self.legs = nn.ModuleDict(
            {
                name: ContrastiveSupervisionLeg(
                    dim,
                    leg_hidden_unimodal if name.endswith("_unimodal") else leg_hidden,
                    output_dim,
                )
                for name, dim in taps.items()
            }
        )
        # StackingSER's neutral-vs-expressive head on the classifier's tap (training only)
        self.soft_margin_weight = soft_margin_weight
        self.neutral_index = neutral_index
        self.margin_head = None
        if soft_margin_weight > 0:
            if neutral_index is None or FINAL_TAP not in tap_dims:
                raise ValueError(
                    f"the soft-margin loss needs a neutral class and the model's {FINAL_TAP!r} tap"
                )
            self.margin_head = nn.Linear(tap_dims[FINAL_TAP], 1)

    @property
    def wants_taps(self) -> bool:
        """Whether the model must return its taps in training."""
        return bool(len(self.legs)) or self.margin_head is not None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups of its own (none: the legs train at the head's LR)."""
        return []

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
        return multi_positive_contrastive_loss(embedding, labels, self.tau, self.mpcl_anchors)

    def forward(
        self, output: ModelOutput, labels: torch.Tensor, mix: Mix | None = None
    ) -> LossParts:
        targets = soft_targets(output, labels, mix)
        if output.mixup is not None and len(self.legs):
            raise ValueError(
                "supervision legs need unmixed batches: use loss.legs: none with model.mixup_alpha"
            )
        classification = self.classification_loss(output.logits, targets)
        if self.margin_head is not None:
            scores = self.margin_head(output.taps[FINAL_TAP]).squeeze(-1)
            neutral = cast(int, self.neutral_index)  # a margin head has a neutral class
            classification = classification + self.soft_margin_weight * neutral_soft_margin_loss(
                scores, labels, neutral
            )
        if not len(self.legs):
            return LossParts(classification, classification, None)
        # under EAM the legs see each utterance's own label: its weight 1 - lambda is always > 1/2
        terms = [self.leg_term(leg(output.taps[name]), labels) for name, leg in self.legs.items()]
        leg_mean = torch.stack(terms).mean()
        return LossParts(classification + self.alpha * leg_mean, classification, leg_mean)


class MultiLossObjective(nn.Module):
    """The multi-loss learning objective (eq. 11): w1 KL + w2 focal on the (soft) labels, w3 center
    loss on the model's ``center`` tap, w4 SupCon over the batch's frames (each frame carries its
    utterance's dominant label).

    The centres are a parameter with their own learning rate (:meth:`parameter_groups`). The frame
    SupCon normalises the embeddings (as Khosla et al.) and, above ``max_frames`` frames, uses a
    random sample of them: the similarity matrix grows with (B x T)^2. The paper gives no loss
    weights (all 1 here) and no temperature (``tau``, 0.1 here).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        focal_gamma: float = 2.0,
        tau: float = 0.1,
        center_lr: float = 5e-3,
        max_frames: int = 4096,
    ) -> None:
        super().__init__()
        self.weights = tuple(weights)
        self.focal_gamma = focal_gamma
        self.tau = tau
        self.center_lr = center_lr
        self.max_frames = max_frames
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.1)
        self.legs = (
            nn.ModuleDict()
        )  # no supervision legs: the model needs its taps for the center loss

    @property
    def wants_taps(self) -> bool:
        return True

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The centres' own optimiser group."""
        return [
            {"params": [self.centers], "lr": self.center_lr, "name": "centers", "weight_decay": 0.0}
        ]

    def frame_supcon(
        self, frames: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """SupCon over every real frame of the batch, labelled with its utterance's label."""
        flat = frames[mask]  # (N, e)
        frame_labels = labels.unsqueeze(1).expand_as(mask)[mask]
        if len(flat) > self.max_frames:
            keep = torch.randperm(len(flat), device=flat.device)[: self.max_frames]
            flat, frame_labels = flat[keep], frame_labels[keep]
        return supervised_contrastive_loss(flat, frame_labels, self.tau)

    def forward(
        self, output: ModelOutput, labels: torch.Tensor, mix: Mix | None = None
    ) -> LossParts:
        if output.frames is None or "center" not in output.taps:
            raise ValueError(
                "the multi-loss objective needs model.name: mll (center and frame embeddings)"
            )
        targets = soft_targets(output, labels, mix)
        dominant = labels  # EAM keeps each utterance's own label above 1/2 (lambda < 1/2)
        w_kl, w_focal, w_center, w_supcon = self.weights
        classification = w_kl * kl_divergence(output.logits, targets) + w_focal * focal_loss(
            output.logits, targets, self.focal_gamma
        )
        auxiliary = w_center * center_loss(output.taps["center"], dominant, self.centers)
        auxiliary = auxiliary + w_supcon * self.frame_supcon(*output.frames, dominant)
        return LossParts(classification + auxiliary, classification, auxiliary)


def build_objective(
    loss: Mapping[str, Any],
    model: Mapping[str, Any],
    tap_dims: dict[str, int],
    class_weights: torch.Tensor | None,
    num_classes: int,
    neutral_index: int | None = None,
) -> TrainingObjective | MultiLossObjective:
    """The objective of a run from its ``loss`` and ``model`` settings (dumps of the sections, as
    a checkpoint saves them; completed by :func:`crabser.config.saved_section`)."""
    loss = saved_section("loss", loss).model_dump()
    model = saved_section("model", model).model_dump()
    if loss["name"] == "multi_loss":
        return MultiLossObjective(
            num_classes,
            model["embedding_dim"],
            tuple(loss["multi_loss_weights"]),
            loss["focal_gamma"],
            loss["tau"],
            loss["center_lr"],
            loss["max_frames"],
        )
    return TrainingObjective(
        tap_dims,
        class_weights,
        num_classes,
        classifier=loss["classifier"],
        focal_gamma=loss["focal_gamma"],
        legs=loss["legs"],
        leg_loss=loss["leg_loss"],
        supcon_variant=loss["supcon_variant"],
        alpha=loss["alpha"],
        tau=loss["tau"],
        mpcl_anchors=loss["mpcl_anchors"],
        leg_dim=model["leg_dim"],
        leg_hidden_unimodal=model["leg_hidden_unimodal"],
        leg_hidden=model["leg_hidden"],
        soft_margin_weight=loss["soft_margin_weight"],
        neutral_index=neutral_index,
    )
