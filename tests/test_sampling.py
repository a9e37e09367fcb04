"""Balanced batch samplers: the proportions they promise, and coverage of every item."""

import math
from collections import Counter

import numpy as np
import pytest

from crabser.data.sampling import (
    GroupBalancedBatchSampler,
    LengthBucketSampler,
    ShuffleBatchSampler,
    equal_share_sampler,
    neutral_expressive_sampler,
)

# an imbalanced set like MELD: class 0 (neutral) 47 %, class 4 2.7 %
LABELS = np.repeat(np.arange(7), [470, 120, 27, 170, 27, 70, 116]).tolist()


def _batches(sampler, epochs):
    return [batch for _ in range(epochs) for batch in sampler]


def test_class_balanced_batches_hold_every_class_alike():
    sampler = equal_share_sampler(LABELS, batch_size=28, seed=0)
    assert len(sampler) == math.ceil(len(LABELS) / 28)
    batches = _batches(sampler, 3)
    for batch in batches:
        assert len(batch) == 28 and len(set(batch)) == 28
        assert set(Counter(LABELS[i] for i in batch).values()) == {4}  # 28 / 7 exactly
    uneven = equal_share_sampler(LABELS, batch_size=32, seed=1)  # 32 / 7: 4 or 5 per class
    counts = Counter(LABELS[i] for batch in _batches(uneven, 20) for i in batch)
    shares = np.array([counts[c] for c in range(7)]) / sum(counts.values())
    assert np.allclose(shares, 1 / 7, atol=0.01)


def test_neutral_expressive_proportion_over_many_batches():
    sampler = neutral_expressive_sampler(
        LABELS, neutral=0, batch_size=16, neutral_share=0.3, seed=0
    )
    batches = _batches(sampler, 10)
    per_batch = [sum(LABELS[i] == 0 for i in b) for b in batches]
    assert set(per_batch) <= {4, 5}  # 0.3 x 16 = 4.8: never off by more than the rounding
    assert np.mean(per_batch) / 16 == pytest.approx(0.3, abs=0.01)


def test_no_item_repeats_before_its_group_is_covered():
    sampler = equal_share_sampler(LABELS, batch_size=28, seed=3)
    drawn = [i for batch in _batches(sampler, 5) for i in batch if LABELS[i] == 0]
    assert len(set(drawn[:470])) == 470  # all 470 neutral items, each once, before any repeats
    rare = [i for batch in _batches(sampler, 1) for i in batch if LABELS[i] == 4]
    assert Counter(Counter(rare).values()).keys() <= {
        math.floor(len(rare) / 27),
        math.ceil(len(rare) / 27),
    }


def test_a_share_for_an_empty_group_is_an_error():
    with pytest.raises(ValueError, match="no item"):
        GroupBalancedBatchSampler([0, 0, 1], 2, {0: 0.5, 2: 0.5})


def test_length_buckets_cover_every_item_once_and_group_similar_durations():
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 12.0, size=203).tolist()
    sampler = LengthBucketSampler(durations, batch_size=8, pool=10, seed=0)
    epoch1, epoch2 = list(sampler), list(sampler)
    for batches in (epoch1, epoch2):
        assert (
            sorted(i for b in batches for i in b) == list(range(203))
            and len(batches) == len(sampler) == 26
        )
    assert epoch1 != epoch2  # reshuffled every epoch
    spread = np.mean([np.ptp([durations[i] for i in b]) for b in epoch1 if len(b) > 1])
    random_spread = np.mean([np.ptp(rng.choice(durations, 8)) for _ in range(200)])
    assert spread < 0.3 * random_spread  # bucketing keeps padding small


def test_length_buckets_of_an_epoch_are_drawn_again_after_set_epoch():
    sampler = LengthBucketSampler(list(range(50)), batch_size=4, pool=2, seed=3)
    epochs = [list(sampler) for _ in range(3)]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1] and epochs[1] != epochs[2]


def test_unshuffled_length_buckets_are_one_sort_by_length():
    lengths = [5, 1, 4, 2, 3, 9, 0]
    batches = list(LengthBucketSampler(lengths, batch_size=3, shuffle=False))
    assert batches == [[6, 1, 3], [4, 2, 0], [5]]


