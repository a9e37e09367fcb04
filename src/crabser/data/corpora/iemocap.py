"""IEMOCAP: 5 sessions x 2 actors, improvised and scripted dialogues, categorical labels.

Expected layout (the ``IEMOCAP_full_release`` folder)::

    Session1/dialog/EmoEvaluation/Ses01F_impro01.txt   # "[6.29 -
    8.23]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[...]"
    Session1/dialog/transcriptions/Ses01F_impro01.txt  # "Ses01F_impro01_F000 [006.2901-008.2357]:
    Excuse me." Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav

The default class set is the paper's 4-class one with *excited* merged into *happiness* (1103 anger,
1708 neutral, 1084 sadness, 1636 happiness); ``classes`` maps IEMOCAP codes to labels for others
(codes not in it are dropped). The speaker is the session plus the utterance's gender letter
(``Ses01F_impro01_M000`` is spoken by ``Ses01M``); ``session`` (1-5) drives leave-one-session-out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from crabser.data.corpora.common import manifest_or_error, require_dir
from crabser.data.manifest import Manifest

CORPUS = "IEMOCAP"
FOUR_CLASSES = {
    "ang": "anger",
    "neu": "neutral",
    "sad": "sadness",
    "hap": "happiness",
    "exc": "happiness",
}
ALL_CODES = {
    "ang": "anger",
    "hap": "happiness",
    "exc": "excited",
    "sad": "sadness",
    "neu": "neutral",
    "fru": "frustration",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
}
_EVALUATION = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(?P<id>Ses\d\d[FM]_\S+)\t(?P<code>\w+)\t")
_TRANSCRIPT = re.compile(r"^(?P<id>Ses\d\d[FM]_\S+) \[[\d.]+-[\d.]+\]: ?(?P<text>.*)$")
_UTTERANCE = re.compile(r"^Ses(?P<session>\d\d)[FM]_(?P<dialog>.+)_(?P<gender>[FM])\d+$")


def read_evaluation(path: Path) -> dict[str, str]:
    """Utterance id -> emotion code from one EmoEvaluation file."""
    labels = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EVALUATION.match(line)
        if match:
            labels[match["id"]] = match["code"]
    return labels


def read_transcripts(path: Path) -> dict[str, str]:
    """Utterance id -> transcript from one transcriptions file."""
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TRANSCRIPT.match(line.strip())
        if match:
            texts[match["id"]] = match["text"].strip()
    return texts


def prepare(
    root: str | Path,
    classes: Mapping[str, str] | None = None,
    sessions: tuple[int, ...] = (1, 2, 3, 4, 5),
) -> Manifest:
    """Manifest of the labelled IEMOCAP utterances of ``sessions`` mapped through ``classes``."""
    root = Path(root)
    classes = dict(classes or FOUR_CLASSES)
    require_dir(CORPUS, root, hint="the IEMOCAP_full_release folder with Session1..Session5")
    records = []
    for session in sessions:
        session_dir = require_dir(
            CORPUS, root, f"Session{session}", "Session1 .. Session5 sub-folders"
        )
        evaluation_dir = require_dir(CORPUS, root, f"Session{session}/dialog/EmoEvaluation")
        for evaluation in sorted(evaluation_dir.glob("Ses*.txt")):
            transcript_file = session_dir / "dialog" / "transcriptions" / evaluation.name
            texts = read_transcripts(transcript_file) if transcript_file.is_file() else {}
            for utterance, code in read_evaluation(evaluation).items():
                if code not in classes:
                    continue
                parts = _UTTERANCE.match(utterance)
                if parts is None:
                    continue
                dialog = utterance.rsplit("_", 1)[0]
                records.append(
                    {
                        "id": utterance,
                        "audio": str(
                            session_dir / "sentences" / "wav" / dialog / f"{utterance}.wav"
                        ),
                        "text": texts.get(utterance),
                        "label": classes[code],
                        "speaker": f"Ses{parts['session']}{parts['gender']}",
                        "gender": "female" if parts["gender"] == "F" else "male",
                        "session": str(int(parts["session"])),
                        "kind": "improvised" if "impro" in parts["dialog"] else "scripted",
                    }
                )
    return manifest_or_error(
        CORPUS, root, records, "SessionN/dialog/EmoEvaluation/*.txt with labelled utterances"
    )
