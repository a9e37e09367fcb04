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

Epochs and resuming. Every sampler here draws an epoch's batches as a function of its seed and the
epoch number alone, so a run resumed from a checkpoint draws the same batches as one that never
stopped. Lightning calls ``set_epoch`` only on ``loader.sampler`` and
``loader.batch_sampler.sampler``,
never on a batch sampler itself, so each batch sampler names itself as its ``sampler``: Lightning
then sets the epoch before every training epoch, a resumed one included. The balanced samplers keep
their queues across epochs, so ``set_epoch`` to another epoch than the next one replays the epochs
before it from the seed (index arithmetic only: milliseconds for thousands of items).

Several processes (DDP). When ``torch.distributed`` is initialised (or ``num_replicas`` / ``rank``
are given), every rank draws the same epoch's batches from the same seed and keeps a disjoint share:
batches ``rank``, ``rank + R``, ``rank + 2R`` ... of ``R`` ranks (:func:`shard_batches`). DDP needs
the same number of steps on every rank, so when the batch count is not a multiple of ``R`` the
largest batches are cut in two until it is (rather than repeating items as ``DistributedSampler``
does): over all ranks, every item of the single-process epoch comes exactly once. ``batch_size`` is
per process, as in Lightning (``R`` processes train on ``R`` batches per step).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def world() -> tuple[int, int]:
    """``(number of processes, this process's rank)`` of the initialised process group, else ``(1,
    0)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def shard_batches(batches: list[list[int]], replicas: int, rank: int) -> list[list[int]]:
    """This rank's share of an epoch's batches: every ``replicas``-th from ``rank`` on, after
    cutting the largest batches in two until the count is a multiple of ``replicas`` (every rank
    then takes as many steps, and no item is repeated or dropped)."""
    if replicas <= 1:
        return batches
    batches = list(batches)
    while len(batches) % replicas:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            raise ValueError(
                f"{sum(map(len, batches))} items cannot give each of {replicas} processes a batch: "
                "train fewer processes (train.devices) or on more data"
            )
        batch = batches[largest]
        batches[largest : largest + 1] = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
    return batches[rank::replicas]


class EpochBatchSampler(Sampler[list[int]]):
    """A batch sampler whose epoch is set by Lightning and whose batches are shared among ranks.

    Subclasses give :meth:`epoch_batches` (all ranks' batches of ``self.epoch``); iterating yields
    this rank's share and moves on to the next epoch. ``num_replicas`` / ``rank``: None = from
    ``torch.distributed`` when it is initialised (read at each epoch), else one process.
    """

    def __init__(
        self, seed: int = 0, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        self.seed, self.epoch = seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    @property
    def sampler(self) -> EpochBatchSampler:
        """Itself: where Lightning looks for ``set_epoch`` (``loader.batch_sampler.sampler``)."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch`` next (Lightning calls this before every training epoch)."""
        self.epoch = epoch

    def replicas(self) -> tuple[int, int]:
        """``(number of processes, this rank)`` sharing the batches."""
        replicas, rank = world()
        return self.num_replicas or replicas, rank if self.rank is None else self.rank

    def epoch_batches(self) -> list[list[int]]:
        """Every rank's batches of ``self.epoch``, in order."""
        raise NotImplementedError

    def global_length(self) -> int:
        """Batches per epoch over all ranks, before sharding."""
        raise NotImplementedError

    def __len__(self) -> int:
        replicas, _ = self.replicas()
        return math.ceil(self.global_length() / replicas)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        self.epoch += 1
        yield from shard_batches(batches, *self.replicas())


class GroupBalancedBatchSampler(EpochBatchSampler):
    """Batches of ``batch_size`` indices with ``proportions[g]`` of them from group ``g``."""

    def __init__(
        self,
        groups: Sequence[int],
        batch_size: int,
        proportions: dict[int, float],
        seed: int = 0,
        batches_per_epoch: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(seed, num_replicas, rank)
        self.groups = np.asarray(groups)
        missing = [g for g in proportions if proportions[g] > 0 and not np.any(self.groups == g)]
        if missing:
            raise ValueError(f"groups {missing} have a share of the batch but no item")
        total = sum(proportions.values())
        self.proportions = {g: p / total for g, p in proportions.items() if p > 0}
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch or math.ceil(len(self.groups) / batch_size)
        self.members = {g: np.flatnonzero(self.groups == g) for g in self.proportions}
        self._restart()

    def _restart(self) -> None:
        """Back to the state before the first epoch (fresh generator, empty queues)."""
        self.rng = np.random.default_rng(self.seed)
        self.queues: dict[int, list[int]] = {g: [] for g in self.proportions}
        self.drawn = 0  #: epochs drawn since the start (the queues carry over from one to the next)

    def global_length(self) -> int:
        return self.batches_per_epoch

    def _counts(self) -> dict[int, int]:
        """Places per group in one batch: floors of the exact shares, the rest drawn by their
        remainders."""
        exact = {g: p * self.batch_size for g, p in self.proportions.items()}
        counts = {g: math.floor(v) for g, v in exact.items()}
        left = self.batch_size - sum(counts.values())
        if left:
            names = list(exact)
            remainders = np.array([exact[g] - counts[g] for g in names])
            for g in self.rng.choice(
                names, size=left, replace=False, p=remainders / remainders.sum()
            ):
                counts[int(g)] += 1
        return counts

    def _take(self, group: int, count: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            if not self.queues[
                group
            ]:  # a new round; this batch's items go last (items pop from the end)
                fresh = self.rng.permutation(self.members[group]).tolist()
                self.queues[group] = [i for i in fresh if i in taken] + [
                    i for i in fresh if i not in taken
                ]
            taken.append(self.queues[group].pop())
        return taken

    def _draw_epoch(self) -> list[list[int]]:
        batches = []
        for _ in range(self.batches_per_epoch):
            batch = [i for g, n in self._counts().items() for i in self._take(g, n)]
            batches.append(self.rng.permutation(batch).tolist())
        self.drawn += 1
        return batches

    def epoch_batches(self) -> list[list[int]]:
        """The batches of ``self.epoch``; the epochs before it are replayed first if need be."""
        if self.drawn > self.epoch:
            self._restart()
        while self.drawn < self.epoch:
            self._draw_epoch()
        return self._draw_epoch()


def equal_share_sampler(
    groups: Sequence[int], batch_size: int, seed: int = 0
) -> GroupBalancedBatchSampler:
    """Every group present (a class, or a corpus) gets the same share of each batch."""
    present = sorted({int(g) for g in groups})
    return GroupBalancedBatchSampler(groups, batch_size, {g: 1.0 for g in present}, seed)


def neutral_expressive_sampler(
    labels: Sequence[int], neutral: int, batch_size: int, neutral_share: float = 0.5, seed: int = 0
) -> GroupBalancedBatchSampler:
    """``neutral_share`` of each batch neutral (label index ``neutral``), the rest expressive
    (StackingSER: 50 %)."""
    groups = [0 if int(y) == neutral else 1 for y in labels]
    return GroupBalancedBatchSampler(
        groups, batch_size, {0: neutral_share, 1: 1.0 - neutral_share}, seed
    )


class LengthBucketSampler(EpochBatchSampler):
    """Batches of similar length: shuffle, cut into pools of ``pool`` batches, sort each pool by
    length, batch it, and shuffle the batch order. Every index appears once per epoch; without
    ``shuffle`` the batches follow one sort by length (evaluation)."""

    def __init__(
        self,
        lengths: Sequence[float],
        batch_size: int,
        shuffle: bool = True,
        pool: int = 50,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(seed, num_replicas, rank)
        self.lengths, self.batch_size, self.shuffle, self.pool = (
            list(lengths),
            batch_size,
            shuffle,
            pool,
        )

    def global_length(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def epoch_batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        size = (
            self.batch_size * self.pool if self.shuffle else max(len(order), 1)
        )  # unshuffled: one pool
        batches = []
        for start in range(0, len(order), size):
            pool = sorted(order[start : start + size].tolist(), key=lambda i: self.lengths[i])
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        return batches


class ShuffleBatchSampler(EpochBatchSampler):
    """Plain shuffling: a fresh permutation of all items per epoch (from ``seed + epoch``) cut into
    batches; like ``DataLoader(shuffle=True)``, but resumable and shared among ranks."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(seed, num_replicas, rank)
        self.size, self.batch_size = size, batch_size

    def global_length(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def epoch_batches(self) -> list[list[int]]:
        order = np.random.default_rng(self.seed + self.epoch).permutation(self.size).tolist()
        return [order[i : i + self.batch_size] for i in range(0, self.size, self.batch_size)]


class EpochTagged(Sampler[list[tuple[int, int]]]):
    """Another batch sampler's batches as ``(epoch, index)`` pairs, for datasets whose random draws
    depend on the epoch (:class:`crabser.training.finetune.RawDataset`); Lightning sets the epoch
    of the wrapped sampler (its ``sampler``)."""

    def __init__(self, sampler: EpochBatchSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(epoch, index) for index in batch]
