"""Corpus adapters: each turns a corpus on disk into a :class:`~crabser.data.manifest.Manifest`."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from crabser.data.manifest import Manifest
from crabser.errors import ConfigError, CorpusError

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


def read_corpus(
    name: str, root: str | Path, options: Mapping[str, Any] | None = None, where: str = "data"
) -> Manifest:
    """The manifest of corpus ``name`` at ``root`` through its adapter, with ``options`` checked
    against the adapter's keyword arguments first (ConfigError naming the unknown ones and the
    known ones). ``where`` names the config section in errors (``data``, ``data.corpora[1]``)."""
    adapter = get_adapter(name)
    parameters = list(inspect.signature(adapter).parameters.values())[1:]
    known = [p.name for p in parameters if p.kind is not p.VAR_KEYWORD]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    unknown = [] if takes_any else sorted(set(options or {}) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "no options"
        raise ConfigError(f"{where}.options: {name} does not take {unknown}; it takes: {takes}")
    try:
        return adapter(root, **(options or {}))
    except CorpusError as error:
        if Path(root).exists():
            raise
        problem = f"{error.problem}; set {where}.root to where the corpus is"
        raise CorpusError(error.corpus, error.root, problem) from None
