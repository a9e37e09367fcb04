"""Berlin EmoDB: 535 German utterances, 10 speakers, 7 emotions, 10 fixed carrier sentences.

Expected layout: a folder holding audio files named ``SSTTTEV.wav`` (or ``.flac``), directly or in a
``wav/`` / ``flac/`` sub-folder. SS = speaker, TTT = sentence code, E = emotion letter, V = version.
The label comes from the emotion letter, the text from the sentence code. The text carries no
emotion (every sentence is spoken in every emotion), so the text branch cannot help on EmoDB.
"""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_from_names
from crabser.data.manifest import Manifest

CORPUS = "EmoDB"
LANGUAGE = "German"
SPEECH = "acted"
#: the terms a model trained on it carries over
TERMS = "free download, no formal licence: research data; cite Burkhardt et al., Interspeech 2005"

EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
LABELS = tuple(sorted(EMOTIONS.values()))
SENTENCES = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
GENDER = {
    "03": "male",
    "08": "female",
    "09": "female",
    "10": "male",
    "11": "male",
    "12": "male",
    "13": "female",
    "14": "female",
    "15": "male",
    "16": "female",
}
_NAME = re.compile(r"^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])$")


def parse_name(stem: str) -> dict[str, str] | None:
    """Speaker, sentence code, label and version from an EmoDB file stem, or None if it is not
    one."""
    match = _NAME.match(stem)
    if not match:
        return None
    fields = match.groupdict()
    return {
        "speaker": fields["speaker"],
        "text_code": fields["text"],
        "label": EMOTIONS[fields["emotion"]],
        "version": fields["version"],
    }


def _fields(stem: str) -> dict[str, str] | None:
    fields = parse_name(stem)
    return fields and {**fields, "gender": GENDER.get(fields["speaker"], "")}


def prepare(root: str | Path) -> Manifest:
    """Manifest of every EmoDB file under ``root`` (labels from names, German sentence texts)."""
    return manifest_from_names(
        CORPUS,
        root,
        _fields,
        "emodb",
        "a folder (or its wav/ or flac/ sub-folder)",
        "03a01Fa",
        text=lambda fields: SENTENCES.get(fields["text_code"]),
    )
