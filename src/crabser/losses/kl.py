"""KL divergence of the predicted distribution from soft targets (multi-loss learning, eq. 6):
sum_c y_c log(y_c / p_c), averaged over the batch; terms with y_c = 0 contribute 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_divergence(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL(y || softmax(logits)) of ``(B, C)`` logits and ``(B, C)`` soft targets (or ``(B,)``
    indices)."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    return F.kl_div(F.log_softmax(logits, dim=-1), targets, reduction="batchmean")
