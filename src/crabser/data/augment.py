"""Waveform augmentation: energy-adaptive mixup (EAM; multi-loss learning paper, section 2.2).

A segment of another utterance j, shorter than half of utterance i, is scaled to a random SNR
(in [-5, 10] dB) against the segment of i it is laid over, and added there (eqs. 1-3). The soft
label weight of j is its energy share times its temporal coverage (eq. 4):
lambda = P''_j / (P'_i + P''_j) * l_mix / l_i, y = (1 - lambda) y_i + lambda y_j.
The paper leaves the mix length's distribution open: we draw it uniformly from
[1, min(l_i, l_j) // 2) samples (at least one sample; "under half the length" of i).
"""

from __future__ import annotations

import numpy as np


def energy_adaptive_mixup(
    x_i: np.ndarray,
    x_j: np.ndarray,
    rng: np.random.Generator,
    snr_db: tuple[float, float] = (-5.0, 10.0),
) -> tuple[np.ndarray, float]:
    """``(x_mix, lambda)``: ``x_i`` with an SNR-scaled segment of ``x_j`` added; ``lambda`` weighs
    ``y_j``."""
    length = min(len(x_i), len(x_j)) // 2
    if length < 2:
        return x_i.copy(), 0.0
    l_mix = int(rng.integers(1, length))
    s_i = int(rng.integers(0, len(x_i) - l_mix + 1))
    s_j = int(rng.integers(0, len(x_j) - l_mix + 1))
    seg_i, seg_j = x_i[s_i : s_i + l_mix], x_j[s_j : s_j + l_mix]
    p_i, p_j = (
        float(np.mean(seg_i.astype(np.float64) ** 2)),
        float(np.mean(seg_j.astype(np.float64) ** 2)),
    )
    if p_i <= 0.0 or p_j <= 0.0:  # silence on either side: nothing sensible to mix
        return x_i.copy(), 0.0
    snr = float(rng.uniform(*snr_db))
    scale = np.sqrt(p_i / (10.0 ** (snr / 10.0) * p_j))  # eq. 1
    mixed = x_i.copy()
    mixed[s_i : s_i + l_mix] = seg_i + scale * seg_j  # eqs. 2-3
    p_j_scaled = scale**2 * p_j
    lam = p_j_scaled / (p_i + p_j_scaled) * l_mix / len(x_i)  # eq. 4
    return mixed.astype(x_i.dtype), float(lam)
