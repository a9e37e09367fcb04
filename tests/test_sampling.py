"""Balanced batch samplers: the proportions they promise, and coverage of every item."""

import math
from collections import Counter

import numpy as np
import pytest

from crabser.data.sampling import (
    GroupBalancedBatchSampler,
    class_balanced_sampler,
    neutral_expressive_sampler,
)

# an imbalanced set like MELD: class 0 (neutral) 47 %, class 4 2.7 %
LABELS = np.repeat(np.arange(7), [470, 120, 27, 170, 27, 70, 116]).tolist()


def _batches(sampler, epochs):
    return [batch for _ in range(epochs) for batch in sampler]


def test_class_balanced_batches_hold_every_class_alike():
    sampler = class_balanced_sampler(LABELS, batch_size=28, seed=0)
    assert len(sampler) == math.ceil(len(LABELS) / 28)
    batches = _batches(sampler, 3)
    for batch in batches:
        assert len(batch) == 28 and len(set(batch)) == 28
        assert set(Counter(LABELS[i] for i in batch).values()) == {4}  # 28 / 7 exactly
    uneven = class_balanced_sampler(LABELS, batch_size=32, seed=1)  # 32 / 7: 4 or 5 per class
    counts = Counter(LABELS[i] for batch in _batches(uneven, 20) for i in batch)
    shares = np.array([counts[c] for c in range(7)]) / sum(counts.values())
    assert np.allclose(shares, 1 / 7, atol=0.01)


def test_neutral_expressive_proportion_over_many_batches():
    sampler = neutral_expressive_sampler(LABELS, neutral=0, batch_size=16, neutral_share=0.3, seed=0)
    batches = _batches(sampler, 10)
    per_batch = [sum(LABELS[i] == 0 for i in b) for b in batches]
    assert set(per_batch) <= {4, 5}  # 0.3 x 16 = 4.8: never off by more than the rounding
    assert np.mean(per_batch) / 16 == pytest.approx(0.3, abs=0.01)


def test_no_item_repeats_before_its_group_is_covered():
    sampler = class_balanced_sampler(LABELS, batch_size=28, seed=3)
    drawn = [i for batch in _batches(sampler, 5) for i in batch if LABELS[i] == 0]
    assert len(set(drawn[:470])) == 470  # all 470 neutral items, each once, before any repeats
    rare = [i for batch in _batches(sampler, 1) for i in batch if LABELS[i] == 4]
    assert Counter(Counter(rare).values()).keys() <= {math.floor(len(rare) / 27), math.ceil(len(rare) / 27)}


def test_a_share_for_an_empty_group_is_an_error():
    with pytest.raises(ValueError, match="no item"):
        GroupBalancedBatchSampler([0, 0, 1], 2, {0: 0.5, 2: 0.5})
