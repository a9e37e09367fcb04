"""RAVDESS (speech part): 24 actors, 8 emotions, 2 statements, labels from the 7-part file name.

Expected layout: ``Actor_01/03-01-05-01-02-01-01.wav`` ... (any depth). Name fields: modality
(03 = audio only), vocal channel (01 = speech, 02 = song), emotion (01 neutral, 02 calm, 03 happy,
04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong),
statement (01 / 02), repetition, actor (odd = male, even = female). Song files are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_or_error, named_audio, require_dir
from crabser.data.manifest import Manifest

CORPUS = "RAVDESS"
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
_NAME = re.compile(
    r"^(?P<modality>0[123])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)$"
)


def prepare(root: str | Path) -> Manifest:
    """Manifest of the RAVDESS speech files under ``root``."""
    root = Path(root)
    require_dir(CORPUS, root, hint="Actor_NN folders of 03-01-EE-II-SS-RR-AA.wav files")
    records = []
    for path, match in named_audio(root, _NAME):
        if match["channel"] != "01":
            continue
        actor = match["actor"]
        records.append(
            {
                "id": f"ravdess_{path.stem}",
                "audio": str(path.resolve()),
                "text": STATEMENTS[match["statement"]],
                "label": EMOTIONS[match["emotion"]],
                "speaker": actor,
                "gender": "male" if int(actor) % 2 else "female",
                "intensity": "strong" if match["intensity"] == "02" else "normal",
            }
        )
    return manifest_or_error(
        CORPUS, root, records, "speech files named like 03-01-05-01-02-01-12.wav"
    )
