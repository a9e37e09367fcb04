"""Focal loss (Lin et al., ICCV 2017): FL = -w_y (1 - p_y)^gamma log p_y.

Used by FocalSER and by the multi-loss learning recipe to down-weight the easy, frequent classes.
With per-class weights the mean is weighted like PyTorch's weighted cross-entropy
(sum_i w_{y_i} FL_i / sum_i w_{y_i}), so gamma = 0 gives exactly :func:`weighted_cross_entropy`.
``targets`` may also be soft labels ``(B, C)`` (mixup): FL = -sum_c y_c (1 - p_c)^gamma log p_c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss of ``(B, C)`` logits against ``(B,)`` class indices or ``(B, C)`` soft targets."""
    log_p = F.log_softmax(logits, dim=-1)
    soft = targets if targets.ndim == 2 else F.one_hot(targets, logits.shape[-1]).to(log_p.dtype)
    per_class = -soft * (1.0 - log_p.exp()).pow(gamma) * log_p  # (B, C)
    if weights is not None:
        per_class = per_class * weights
        return per_class.sum() / (soft * weights).sum().clamp(min=1e-12)
    return per_class.sum(dim=1).mean()