def test_bucketed_training_batches_follow_the_config():
    from crabser.config import RunConfig
    from crabser.training.loaders import train_batch_sampler

    lengths = list(range(100, 0, -1))
    config = RunConfig().model_copy(deep=True)
    config.train.sampler, config.train.batch_size = "shuffle", 10
    plain = train_batch_sampler(config, [0] * 100, ["a"], lengths)
    assert isinstance(plain, ShuffleBatchSampler) and sorted(i for b in plain for i in b) == list(
        range(100)
    )
    config.train.sampler, config.train.bucket_pool, config.train.batch_size = (
        "length_bucketed",
        4,
        10,
    )
    sampler = train_batch_sampler(config, [0] * 100, ["a"], lengths)
    assert isinstance(sampler, LengthBucketSampler) and (sampler.pool, sampler.batch_size) == (
        4,
        10,
    )
    padded = np.mean([[max(lengths[i] for i in b) * len(b) for b in sampler] for _ in range(20)])
    rng = np.random.default_rng(0)
    shuffled = np.mean([max(rng.choice(lengths, 10, replace=False)) * 10 for _ in range(200)])
    assert padded < 0.85 * shuffled  # fewer padded frames than plain shuffling


def _samplers(**kwargs) -> dict:
    """One of each training batch sampler over LABELS (kwargs: num_replicas, rank)."""
    lengths = np.random.default_rng(0).uniform(1, 10, len(LABELS)).tolist()
    return {
        "length_bucketed": LengthBucketSampler(lengths, 32, pool=4, seed=1, **kwargs),
        "class_balanced": GroupBalancedBatchSampler(
            LABELS, 28, {y: 1.0 for y in range(7)}, seed=1, **kwargs
        ),
        "neutral_expressive": GroupBalancedBatchSampler(
            [int(y == 0) for y in LABELS], 16, {0: 0.5, 1: 0.5}, seed=1, **kwargs
        ),
        "shuffle": ShuffleBatchSampler(len(LABELS), 32, seed=1, **kwargs),
    }


@pytest.mark.parametrize(
    "kind", ["length_bucketed", "class_balanced", "neutral_expressive", "shuffle"]
)
def test_any_epoch_is_drawn_again_after_set_epoch(kind):
    """A resumed run (a fresh sampler set to epoch k) draws what the running one drew at epoch k."""
    running = _samplers()[kind]
    epochs = [list(running) for _ in range(4)]
    assert epochs[2] != epochs[3]
    for epoch in (3, 1, 2):  # forwards and backwards
        fresh = _samplers()[kind]
        fresh.set_epoch(epoch)
        assert list(fresh) == epochs[epoch]
        running.set_epoch(epoch)
        assert list(running) == epochs[epoch]


def test_lightning_sets_the_epoch_of_our_batch_samplers():
    """Lightning calls set_epoch on ``loader.sampler`` and ``loader.batch_sampler.sampler`` only."""
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    for sampler in _samplers().values():
        _set_sampler_epoch(DataLoader(range(len(LABELS)), batch_sampler=sampler), 5)
        assert sampler.epoch == 5


@pytest.mark.parametrize("replicas", [2, 3, 4])
@pytest.mark.parametrize(
    "kind", ["length_bucketed", "class_balanced", "neutral_expressive", "shuffle"]
)
def test_ranks_share_each_epoch_exactly_with_as_many_steps_each(kind, replicas):
    """Over all ranks: the single process's epoch, every item as often (once for the epoch-covering
    samplers), no padding; every rank takes the same number of steps, as DDP needs."""
    single = _samplers()[kind]
    whole = [list(single) for _ in range(2)]
    ranks = [_samplers(num_replicas=replicas, rank=rank)[kind] for rank in range(replicas)]
    for epoch in range(2):
        shares = [list(sampler) for sampler in ranks]
        assert {len(share) for share in shares} == {len(ranks[0])}
        assert Counter(i for share in shares for b in share for i in b) == Counter(
            i for b in whole[epoch] for i in b
        )
        if kind in ("length_bucketed", "shuffle"):
            assert sorted(i for share in shares for b in share for i in b) == list(
                range(len(LABELS))
            )


def test_too_few_items_for_the_ranks_is_an_error():
    with pytest.raises(ValueError, match="cannot give each of 4 processes a batch"):
        list(ShuffleBatchSampler(3, 8, num_replicas=4, rank=0))


def test_the_feature_data_module_shuffles_resumably_without_a_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from crabser.training.datamodule import FeatureDataModule, Utterance

    items = [
        Utterance(f"u{i}", {"text": np.zeros((2, 3), dtype=np.float32)}, i % 2) for i in range(20)
    ]
    loaders = [
        FeatureDataModule({"train": items, "val": items}, batch_size=4, seed=5).train_dataloader()
        for _ in range(2)
    ]
    running = [[batch["ids"] for batch in loaders[0]] for _ in range(3)]
    _set_sampler_epoch(loaders[1], 2)  # a resumed run: Lightning sets the epoch
    assert [batch["ids"] for batch in loaders[1]] == running[2] != running[1]
    assert sorted(i for batch in running[2] for i in batch) == sorted(u.id for u in items)
