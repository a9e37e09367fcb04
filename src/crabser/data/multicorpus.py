"""Several corpora in one manifest, and one label map over all of them.

:func:`join_corpora` runs each corpus's adapter and stacks the manifests with a ``corpus`` column.
Speakers become ``<corpus>:<speaker>``: two corpora may both number their actors ``09``, and a
speaker-independent split must not take them for one person. Ids must already differ across
corpora (the adapters prefix them with the corpus name); a clash is an error naming the ids.

:func:`apply_label_map` renames, merges (two old labels to one new) or drops (``None``) labels in
every corpus alike, so the corpora meet on one class set; a class a corpus lacks is simply absent
there. A key that names no label of any corpus is an error (a misspelt label would otherwise be
kept silently).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from crabser.data.corpora import get_adapter
from crabser.data.manifest import Manifest, ManifestError


def join_corpora(sources: Sequence[Any]) -> Manifest:
    """One manifest of every corpus in ``sources`` (each with ``corpus``, ``root``, ``options``)."""
    frames = []
    for source in sources:
        frame = get_adapter(source.corpus)(source.root, **source.options).frame.copy()
        frame["corpus"] = source.corpus
        if "speaker" in frame:
            speaker = frame["speaker"].fillna("").astype(str)
            frame["speaker"] = speaker.where(speaker == "", source.corpus + ":" + speaker)
        frames.append(frame)
    joined = pd.concat(frames, ignore_index=True)
    clashes = joined.loc[joined["id"].duplicated(keep=False)]
    if len(clashes):
        corpora = sorted(clashes["corpus"].unique())
        raise ManifestError(
            f"corpora {corpora} share {clashes['id'].nunique()} utterance ids (e.g. {clashes['id'].iloc[0]!r}); "
            "list each corpus once in data.corpora"
        )
    return Manifest(joined)


def apply_label_map(manifest: Manifest, label_map: Mapping[str, str | None]) -> Manifest:
    """``manifest`` with each label in ``label_map`` renamed to its value, or its rows dropped (None)."""
    if not label_map:
        return manifest
    frame = manifest.frame
    unknown = sorted(set(label_map) - set(frame["label"].unique()))
    if unknown:
        raise ManifestError(f"data.label_map names labels no corpus has: {unknown}; the labels are {sorted(frame['label'].unique())}")
    dropped = [label for label, new in label_map.items() if new is None]
    frame = frame[~frame["label"].isin(dropped)].copy()
    frame["label"] = frame["label"].replace({old: new for old, new in label_map.items() if new is not None})
    if frame.empty:
        raise ManifestError("data.label_map drops every utterance")
    return Manifest(frame.reset_index(drop=True))
