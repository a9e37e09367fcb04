"""Weighted cross-entropy with inverse-frequency class weights (Crab paper, eq. 9: w_j = N / N_j).

The loss is PyTorch's weighted mean (sum_i w_{y_i} CE_i / sum_i w_{y_i}), so a constant factor on
the weights cancels: the paper's N / N_j and the reference code's N / (C N_j) give the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """w_j = N / N_j from integer training labels; a class absent from training gets weight 0."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, labels.numel() / counts.clamp(min=1), torch.zeros_like(counts))
    return weights


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of ``(B, C)`` logits against ``(B,)`` targets, weighted per class."""
    return F.cross_entropy(logits, targets, weight=weights)
