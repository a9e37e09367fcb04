"""CREMA-D: 91 actors, 12 sentences, 6 emotions, labels from the file name (intended emotion).

Expected layout: ``AudioWAV/1001_DFA_ANG_XX.wav`` (or the files directly under ``root``): actor id,
sentence code, emotion (ANG, DIS, FEA, HAP, NEU, SAD) and level (LO, MD, HI, XX).
"""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_or_error, named_audio, require_dir
from crabser.data.manifest import Manifest

CORPUS = "CREMA-D"
EMOTIONS = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
_NAME = re.compile(
    r"^(?P<actor>1\d{3})_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)_(?P<level>LO|MD|HI|XX|X)$"
)


def prepare(root: str | Path) -> Manifest:
    """Manifest of the CREMA-D clips under ``root``."""
    root = Path(root)
    require_dir(CORPUS, root, hint="AudioWAV/ with files named like 1001_DFA_ANG_XX.wav")
    records = []
    for path, match in named_audio(root, _NAME):
        records.append(
            {
                "id": f"cremad_{path.stem}",
                "audio": str(path.resolve()),
                "text": SENTENCES.get(match["sentence"]),
                "label": EMOTIONS[match["emotion"]],
                "speaker": match["actor"],
                "level": match["level"],
            }
        )
    return manifest_or_error(CORPUS, root, records, "files named like 1001_DFA_ANG_XX.wav")
