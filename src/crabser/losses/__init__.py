"""Losses: pure functions of tensors, each tested against hand-computed values."""

from crabser.losses.mpcl import multi_positive_contrastive_loss
from crabser.losses.weighted_ce import inverse_frequency_weights, weighted_cross_entropy

__all__ = ["multi_positive_contrastive_loss", "inverse_frequency_weights", "weighted_cross_entropy"]
