"""MELD: utterances of the TV series Friends, 7 emotions, official train / dev / test splits.

Expected layout (the CSVs of ``declare-lab/MELD`` and, optionally, the MELD.Raw clips)::

    train_sent_emo.csv  dev_sent_emo.csv  test_sent_emo.csv
    train_splits/dia0_utt0.mp4                  # MELD.Raw (optional)
    dev_splits_complete/dia0_utt0.mp4
    output_repeated_splits_test/dia0_utt0.mp4

The text-only path needs the CSVs alone. A clip is looked up as ``diaX_uttY`` with suffix
``.wav``/``.flac`` first (audio you extracted yourself), then ``.mp4`` (decoded with PyAV, which
ships its own FFmpeg: ``pip install crabser[video]``). Rows whose clip is absent keep the expected
``.mp4`` path; extraction then reports them as missing files. Splits: train -> train, dev -> val,
test -> test. Typographic punctuation in the text is turned into ASCII.
"""

from __future__ import annotations

from pathlib import Path

from crabser.data.corpora.common import (
    ascii_punctuation,
    manifest_or_error,
    require_dir,
    require_file,
)
from crabser.data.manifest import Manifest
from crabser.errors import CorpusError
from crabser.io import read_csv_utf8

CORPUS = "MELD"
SPLITS = {
    "train": ("train", "train_splits"),
    "dev": ("val", "dev_splits_complete"),
    "test": ("test", "output_repeated_splits_test"),
}
LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")


def _clip(root: Path, folder: str, stem: str) -> str:
    for suffix in (".wav", ".flac", ".mp4"):
        path = root / folder / f"{stem}{suffix}"
        if path.is_file():
            return str(path)
    return str(root / folder / f"{stem}.mp4")


def prepare(root: str | Path) -> Manifest:
    """Manifest of the three official MELD splits (ids ``meld_<split>_diaX_uttY``)."""
    root = Path(root)
    require_dir(CORPUS, root, hint="a folder with train/dev/test_sent_emo.csv")
    records = []
    for name, (split, folder) in SPLITS.items():
        csv = require_file(CORPUS, root, f"{name}_sent_emo.csv", "the MELD annotation CSVs")
        frame = read_csv_utf8(csv, dtype=str, keep_default_na=False)
        missing = [c for c in _COLUMNS if c not in frame.columns]
        if missing:
            raise CorpusError(CORPUS, root, f"{csv.name} lacks column(s) {missing}")
        for row in frame.itertuples(index=False):
            stem = f"dia{row.Dialogue_ID}_utt{row.Utterance_ID}"
            records.append(
                {
                    "id": f"meld_{name}_{stem}",
                    "audio": _clip(root, folder, stem),
                    "text": ascii_punctuation(row.Utterance) or None,
                    "label": row.Emotion.strip().lower(),
                    "speaker": row.Speaker.strip(),
                    "split": split,
                    "sentiment": row.Sentiment,
                    "dialogue": row.Dialogue_ID,
                }
            )
    return manifest_or_error(CORPUS, root, records, "rows in the *_sent_emo.csv files")
