"""Losses: pure functions of tensors, each tested against hand-computed values."""

from crabser.losses.focal import focal_loss
from crabser.losses.mpcl import multi_positive_contrastive_loss
from crabser.losses.supcon import supervised_contrastive_loss
from crabser.losses.weighted_ce import inverse_frequency_weights, weighted_cross_entropy

__all__ = [
    "focal_loss",
    "inverse_frequency_weights",
    "multi_positive_contrastive_loss",
    "supervised_contrastive_loss",
    "weighted_cross_entropy",
]
