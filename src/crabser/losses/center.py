"""Center loss (Wen et al., ECCV 2016) as the multi-loss learning paper writes it (eq. 8):
(1/B) sum_b ||z_b - c_{y_b}||^2, with the class centres a learnt parameter (their own LR)."""

from __future__ import annotations

import torch


def center_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor
) -> torch.Tensor:
    """Mean squared distance of ``(B, D)`` embeddings to their class's row of ``(C, D)`` centres."""
    return (embeddings - centers[labels]).pow(2).sum(dim=1).mean()
