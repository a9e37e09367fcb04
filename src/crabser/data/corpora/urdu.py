"""URDU: 400 Urdu utterances cut from TV talk shows (natural speech), 4 emotions, labels from the
name.

Expected layout: the release's emotion folders ``Angry Happy Neutral Sad`` holding files named
``<speaker>_F<n>_<E><n>.wav`` (or ``.flac``; any depth), e.g. ``Angry/SM1_F10_A010.wav``. E is the
emotion letter (A anger, H happiness, N neutral, S sadness; it agrees with the folder). The speaker
code is the first field: SM<n> male, SF<n> female (29 codes in the release; its README speaks of 38
speakers, which the names do not identify). There are no transcripts, so ``text`` is empty (use
ASR).
"""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_from_names
from crabser.data.manifest import Manifest

CORPUS = "URDU"
LANGUAGE = "Urdu"
SPEECH = "natural (TV talk shows)"
#: the terms a model trained on it carries over
TERMS = "research purposes only, no licence file; cite Latif et al., FIT 2018"

EMOTIONS = {"A": "anger", "H": "happiness", "N": "neutral", "S": "sadness"}
LABELS = tuple(sorted(EMOTIONS.values()))
GENDER = {"M": "male", "F": "female"}
_NAME = re.compile(
    r"^(?P<speaker>S(?P<gender>[MF])\d+)_F(?P<file>\d+)_(?P<emotion>[AHNS])(?P<number>\d+)$"
)


def parse_name(stem: str) -> dict[str, str] | None:
    """Label, speaker and gender from an URDU file stem, or None if it is not one."""
    match = _NAME.match(stem)
    if not match:
        return None
    return {
        "label": EMOTIONS[match["emotion"]],
        "speaker": match["speaker"],
        "gender": GENDER[match["gender"]],
    }


def prepare(root: str | Path) -> Manifest:
    """Manifest of every URDU file under ``root`` (labels and speakers from the names, no texts)."""
    return manifest_from_names(
        CORPUS,
        root,
        parse_name,
        "urdu",
        "URDU emotion folders (Angry Happy Neutral Sad)",
        "SM1_F10_A010",
    )
