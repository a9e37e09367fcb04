"""Generic adapters: a folder of ``<label>/<file>.<ext>``, or a CSV with path,label[,text,speaker].

Folder layout: ``<label>/<clip>.wav`` (no speaker) or ``<label>/<speaker>/<clip>.wav`` (the first
sub-folder names the speaker, so ``protocol: speaker_holdout`` and ``folds`` work; turn this off
with ``data.options: {speaker_folders: false}``). A folder without speakers is split with
``protocol: random`` (a stratified random split, not speaker-independent).
"""

from __future__ import annotations

from pathlib import Path

from crabser.data.corpora.common import manifest_or_error, read_transcript, require_dir
from crabser.data.manifest import Manifest, ManifestError, from_records
from crabser.errors import CorpusError
from crabser.io import read_csv_utf8

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def prepare_folder(root: str | Path, speaker_folders: bool = True) -> Manifest:
    """One utterance per audio file in ``root/<label>/``; a ``<file>.txt`` beside it is its text
    and, with ``speaker_folders``, a sub-folder ``root/<label>/<speaker>/`` its speaker."""
    root = Path(root)
    require_dir("folder corpus", root, hint="<label>/<file> audio files")
    records = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(label_dir.rglob("*")):
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            relative = path.relative_to(label_dir)
            records.append(
                {
                    "id": f"{label_dir.name}/{relative.with_suffix('').as_posix()}",
                    "audio": str(path.resolve()),
                    "label": label_dir.name,
                    "text": read_transcript(path.with_suffix(".txt")),
                    "speaker": relative.parts[0]
                    if speaker_folders and len(relative.parts) > 1
                    else "",
                }
            )
    return manifest_or_error(
        "folder corpus", root, records, f"<label>/<file> with suffix in {AUDIO_SUFFIXES}"
    )


def prepare_csv(path: str | Path) -> Manifest:
    """Manifest from a CSV with columns path,label and optionally text,speaker,id (paths relative
    to it)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError("CSV corpus", path, "file not found")
    frame = read_csv_utf8(path, dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {sorted(missing)}; it has {list(frame.columns)}"
        )
    frame = frame.rename(columns={"path": "audio"})
    frame["audio"] = [
        str((path.parent / p).resolve()) if p and not Path(p).is_absolute() else p
        for p in frame["audio"]
    ]
    if "id" not in frame:
        frame["id"] = [Path(p).stem for p in frame["audio"]]
    if "text" in frame:
        frame["text"] = frame["text"].where(frame["text"] != "", None)
    return from_records(frame.to_dict("records"))
