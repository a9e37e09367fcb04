"""Weighted cross-entropy with inverse-frequency class weights (Crab paper, eq. 9: w_j = N / N_j).

The loss is PyTorch's weighted mean (sum_i w_{y_i} CE_i / sum_i w_{y_i}), so a constant factor on
the weights cancels: the paper's N / N_j and the reference code's N / (C N_j) give the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def inverse_frequency_weights(
    labels: torch.Tensor, num_classes: int, sample_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """w_j = N / N_j from integer training labels; a class absent from training gets weight 0.
    ``sample_weights`` counts each label by its weight instead of 1 (N = their sum): with 1 / (size
    of the item's corpus), N_j / N is class j's share of corpus-balanced batches."""
    if sample_weights is None:
        counts = torch.bincount(labels, minlength=num_classes).float()
        total = float(labels.numel())
    else:
        counts, total = (
            torch.bincount(labels, weights=sample_weights.float(), minlength=num_classes),
            float(sample_weights.sum()),
        )
    return torch.where(counts > 0, total / counts.clamp(min=1e-12), torch.zeros_like(counts))


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of ``(B, C)`` logits against ``(B,)`` targets, weighted per class."""
    return F.cross_entropy(logits, targets, weight=weights)
