"""SAVEE: 4 male speakers (DC, JE, JK, KL), 7 emotions, labels from the file-name prefix.

Expected layout: ``AudioData/DC/a01.wav`` (the original release) or ``DC_a01.wav`` in one folder
(a common repackaging). Prefixes: a anger, d disgust, f fear, h happiness, n neutral, sa sadness,
su surprise. SAVEE's TIMIT sentences are not in the release, so ``text`` is empty (use ASR).
"""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_or_error, named_audio, require_dir
from crabser.data.manifest import Manifest

CORPUS = "SAVEE"
EMOTIONS = {
    "a": "anger",
    "d": "disgust",
    "f": "fear",
    "h": "happiness",
    "n": "neutral",
    "sa": "sadness",
    "su": "surprise",
}
SPEAKERS = ("DC", "JE", "JK", "KL")
_NAME = re.compile(r"^(?:(?P<prefix>DC|JE|JK|KL)_)?(?P<emotion>sa|su|[adfhn])(?P<number>\d\d)$")


def prepare(root: str | Path) -> Manifest:
    """Manifest of the SAVEE clips under ``root``."""
    root = Path(root)
    require_dir(CORPUS, root, hint="AudioData/<speaker>/a01.wav or <speaker>_a01.wav files")
    records = []
    for path, match in named_audio(root, _NAME):
        speaker = match["prefix"] or path.parent.name
        if speaker not in SPEAKERS:
            continue
        records.append(
            {
                "id": f"savee_{speaker}_{match['emotion']}{match['number']}",
                "audio": str(path.resolve()),
                "text": None,
                "label": EMOTIONS[match["emotion"]],
                "speaker": speaker,
            }
        )
    return manifest_or_error(
        CORPUS, root, records, "AudioData/DC/a01.wav or DC_a01.wav style names"
    )
