"""EMOVO (Italian emotional speech): 588 utterances, 6 actors, 7 emotions, 14 fixed sentences.

Expected layout: one folder per actor (``f1 f2 f3 m1 m2 m3``) holding files named
``<emo>-<actor>-<sentence>.wav`` (or ``.flac``; any depth), e.g. ``f1/dis-f1-b1.wav``. Emotion
codes: dis disgust, gio happiness (gioia), neu neutral, pau fear (paura), rab anger (rabbia), sor
surprise (sorpresa), tri sadness (tristezza). The actor (the same as its folder) is the speaker; f =
female, m = male. Sentences b1-b3, d1-d2, l1-l4, n1-n5 are spoken in every emotion, so the text
carries no emotion; their texts are not in the release, so ``text`` is empty (use ASR) and the code
is kept."""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_from_names
from crabser.data.manifest import Manifest

CORPUS = "EMOVO"
LANGUAGE = "Italian"
SPEECH = "acted"
#: the terms a model trained on it carries over
TERMS = (
    "free for research (Fondazione Ugo Bordoni), no open licence; cite Costantini et al., LREC 2014"
)

EMOTIONS = {
    "dis": "disgust",
    "gio": "happiness",
    "neu": "neutral",
    "pau": "fear",
    "rab": "anger",
    "sor": "surprise",
    "tri": "sadness",
}
LABELS = tuple(sorted(EMOTIONS.values()))
GENDER = {"f": "female", "m": "male"}
_NAME = re.compile(
    r"^(?P<emotion>dis|gio|neu|pau|rab|sor|tri)-(?P<speaker>[fm]\d)-(?P<sentence>[bdln]\d)$",
    re.IGNORECASE,
)


def parse_name(stem: str) -> dict[str, str] | None:
    """Label, speaker, gender and sentence code from an EMOVO file stem, or None if it is not
    one."""
    match = _NAME.match(stem)
    if not match:
        return None
    speaker = match["speaker"].lower()
    return {
        "label": EMOTIONS[match["emotion"].lower()],
        "speaker": speaker,
        "gender": GENDER[speaker[0]],
        "text_code": match["sentence"].lower(),
    }


def prepare(root: str | Path) -> Manifest:
    """Manifest of every EMOVO file under ``root`` (labels and actors from the names, no texts)."""
    return manifest_from_names(
        CORPUS, root, parse_name, "emovo", "EMOVO actor folders (f1 ... m3)", "dis-f1-b1"
    )
