"""Multi-Positive Contrastive Learning loss (Crab paper, eqs. 5-7).

For each anchor a in the batch, q is the softmax over the *other* items b of a.b / tau (embeddings
l2-normalised) and the target c is uniform over the other items with the anchor's label; the loss
is the cross-entropy H(c, q), averaged over anchors. An anchor without any positive in the batch has
no target distribution. The paper is silent on it; ``anchors="all"`` (the default) follows the
reference code: such an anchor contributes 0 and still counts in the mean, so the loss shrinks with
the share of anchors without a positive (a quarter of them at micro-batch 8 on MELD).
``anchors="with_positive"`` averages over the anchors that have one (crabser before 2026-12-02),
which keeps the term's scale, and so the effective alpha, independent of the batch make-up.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def multi_positive_contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 0.1,
    anchors: Literal["all", "with_positive"] = "all",
) -> torch.Tensor:
    """MPCL of ``(B, D)`` embeddings with ``(B,)`` integer labels, averaged over ``anchors`` (see
    the module docstring); 0 (with grad) if no anchor has a positive."""
    z = F.normalize(embeddings, dim=-1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (z @ z.T / tau).masked_fill(self_mask, float("-inf"))  # (B, B)
    log_q = F.log_softmax(logits, dim=1).masked_fill(self_mask, 0.0)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_positive = positives.sum(dim=1)
    has_positive = n_positive > 0
    if not has_positive.any():
        return embeddings.sum() * 0.0
    target = positives.float() / n_positive.clamp(min=1).unsqueeze(1)
    per_anchor = -(target * log_q).sum(dim=1)
    if anchors == "with_positive":
        return per_anchor[has_positive].mean()
    return per_anchor.masked_fill(~has_positive, 0.0).mean()
