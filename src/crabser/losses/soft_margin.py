"""Soft-margin loss between neutral and expressive utterances (StackingSER): a one-output head
scores each utterance, target +1 for neutral and -1 for expressive, loss mean log(1 + exp(-y x))
(PyTorch's SoftMarginLoss); added to the weighted CE in training only."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def neutral_soft_margin_loss(
    scores: torch.Tensor, labels: torch.Tensor, neutral: int
) -> torch.Tensor:
    """Soft margin of ``(B,)`` scores with +1 for label ``neutral`` and -1 for every other label."""
    targets = torch.where(labels == neutral, 1.0, -1.0).to(scores.dtype)
    return F.soft_margin_loss(scores, targets)
