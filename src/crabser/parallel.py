"""Independent runs side by side (cross-validation folds, experiment cells): ``--jobs N``.

On a small CPU one Crab training does not keep every core busy (the bi-GRU steps through time on
small matrices), so two runs with one torch thread each finish sooner than the same two runs one
after another with two threads each (BENCHMARKS.md, EmoDB leave-one-speaker-out). Each job runs in
a fresh (spawned) process with ``cores // jobs`` torch threads. Jobs never share a model: a job on
cached features gets :class:`StoredFeatures` (where its features are) instead of the encoders.

Every job runs even when one fails; the first failure is raised when all have finished, so the
finished runs are on disk and a re-run resumes from them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TypeVar


@dataclass(frozen=True)
class StoredFeatures:
    """An encoder's features in the store, without its model: all that training and evaluating on
    cached features use (``cache_id``), light enough to send to a job's process."""

    modality: str
    cache_id: str


Key = TypeVar("Key", bound=Hashable)  #: what names one job (a fold, a grid cell)


def stored_features(encoders: dict) -> dict[str, StoredFeatures]:
    """The feature-store stand-ins of loaded encoders."""
    return {
        modality: StoredFeatures(modality, encoder.cache_id)
        for modality, encoder in encoders.items()
    }


def encoders_for_jobs(encoders: dict, jobs: int) -> dict:
    """What a run's process gets: the loaded encoders in this process (``jobs`` <= 1), else their
    feature-store stand-ins."""
    return stored_features(encoders) if jobs > 1 else encoders


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` processes sharing this machine's cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


def _start_job(threads: int) -> None:
    """A job process: its share of the CPU threads, and Lightning's info lines (device banners,
    checkpoint notices, one set per run) left to the parent's progress report."""
    import logging

    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO)
    import torch

    torch.set_num_threads(threads)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def jobs_for(jobs: int, pending: int) -> int:
    """The processes worth starting for ``pending`` runs (fewer runs than jobs: one per run)."""
    return max(1, min(jobs, pending))


def run_jobs(
    function: Callable[..., object],
    arguments: Mapping[Key, tuple],
    jobs: int = 1,
    on_done: Callable[[Key], None] | None = None,
    finished: Iterable[Key] = (),
) -> None:
    """Call ``function(*arguments[key])`` for every key: here, one after another, when ``jobs`` <= 1
    (or one call), else in ``jobs`` spawned processes; ``on_done(key)`` after each success, and
    first for each key of ``finished`` (runs done before, read back).

    ``function`` must be importable (module level) when ``jobs`` > 1. Raises the first failure
    (in key order) after every call has finished.
    """
    for key in finished:
        if on_done:
            on_done(key)
    failures: dict[Key, BaseException] = {}
    if jobs <= 1 or len(arguments) <= 1:
        for key, args in arguments.items():
            try:
                function(*args)
            except Exception as error:  # noqa: BLE001 - the others still run; raised below
                failures[key] = error
                continue
            if on_done:
                on_done(key)
    else:
        threads = threads_per_job(jobs)
        with ProcessPoolExecutor(
            jobs, mp_context=get_context("spawn"), initializer=_start_job, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(function, *args): key for key, args in arguments.items()}
            for future in as_completed(futures):
                key = futures[future]
                failure = future.exception()
                if failure is not None:
                    failures[key] = failure
                elif on_done:
                    on_done(key)
    if failures:
        first = next(key for key in arguments if key in failures)
        raise failures[first]
