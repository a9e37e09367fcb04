"""ASED v1 (Amharic Speech Emotion Dataset): 2474 utterances, 5 emotions, labels from the file name.

Expected layout: the release's emotion folders ``01Neutral 02Fearful 03Happy 04Sad 05Angry`` holding
files named ``xn-yy-aa-gg-bb.wav`` (or ``.flac``; any depth, so a flattened copy works too):
x = emotion letter and n = its folder number (n1 neutral, f2 fearful, h3 happy, s4 sad, a5 angry;
the letter's case is ignored, the release has one ``S4-...``), yy = sentence, aa = repetition,
gg = gender (01 female, 02 male), bb = speaker number. ``speaker`` is ``bb`` alone: its 65 values
are the paper's 65 participants, while ``gg-bb`` gives 70 codes because five files (speakers 09, 15,
21, 23, 25) carry gender 02 where every other file of that speaker says 01. Keying by ``bb`` keeps
each speaker's clips on one side of a speaker-independent split; ``gender`` is read per file as
written. There are no transcripts, so ``text`` is empty (use ASR); the sentence code is kept."""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_from_names
from crabser.data.manifest import Manifest

CORPUS = "ASED"
LANGUAGE = "Amharic"
SPEECH = "acted"
#: the terms a model trained on it carries over
TERMS = (
    'no licence file, "freely available": research data; cite Retta et al., ACM TALLIP 22(1), 2023'
)

EMOTIONS = {"n1": "neutral", "f2": "fear", "h3": "happiness", "s4": "sadness", "a5": "anger"}
LABELS = tuple(sorted(EMOTIONS.values()))
GENDER = {"01": "female", "02": "male"}
_NAME = re.compile(
    r"^(?P<emotion>[nfhsa][1-5])-(?P<sentence>\d\d)-(?P<repetition>\d\d)-(?P<gender>0[12])-(?P<speaker>\d\d)$",
    re.IGNORECASE,
)


def parse_name(stem: str) -> dict[str, str] | None:
    """Label, speaker, gender, sentence and repetition from an ASED file stem, or None if it is not
    one."""
    match = _NAME.match(stem)
    if not match or match["emotion"].lower() not in EMOTIONS:
        return None
    return {
        "label": EMOTIONS[match["emotion"].lower()],
        "speaker": match["speaker"],
        "gender": GENDER[match["gender"]],
        "text_code": match["sentence"],
        "repetition": match["repetition"],
    }


def prepare(root: str | Path) -> Manifest:
    """Manifest of every ASED file under ``root`` (labels and speakers from the names, no texts)."""
    return manifest_from_names(
        CORPUS,
        root,
        parse_name,
        "ased",
        "ASED emotion folders (01Neutral ... 05Angry)",
        "n1-01-01-01-01",
    )
