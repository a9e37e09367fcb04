"""Several corpora in one manifest, and one label map over all of them.

:func:`join_corpora` runs each corpus's adapter and stacks the manifests with a ``corpus`` column.
Speakers become ``<corpus>:<speaker>``: two corpora may both number their actors ``09``, and a
speaker-independent split must not take them for one person. Ids must already differ across
corpora (the adapters prefix them with the corpus name); a clash is an error naming the ids.

:func:`apply_label_map` renames, merges (two old labels to one new) or drops (``None``) labels in
every corpus alike, so the corpora meet on one class set; a class a corpus lacks is simply absent
there. A map none of whose keys names a label here is an error (a misspelling, or the wrong corpus);
keys that match nothing beside others that do are logged (one map may serve several corpora).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from crabser.data.corpora import read_corpus
from crabser.data.manifest import Manifest, ManifestError

log = logging.getLogger(__name__)


def join_corpora(sources: Sequence[Any]) -> Manifest:
    """One manifest of every corpus in ``sources`` (each with ``corpus``, ``root``, ``options``)."""
    frames = []
    names = [source.name or source.corpus for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ManifestError(
            f"data.corpora names {repeated} more than once: list each corpus once, or give each "
            "source its own name"
        )
    for index, (source, name) in enumerate(zip(sources, names)):
        where = f"data.corpora[{index}]"
        frame = read_corpus(source.corpus, source.root, source.options, where).frame.copy()
        frame["corpus"] = name
        if "speaker" in frame:
            speaker = frame["speaker"].fillna("").astype(str)
            frame["speaker"] = speaker.where(speaker == "", name + ":" + speaker)
        frames.append(frame)
    joined = pd.concat(frames, ignore_index=True)
    clashes = joined.loc[joined["id"].duplicated(keep=False)]
    if len(clashes):
        roots = sorted(
            {
                str(source.root)
                for source, name in zip(sources, names)
                if name in set(clashes["corpus"])
            }
        )
        raise ManifestError(
            f"{clashes['id'].nunique()} utterance ids occur more than once in {', '.join(roots)} "
            f"(e.g. {clashes['id'].iloc[0]!r}); "
            "ids must be unique across data.corpora"
        )
    return Manifest(joined)


def apply_label_map(manifest: Manifest, label_map: Mapping[str, str | None]) -> Manifest:
    """``manifest`` with each label in ``label_map`` renamed to its value, or its rows dropped
    (None)."""
    if not label_map:
        return manifest
    frame = manifest.frame
    present = set(frame["label"].unique())
    unknown = sorted(set(label_map) - present)
    if len(unknown) == len(label_map):  # not one key matches: a misspelling, or the wrong corpus
        raise ManifestError(
            f"data.label_map names labels no corpus has: {unknown}; the labels are "
            f"{sorted(present)}"
        )
    if unknown:  # a map shared by several corpora: a key another corpus needs
        log.info("data.label_map: no utterance labelled %s here", ", ".join(unknown))
    dropped = [label for label, new in label_map.items() if new is None]
    frame = frame[~frame["label"].isin(dropped)].copy()
    frame["label"] = frame["label"].replace(
        {old: new for old, new in label_map.items() if new is not None}
    )
    if frame.empty:
        raise ManifestError("data.label_map drops every utterance")
    return Manifest(frame.reset_index(drop=True))
