"""Supervised contrastive loss (SupCon; Khosla et al., NeurIPS 2020), the ablation of Crab's table
IV.

For an anchor i with positives P(i) (same label, i excluded) and s_ia = z_i.z_a / tau over the other
items a:

- ``variant="out"`` (their eq. 2, the one they recommend): -1/|P(i)| sum_p log softmax_a(s_ia)_p.
  Per anchor this is exactly MPCL's cross-entropy against a uniform target over P(i); the two
  losses differ only in the anchors without a positive, which SupCon counts as 0 in the batch mean
  (as the widely used reference implementation does) while MPCL leaves them out.
- ``variant="in"`` (their eq. 3): -log(1/|P(i)| sum_p softmax_a(s_ia)_p), the log outside the sum.

``tau`` is the temperature; SupCon's own default is 0.07, Crab's MPCL uses 0.1 (set per run).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def supervised_contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 0.07,
    variant: Literal["out", "in"] = "out",
) -> torch.Tensor:
    """SupCon of ``(B, D)`` embeddings with ``(B,)`` labels, averaged over all B anchors."""
    z = F.normalize(embeddings, dim=-1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_q = F.log_softmax((z @ z.T / tau).masked_fill(self_mask, float("-inf")), dim=1)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_positive = positives.sum(dim=1)
    if variant == "out":
        per_anchor = -log_q.masked_fill(~positives, 0.0).sum(dim=1) / n_positive.clamp(min=1)
    elif variant == "in":
        per_anchor = (
            -torch.logsumexp(log_q.masked_fill(~positives, float("-inf")), dim=1)
            + n_positive.clamp(min=1).log()
        )
        per_anchor = per_anchor.masked_fill(n_positive == 0, 0.0)
    else:
        raise ValueError(f"variant must be 'out' or 'in', got {variant!r}")
    return per_anchor.mean()
