import numpy as np
import pytest
import torch

from crabser.data.augment import energy_adaptive_mixup
from crabser.losses.center import center_loss
from crabser.losses.kl import kl_divergence


class _FixedRng:
    """Returns the scripted draws in order (integers: mix length, s_i, s_j; uniform: SNR)."""

    def __init__(self, integers, snr):
        self._integers, self._snr = list(integers), snr

    def integers(self, low, high):
        value = self._integers.pop(0)
        assert low <= value < high
        return value

    def uniform(self, low, high):
        assert low <= self._snr <= high
        return self._snr


def test_eam_overlays_an_snr_scaled_segment_and_weighs_its_label():
    x_i = np.full(10, 2.0, dtype=np.float32)  # energy 4
    x_j = np.full(12, 1.0, dtype=np.float32)  # energy 1
    # mix length 4 at s_i = 3 (from x_j at 5), SNR 0 dB: scale = sqrt(4 / 1) = 2, P''_j = 4
    mixed, lam = energy_adaptive_mixup(x_i, x_j, _FixedRng([4, 3, 5], 0.0))
    assert mixed.tolist() == [2.0] * 3 + [4.0] * 4 + [2.0] * 3
    assert lam == pytest.approx(4 / (4 + 4) * 4 / 10)
    # at 10 dB the interference is a tenth of the energy: lambda = 0.4/4.4 * l_mix / l_i
    _, lam = energy_adaptive_mixup(x_i, x_j, _FixedRng([4, 3, 5], 10.0))
    assert lam == pytest.approx(0.4 / 4.4 * 0.4)


def test_eam_keeps_the_dominant_utterance_and_handles_silence():
    rng = np.random.default_rng(0)
    x_i, x_j = (
        rng.standard_normal(16000).astype(np.float32),
        rng.standard_normal(8000).astype(np.float32),
    )
    for _ in range(50):
        mixed, lam = energy_adaptive_mixup(x_i, x_j, rng)
        changed = np.flatnonzero(mixed != x_i)
        assert len(mixed) == len(x_i) and mixed.dtype == np.float32
        assert len(changed) < 4000 and 0.0 < lam < 0.25  # under half of the shorter clip
    silent, lam = energy_adaptive_mixup(x_i, np.zeros(8000, dtype=np.float32), rng)
    assert lam == 0.0 and np.array_equal(silent, x_i)


def test_kl_divergence_hand_computed():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    targets = torch.tensor([[0.5, 0.5, 0.0]])
    # 0.5 log(0.5/0.5) + 0.5 log(0.5/0.25) + 0 = 0.5 log 2
    assert kl_divergence(logits, targets).item() == pytest.approx(0.5 * np.log(2))
    assert kl_divergence(logits, torch.tensor([0])).item() == pytest.approx(np.log(2))


def test_center_loss_hand_computed():
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert center_loss(z, torch.tensor([0, 1]), centers).item() == pytest.approx((25 + 1) / 2)
