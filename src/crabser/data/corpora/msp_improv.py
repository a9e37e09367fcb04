"""MSP-IMPROV: 6 sessions x 2 actors, dyadic improvisations around 20 target sentences.

Expected layout::

    Evaluation.txt                                        # "UTD-IMPROV-S01A-F01-P-FM01.avi; A;
    A:2.0; ..." Audio/session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav  # (any depth below Audio/)

Labels: the consensus letter of ``Evaluation.txt`` (A anger, H happiness, S sadness, N neutral;
O and X dropped). The speaker is the gender letter and session of the name's 3rd field (``F01``);
``session`` drives leave-one-session-out. Scenario letters: P (target sentence, improvised
context), R (read), S (spontaneous), T (target sentence). No transcripts ship with the audio.
"""

from __future__ import annotations

import re
from pathlib import Path

from crabser.data.corpora.common import manifest_or_error, named_audio, require_dir, require_file
from crabser.data.manifest import Manifest

CORPUS = "MSP-IMPROV"
EMOTIONS = {"A": "anger", "H": "happiness", "S": "sadness", "N": "neutral"}
_LINE = re.compile(
    r"^UTD-IMPROV-(?P<stem>S\d\d[A-H]-[FM]\d\d-[PRST]-[FM]{2}\d\d)\.avi;\s*(?P<label>[A-Z])\s*;"
)
_STEM = re.compile(
    r"^MSP-IMPROV-(?P<sentence>S\d\d[A-H])-(?P<gender>[FM])(?P<session>\d\d)-(?P<scenario>[PRST])-[FM]{2}\d\d$"
)


def read_evaluation(path: Path) -> dict[str, str]:
    """Name stem (without the MSP-IMPROV- prefix) -> consensus label letter."""
    labels = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if match:
            labels[match["stem"]] = match["label"]
    return labels


def prepare(root: str | Path) -> Manifest:
    """Manifest of the MSP-IMPROV clips with an A/H/S/N consensus label."""
    root = Path(root)
    require_dir(CORPUS, root, hint="a folder with Evaluation.txt and Audio/")
    labels = read_evaluation(require_file(CORPUS, root, "Evaluation.txt", "the consensus labels"))
    records = []
    for path, match in named_audio(
        require_dir(CORPUS, root, "Audio", "Audio/sessionN/.../MSP-IMPROV-*.wav"), _STEM
    ):
        letter = labels.get(path.stem.removeprefix("MSP-IMPROV-"))
        if letter not in EMOTIONS:
            continue
        records.append(
            {
                "id": path.stem,
                "audio": str(path.resolve()),
                "text": None,
                "label": EMOTIONS[letter],
                "speaker": f"{match['gender']}{match['session']}",
                "gender": "female" if match["gender"] == "F" else "male",
                "session": str(int(match["session"])),
                "scenario": match["scenario"],
            }
        )
    return manifest_or_error(
        CORPUS, root, records, "Audio/**/MSP-IMPROV-*.wav files labelled in Evaluation.txt"
    )
