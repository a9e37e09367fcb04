"""MSP-Podcast (2.0 / 1.11+): spontaneous podcast speech, consensus labels, official partitions.

Expected layout::

    Labels/labels_consensus.csv   # FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
    Split_Set Audios/MSP-PODCAST_0002_0033.wav Transcripts/MSP-PODCAST_0002_0033.txt   # optional;
    missing ones can come from ASR

Class set: the 8 primary emotions of the Odyssey 2024 / Interspeech 2025 challenges (A, C, D, F, H,
N, S, U); the Crab paper's table I lists these without sadness, which we read as an omission.
``O`` (other) and ``X`` (no agreement) are dropped unless ``classes`` maps them. Partitions:
Train -> train, Development -> val, Test1/Test2/Test3 -> test with the partition kept in
``partition`` (select one with ``data.options``' ``test_partition``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from crabser.data.corpora.common import (
    manifest_or_error,
    read_transcript,
    require_dir,
    require_file,
)
from crabser.data.manifest import Manifest
from crabser.errors import CorpusError
from crabser.io import read_csv_utf8

CORPUS = "MSP-Podcast"
CLASSES = {
    "A": "anger",
    "C": "contempt",
    "D": "disgust",
    "F": "fear",
    "H": "happiness",
    "N": "neutral",
    "S": "sadness",
    "U": "surprise",
}
PARTITIONS = {
    "Train": "train",
    "Development": "val",
    "Test1": "test",
    "Test2": "test",
    "Test3": "test",
}
_COLUMNS = ("FileName", "EmoClass", "SpkrID", "Split_Set")


def prepare(
    root: str | Path, classes: Mapping[str, str] | None = None, test_partition: str | None = None
) -> Manifest:
    """Manifest of the labelled MSP-Podcast turns; ``test_partition`` (e.g. Test1) keeps one test
    set."""
    root = Path(root)
    classes = dict(classes or CLASSES)
    require_dir(CORPUS, root, hint="a folder with Labels/, Audios/ and Transcripts/")
    labels_csv = require_file(CORPUS, root, "Labels/labels_consensus.csv", "the consensus labels")
    audio_dir = require_dir(CORPUS, root, "Audios", "Audios/<FileName>.wav")
    transcripts = root / "Transcripts"
    frame = read_csv_utf8(labels_csv, dtype=str, keep_default_na=False)
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise CorpusError(CORPUS, root, f"{labels_csv.name} lacks column(s) {missing}")
    records = []
    for row in frame.to_dict("records"):
        partition = row["Split_Set"].strip()
        if row["EmoClass"] not in classes or partition not in PARTITIONS:
            continue
        if PARTITIONS[partition] == "test" and test_partition and partition != test_partition:
            continue
        stem = Path(row["FileName"]).stem
        transcript = transcripts / f"{stem}.txt"
        record = {
            "id": stem,
            "audio": str(audio_dir / row["FileName"]),
            "text": read_transcript(transcript),
            "label": classes[row["EmoClass"]],
            "speaker": row["SpkrID"],
            "split": PARTITIONS[partition],
            "partition": partition,
        }
        for column, name in (
            ("Gender", "gender"),
            ("EmoAct", "arousal"),
            ("EmoVal", "valence"),
            ("EmoDom", "dominance"),
        ):
            if column in row:
                record[name] = row[column]
        records.append(record)
    return manifest_or_error(CORPUS, root, records, "labelled rows in Labels/labels_consensus.csv")
