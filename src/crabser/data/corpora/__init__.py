"""Corpus adapters: each turns a corpus on disk into a :class:`~crabser.data.manifest.Manifest`."""

from __future__ import annotations

from collections.abc import Callable
from crabser.data.manifest import Manifest


def get_adapter(name: str) -> Callable[..., Manifest]:
    """The ``prepare`` function of a corpus adapter by name (emodb, folder, csv)."""
    from crabser.data.corpora import emodb, generic

    adapters: dict[str, Callable[..., Manifest]] = {
        "emodb": emodb.prepare,
        "folder": generic.prepare_folder,
        "csv": generic.prepare_csv,
    }
    if name not in adapters:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(adapters))}")
    return adapters[name]

