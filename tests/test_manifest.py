import pandas as pd
import pytest
from conftest import tone

from crabser.data.corpora import emodb as emodb_adapter
from crabser.data.corpora import generic
from crabser.data.manifest import Manifest, read_manifest, write_manifest
from crabser.data.protocols import speaker_holdout
from crabser.errors import ManifestError


def _frame(tmp_path, n=3):
    rows = []
    for i in range(n):
        path = tmp_path / f"u{i}.wav"
        path.write_bytes(b"x")
        rows.append(
            {
                "id": f"u{i}",
                "audio": str(path),
                "label": "happy" if i % 2 else "sad",
                "text": f"t{i}",
                "speaker": f"s{i}",
                "corpus_col": i,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_roundtrip_keeps_columns_and_resolves_relative_paths(tmp_path, suffix):
    frame = _frame(tmp_path)
    frame["audio"] = [f"u{i}.wav" for i in range(3)]  # relative to the manifest's folder
    write_manifest(Manifest(frame), tmp_path / f"m{suffix}")
    loaded = read_manifest(tmp_path / f"m{suffix}", labels=["happy", "sad"])
    assert loaded.frame["audio"].tolist() == [str(tmp_path / f"u{i}.wav") for i in range(3)]
    assert "corpus_col" in loaded.frame and loaded.frame["text"].tolist() == ["t0", "t1", "t2"]


def test_validation_lists_every_offending_row(tmp_path):
    frame = _frame(tmp_path, 4)
    frame.loc[1, "id"] = "u0"
    frame.loc[2, "label"] = "angry"
    frame.loc[3, "audio"] = str(tmp_path / "nope.wav")
    with pytest.raises(ManifestError) as caught:
        Manifest(frame).validate(labels=["happy", "sad"])
    message = str(caught.value)
    assert "duplicate ids (2 rows)" in message
    assert "unknown labels" in message and "'angry'" in message
    assert "missing audio files (1 rows)" in message and "nope.wav" in message


def test_missing_required_column_is_named(tmp_path):
    with pytest.raises(ManifestError, match="label"):
        Manifest(pd.DataFrame({"id": ["a"], "audio": ["x.wav"]}))


def test_emodb_names_give_labels_speakers_and_texts(emodb):
    manifest = emodb_adapter.prepare(emodb)
    assert len(manifest) == 535
    assert manifest.frame["speaker"].nunique() == 10
    counts = manifest.frame["label"].value_counts().to_dict()
    assert counts["anger"] == 127 and counts["disgust"] == 46
    row = manifest.frame.set_index("id").loc["emodb_03a01Fa"]
    assert (
        row["label"] == "happiness"
        and row["speaker"] == "03"
        and row["text"].startswith("Der Lappen")
    )


def test_emodb_parse_rejects_foreign_names():
    assert emodb_adapter.parse_name("readme") is None
    assert emodb_adapter.parse_name("16b10Td")["label"] == "sadness"


def test_generic_folder_and_csv(tmp_path, write_wav):
    write_wav("corpus/angry/a1.wav", tone(0.5))
    write_wav("corpus/calm/c1.wav", tone(0.5))
    (tmp_path / "corpus/calm/c1.txt").write_text("all is well\n")
    manifest = generic.prepare_folder(tmp_path / "corpus")
    assert sorted(manifest.frame["label"]) == ["angry", "calm"]
    assert manifest.frame.set_index("label").loc["calm", "text"] == "all is well"
    (tmp_path / "list.csv").write_text("path,label,speaker\ncorpus/angry/a1.wav,angry,s1\n")
    from_csv = generic.prepare_csv(tmp_path / "list.csv")
    assert from_csv.frame.loc[0, "audio"] == str((tmp_path / "corpus/angry/a1.wav").resolve())
    (tmp_path / "bad.csv").write_text("file,emotion\nx.wav,angry\n")
    with pytest.raises(ManifestError, match="missing column"):
        generic.prepare_csv(tmp_path / "bad.csv")


def test_speaker_holdout_is_speaker_disjoint(emodb):
    manifest = speaker_holdout(
        emodb_adapter.prepare(emodb), test_speakers=["15", "16"], val_speakers=["12"]
    )
    by_split = manifest.frame.groupby("split")["speaker"].apply(set).to_dict()
    assert by_split["test"] == {"15", "16"} and by_split["val"] == {"12"}
    assert not by_split["train"] & (by_split["test"] | by_split["val"])
    with pytest.raises(ManifestError, match="unknown speakers"):
        speaker_holdout(emodb_adapter.prepare(emodb), test_speakers=["99"])
    with pytest.raises(ManifestError, match="both test and val"):
        speaker_holdout(emodb_adapter.prepare(emodb), test_speakers=["15"], val_speakers=["15"])


def test_clean_text_treats_blank_and_non_strings_as_missing():
    from crabser.data.text import clean_text

    assert clean_text("  Hallo.\n") == "Hallo."
    assert (
        clean_text("   ") is None and clean_text(None) is None and clean_text(float("nan")) is None
    )
