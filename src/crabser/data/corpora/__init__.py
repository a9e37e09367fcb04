"""Corpus adapters: each turns a corpus on disk into a :class:`~crabser.data.manifest.Manifest`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from crabser.data.manifest import Manifest

#: corpus name -> "<module>.<function>" that builds its manifest from a root folder
CORPORA = {
    "emodb": "emodb.prepare",
    "iemocap": "iemocap.prepare",
    "meld": "meld.prepare",
    "msp-podcast": "msp_podcast.prepare",
    "msp-improv": "msp_improv.prepare",
    "ravdess": "ravdess.prepare",
    "crema-d": "crema_d.prepare",
    "savee": "savee.prepare",
    "ased": "ased.prepare",
    "emovo": "emovo.prepare",
    "urdu": "urdu.prepare",
    "folder": "generic.prepare_folder",
    "csv": "generic.prepare_csv",
}


def _adapter_module(name: str) -> ModuleType:
    """The module of the adapter ``name`` (see :data:`CORPORA`)."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    return importlib.import_module(f"crabser.data.corpora.{CORPORA[name].rsplit('.', 1)[0]}")


def get_adapter(name: str) -> Callable[..., Manifest]:
    """The ``prepare`` function of a corpus adapter by name (see :data:`CORPORA`)."""
    return getattr(_adapter_module(name), CORPORA[name].rsplit(".", 1)[1])


def corpus_facts(name: str) -> dict[str, str | None]:
    """What a model card says of a corpus: its name, language, kind of speech and terms of use
    (None where the adapter does not state them)."""
    module = _adapter_module(name) if name in CORPORA else None
    return {
        key.lower(): getattr(module, key, None) for key in ("CORPUS", "LANGUAGE", "SPEECH", "TERMS")
    }
