"""Batch samplers: batches of similar length, and batches of a fixed make-up (class-balanced, and
neutral vs. expressive).

Length bucketing (:class:`LengthBucketSampler`) cuts the padding in a batch, so the recurrent and
attention layers run over fewer empty frames; its ``pool`` sets how far the batches stay random
(small pools: close to plain shuffling; one pool for the whole epoch: batches sorted by length).

StackingSER balances its batches (about 50 % neutral, 50 % expressive; or every class alike) with
weighted random sampling with replacement. We balance by construction instead: each group (a
class, or neutral / expressive) is a queue of its items in a fresh random order, refilled when it
runs out, and each batch takes its share from every queue. So every batch holds the promised
proportions (up to rounding, spread at random over the batches), and within a group no item comes
back before all the others have been drawn: a group of n items with k places per batch is covered
in ceil(n / k) batches, and a batch repeats an item only if its group has fewer items than places.
An epoch is as many batches as plain shuffling would give.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class GroupBalancedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices with ``proportions[g]`` of them from group ``g``."""

    def __init__(
        self, groups: Sequence[int], batch_size: int, proportions: dict[int, float], seed: int = 0,
        batches_per_epoch: int | None = None,
    ) -> None:
        self.groups = np.asarray(groups)
        missing = [g for g in proportions if proportions[g] > 0 and not np.any(self.groups == g)]
        if missing:
            raise ValueError(f"groups {missing} have a share of the batch but no item")
        total = sum(proportions.values())
        self.proportions = {g: p / total for g, p in proportions.items() if p > 0}
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch or math.ceil(len(self.groups) / batch_size)
        self.rng = np.random.default_rng(seed)
        self.members = {g: np.flatnonzero(self.groups == g) for g in self.proportions}
        self.queues: dict[int, list[int]] = {g: [] for g in self.proportions}

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _counts(self) -> dict[int, int]:
        """Places per group in one batch: floors of the exact shares, the rest drawn by their remainders."""
        exact = {g: p * self.batch_size for g, p in self.proportions.items()}
        counts = {g: math.floor(v) for g, v in exact.items()}
        left = self.batch_size - sum(counts.values())
        if left:
            names = list(exact)
            remainders = np.array([exact[g] - counts[g] for g in names])
            for g in self.rng.choice(names, size=left, replace=False, p=remainders / remainders.sum()):
                counts[int(g)] += 1
        return counts

    def _take(self, group: int, count: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            if not self.queues[group]:  # a new round; this batch's items go last (items pop from the end)
                fresh = self.rng.permutation(self.members[group]).tolist()
                self.queues[group] = [i for i in fresh if i in taken] + [i for i in fresh if i not in taken]
            taken.append(self.queues[group].pop())
        return taken

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.batches_per_epoch):
            batch = [i for g, n in self._counts().items() for i in self._take(g, n)]
            yield self.rng.permutation(batch).tolist()


def class_balanced_sampler(labels: Sequence[int], batch_size: int, seed: int = 0) -> GroupBalancedBatchSampler:
    """Every class present gets the same share of each batch."""
    present = sorted({int(y) for y in labels})
    return GroupBalancedBatchSampler(labels, batch_size, {y: 1.0 for y in present}, seed)


def neutral_expressive_sampler(
    labels: Sequence[int], neutral: int, batch_size: int, neutral_share: float = 0.5, seed: int = 0
) -> GroupBalancedBatchSampler:
    """``neutral_share`` of each batch neutral (label index ``neutral``), the rest expressive (StackingSER: 50 %)."""
    groups = [0 if int(y) == neutral else 1 for y in labels]
    return GroupBalancedBatchSampler(groups, batch_size, {0: neutral_share, 1: 1.0 - neutral_share}, seed)


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, cut into pools of ``pool`` batches, sort each pool by
    length, batch it, and shuffle the batch order. Every index appears once per epoch; without
    ``shuffle`` the batches follow one sort by length (evaluation)."""

    def __init__(self, lengths: Sequence[float], batch_size: int, shuffle: bool = True, pool: int = 50, seed: int = 0) -> None:
        self.lengths, self.batch_size, self.shuffle, self.pool, self.seed = list(lengths), batch_size, shuffle, pool, seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch`` next (Lightning calls this, so a resumed run continues the
        same sequence); without it each pass draws the next epoch's."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        size = self.batch_size * self.pool if self.shuffle else max(len(order), 1)  # unshuffled: one pool
        batches = []
        for start in range(0, len(order), size):
            pool = sorted(order[start : start + size].tolist(), key=lambda i: self.lengths[i])
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        yield from batches
