"""Prediction over folders, lists and tables (crabser.tables): inputs found by content, a row per
input with its error, resume after an interruption, and the real CLI on EmoDB clips."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import tone
from typer.testing import CliRunner

from crabser.cli import app
from crabser.data.audio import looks_like_audio
from crabser.errors import AudioError, CrabserError
from crabser.prediction import Prediction
from crabser.tables import (
    TableInput,
    gather_inputs,
    partial_path,
    predict_table,
    read_table,
)


@pytest.mark.parametrize(
    ("extension", "format_", "subtype"),
    [
        ("wav", "WAV", "PCM_16"),
        ("flac", "FLAC", "PCM_16"),
        ("ogg", "OGG", "VORBIS"),
        ("aiff", "AIFF", "PCM_16"),
        ("au", "AU", "PCM_16"),
        ("caf", "CAF", "PCM_16"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
    ],
)
def test_audio_is_recognised_by_content_whatever_its_name(tmp_path, extension, format_, subtype):
    if format_ not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {format_}")
    path = tmp_path / "clip.dat"  # a name that says nothing
    sf.write(path, tone(0.3), 16000, format=format_, subtype=subtype)
    assert looks_like_audio(path)


@pytest.mark.parametrize(
    "head",
    [
        b"\x00\x00\x00\x20ftypM4A \x00\x00",  # MP4 / M4A
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81",  # WebM
        b"\xff\xfb\x90\x64\x00\x00",  # an MP3 frame without a tag
        b"\xff\xf1\x50\x80\x00\x1f",  # ADTS AAC
    ],
)
def test_container_and_frame_signatures_count_as_audio(tmp_path, head):
    path = tmp_path / "x"
    path.write_bytes(head + bytes(64))
    assert looks_like_audio(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, a transcript\n", b"%PDF-1.7", b"\xff\xd8\xff\xe0JFIF", b"\xff\xef\x00\x00"],
)
def test_other_files_are_not_audio(tmp_path, content):
    path = tmp_path / "x.wav"  # an audio name does not make it audio
    path.write_bytes(content)
    assert not looks_like_audio(path)
    assert not looks_like_audio(tmp_path / "missing.wav")


def test_a_folder_gives_its_audio_recursively_sorted_without_hidden_entries(tmp_path):
    for name in ("b.wav", "sub/a.flac", "sub/no_extension", ".hidden.wav", ".cache/c.wav"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(0.2), 16000, format="FLAC" if "flac" in name else "WAV")
    (tmp_path / "b.txt").write_text("a transcript", encoding="utf-8")
    (tmp_path / "notes.csv").write_text("x,y\n1,2\n", encoding="utf-8")
    found = [row.path.relative_to(tmp_path).as_posix() for row in gather_inputs([tmp_path])]
    assert found == ["b.wav", "sub/a.flac", "sub/no_extension"]


def test_a_list_reads_paths_from_its_own_folder(tmp_path):
    listing = tmp_path / "lists" / "clips.txt"
    listing.parent.mkdir()
    listing.write_text("# two clips\n../a.wav\n\n/abs/b.wav\n", encoding="utf-8")
    rows = gather_inputs([listing])
    assert [row.path for row in rows] == [listing.parent / "../a.wav", Path("/abs/b.wav")]


def test_a_table_keeps_its_columns_and_renames_those_named_like_outputs(tmp_path):
    table = tmp_path / "clips.csv"
    pd.DataFrame(
        {
            "speaker": ["s1", "s2"],
            "file": ["a.wav", "sub/b.wav"],
            "label": ["anger", "joy"],
            "transcript": ["so angry", None],
        }
    ).to_csv(table, index=False)
    rows = gather_inputs([table])
    assert [row.path for row in rows] == [tmp_path / "a.wav", tmp_path / "sub/b.wav"]
    assert [row.text for row in rows] == ["so angry", None]
    assert rows[0].columns == {
        "speaker": "s1",
        "file": "a.wav",
        "input.label": "anger",
        "input.transcript": "so angry",  # the output's transcript is the text the model read
    }
    assert rows[1].columns["input.transcript"] == ""  # read as written: an empty cell


def test_table_errors_name_the_file_and_the_columns(tmp_path):
    table = tmp_path / "clips.parquet"
    pd.DataFrame({"clip": ["a.wav"], "words": ["hi"]}).to_parquet(table)
    with pytest.raises(CrabserError, match=r"clips.parquet: no path column.*clip, words"):
        gather_inputs([table])
    rows = gather_inputs([table], path_column="clip", text_column="words")
    assert rows[0].path == tmp_path / "a.wav" and rows[0].text == "hi"
    with pytest.raises(CrabserError, match="no column 'speech' for the audio paths"):
        gather_inputs([table], path_column="speech")
    blank = tmp_path / "blank.csv"
    blank.write_text('path\na.wav\n"  "\n', encoding="utf-8")
    assert [row.problem for row in gather_inputs([blank])] == [
        None,
        "row 3: empty path in column 'path'",
    ]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(CrabserError, match="broken.parquet: cannot be read as a table"):
        gather_inputs([broken])
    with pytest.raises(CrabserError, match="missing: no such file or folder"):
        gather_inputs([tmp_path / "missing"])


class FakePredictor:
    """Probabilities from the file's first sample; files whose name holds "bad" fail; can stop
    (KeyboardInterrupt) after a number of batches; records every batch it is given."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.labels = ["calm", "loud"]
        self.modalities = ["speech", "text"]
        self.batches: list[list[str]] = []
        self.texts: list[str | None] = []
        self.stop_after = stop_after

    def predict_batch(self, audios, texts=None, *, names=None, min_confidence=None, embed=False):
        if self.stop_after is not None and len(self.batches) == self.stop_after:
            raise KeyboardInterrupt
        self.batches.append([Path(a).name for a in audios])
        results = []
        for path, text in zip(audios, texts or [None] * len(audios)):
            if "bad" in Path(path).name:
                raise AudioError(path, "corrupt audio (made up)")
            loud = float(abs(sf.read(path)[0][0]) * 10)
            probabilities = {"calm": 1 - loud, "loud": loud}
            label = max(probabilities, key=probabilities.__getitem__)
            if min_confidence is not None and probabilities[label] < min_confidence:
                label = "uncertain"
            self.texts.append(text)
            embedding = [loud, 2 * loud, 3.0] if embed else None
            results.append(Prediction(str(path), label, probabilities, text, "given", embedding))
        return results


def _clips(folder: Path, n: int, bad: tuple[int, ...] = ()) -> list[TableInput]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / (f"bad{i:02d}.wav" if i in bad else f"clip{i:02d}.wav")
        wave = np.full(800, 0.01 * i, dtype=np.float32)
        sf.write(path, wave, 16000, subtype="FLOAT")
        rows.append(TableInput(path, text=f"words {i}", columns={"n": i}))
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_an_interrupted_table_resumes_to_the_same_table(tmp_path, suffix):
    rows = _clips(tmp_path / "clips", 10, bad=(7,))
    whole = predict_table(FakePredictor(), rows, tmp_path / f"whole{suffix}", batch_size=3)
    out = tmp_path / f"resumed{suffix}"
    with pytest.raises(KeyboardInterrupt):
        predict_table(FakePredictor(stop_after=2), rows, out, batch_size=3)
    assert not out.exists()
    assert len(partial_path(out).read_text().splitlines()) == 6  # two batches kept
    second = FakePredictor()
    resumed = predict_table(second, rows, out, batch_size=3)
    assert second.batches[0] == ["clip06.wav", "bad07.wav", "clip08.wav"]  # then one by one
    assert {name for batch in second.batches for name in batch} == {
        "clip06.wav",
        "bad07.wav",
        "clip08.wav",
        "clip09.wav",
    }
    pd.testing.assert_frame_equal(resumed, whole)
    assert not partial_path(out).exists()
    assert read_table(out) == read_table(tmp_path / f"whole{suffix}")
    # the bad row holds its problem; the others their prediction and the input's columns
    assert resumed.loc[7, "error"] == "corrupt audio (made up)"
    assert resumed.loc[7, "label"] is None and resumed["error"].isna().sum() == 9
    assert resumed.loc[9, "n"] == 9 and resumed.loc[9, "label"] == "loud"
    assert resumed.loc[9, "probabilities"] == pytest.approx({"calm": 0.1, "loud": 0.9}, abs=1e-6)


def test_a_finished_table_is_taken_over_and_only_failures_and_new_rows_are_predicted(tmp_path):
    rows = _clips(tmp_path / "clips", 5, bad=(1,))
    out = tmp_path / "t.csv"
    predict_table(FakePredictor(), rows, out)
    fixed = rows[1].path.with_name("clip01.wav")
    shutil.copy(rows[1].path, fixed)
    rows[1] = TableInput(fixed, rows[1].text, rows[1].columns)
    rows += _clips(tmp_path / "more", 7)[5:]
    again = FakePredictor()
    table = predict_table(again, rows, out, min_confidence=0.97)
    assert again.batches == [["clip01.wav", "clip05.wav", "clip06.wav"]]
    assert table["error"].isna().all()
    # rows taken over are labelled again under the new min_confidence
    assert table.loc[0, "label"] == "calm" and table.loc[3, "label"] == "uncertain"
    overwritten = FakePredictor()
    predict_table(overwritten, rows, out, overwrite=True)
    assert sum(map(len, overwritten.batches)) == 7


def test_a_failing_batch_is_predicted_row_by_row_and_texts_come_from_the_row(tmp_path):
    rows = _clips(tmp_path, 4, bad=(2,))
    rows[0] = TableInput(rows[0].path)  # no transcript column: the text given for all
    predictor = FakePredictor()
    table = predict_table(predictor, rows, text="for every clip", batch_size=4)
    assert list(table["error"].notna()) == [False, False, True, False]
    assert predictor.texts[:2] == ["for every clip", "words 1"]


def test_an_output_of_another_model_or_damaged_is_refused(tmp_path):
    rows = _clips(tmp_path / "clips", 2)
    out = tmp_path / "t.jsonl"
    predict_table(FakePredictor(), rows, out)
    other = FakePredictor()
    other.labels = ["happy", "sad"]
    with pytest.raises(CrabserError, match=r"classes \['calm', 'loud'\].*--overwrite"):
        predict_table(other, rows, out)
    out.write_text('{"source": "x", "probabilities": {"calm"\n', encoding="utf-8")
    with pytest.raises(CrabserError, match="cannot be read to resume"):
        predict_table(FakePredictor(), rows, out)
    with pytest.raises(CrabserError, match=r"\.xlsx"):
        predict_table(FakePredictor(), rows, tmp_path / "t.xlsx")


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_embeddings_are_a_column_and_rows_without_one_are_predicted_again(tmp_path, suffix):
    rows = _clips(tmp_path / "clips", 3)
    out = tmp_path / f"t{suffix}"
    predict_table(FakePredictor(), rows, out)
    again = FakePredictor()
    table = predict_table(again, rows, out, embed=True)
    assert sum(map(len, again.batches)) == 3  # the earlier rows had no embedding
    assert table.loc[2, "embedding"] == pytest.approx([0.2, 0.4, 3.0])
    assert read_table(out)[2]["embedding"] == pytest.approx([0.2, 0.4, 3.0])
    third = FakePredictor()
    predict_table(third, rows, out, embed=True)
    assert third.batches == []
    with pytest.raises(CrabserError, match="embeddings are vectors"):
        predict_table(FakePredictor(), rows, tmp_path / "t.csv", embed=True)


def test_a_torn_last_line_of_the_partial_file_is_ignored(tmp_path):
    rows = _clips(tmp_path / "clips", 3)
    out = tmp_path / "t.parquet"
    with pytest.raises(KeyboardInterrupt):
        predict_table(FakePredictor(stop_after=1), rows, out, batch_size=2)
    with partial_path(out).open("a") as log:
        log.write('{"key": "' + str(rows[2].path) + '#0", "label": "lou')
    predictor = FakePredictor()
    predict_table(predictor, rows, out, batch_size=2)
    assert predictor.batches == [["clip02.wav"]]


runner = CliRunner()


@pytest.fixture(scope="module")
def emodb_folder(emodb, tmp_path_factory) -> Path:
    """Six real EmoDB clips in a folder tree (one without an extension) and a corrupt file."""
    folder = tmp_path_factory.mktemp("folder")
    clips = sorted((emodb / "wav").glob("03a0*.wav"))[:6]
    for i, clip in enumerate(clips):
        target = folder / ("sub" if i % 2 else "") / (clip.name if i != 5 else clip.stem)
        target.parent.mkdir(exist_ok=True)
        shutil.copy(clip, target)
    (folder / "sub" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return folder


def test_predict_a_folder_into_a_table_through_the_cli(emodb_folder, tmp_path):
    from crabser.inference import Recognizer

    out = tmp_path / "predictions.parquet"
    result = runner.invoke(app, ["predict", str(emodb_folder), "--out", str(out)])
    assert result.exit_code == 1, result.output  # one input failed, the others are there
    assert "broken.wav" in result.output and "6 of 7 predicted" in result.output
    table = pd.read_parquet(out)
    assert len(table) == 7 and table["error"].notna().sum() == 1
    problems = table.set_index("source")["error"]
    assert "No 'data' chunk" in problems[str(emodb_folder / "sub" / "broken.wav")]
    recognizer = Recognizer.load()
    good = table[table["error"].isna()]
    for source, row in good.set_index("source").iterrows():
        alone = recognizer.predict(source)
        assert row["label"] == alone.label
        for label, p in alone.probabilities.items():
            assert row[f"probabilities.{label}"] == pytest.approx(p, abs=1e-5)
    # a second run finds nothing left but the broken file, and writes the same table
    again = runner.invoke(app, ["predict", str(emodb_folder), "--out", str(out), "--json"])
    assert again.exit_code == 1 and "1/1" in again.stderr  # only the broken file again
    lines = [json.loads(line) for line in again.stdout.splitlines()]  # nothing else on stdout
    assert len(lines) == 6 and set(lines[0]) == {
        "source",
        "label",
        "probabilities",
        "transcript",
        "text_source",
    }
    pd.testing.assert_frame_equal(pd.read_parquet(out), table)


def test_predict_a_csv_keeps_its_columns_through_the_cli(emodb_folder, tmp_path):
    listing = tmp_path / "clips.csv"
    paths = sorted(str(p) for p in emodb_folder.glob("*.wav"))
    pd.DataFrame({"wav": paths, "label": ["x"] * len(paths)}).to_csv(listing, index=False)
    out = tmp_path / "t.csv"
    result = runner.invoke(app, ["predict", str(listing), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns[:4]) == ["wav", "input.label", "source", "label"]
    assert list(table["wav"]) == paths and table["error"].isna().all()
    bad = runner.invoke(app, ["predict", str(listing), "--out", str(tmp_path / "t.xlsx")])
    assert bad.exit_code == 2 and "t.xlsx" in bad.output


def test_awkward_tables_give_error_rows_not_a_stop(tmp_path):
    """Numbers as paths, an empty path, "NA" as a transcript, a column named like an output
    field, mixed column types over two tables and dates: a row each, and a written table."""
    for name in ("1.wav", "2.wav", "c.wav"):
        sf.write(tmp_path / name, np.full(800, 0.02, dtype=np.float32), 16000, subtype="FLOAT")
    first = tmp_path / "first.csv"
    first.write_text(
        "path,transcript,speaker,probabilities.calm\n1.wav,NA,7,0.5\n,hi,8,0.1\n2.wav,,9,0.2\n",
        encoding="utf-8",
    )
    second = tmp_path / "second.parquet"
    pd.DataFrame(
        {"path": ["c.wav"], "speaker": ["s-x"], "when": [pd.Timestamp("2026-01-02")]}
    ).to_parquet(second)
    rows = gather_inputs([first, second])
    assert [row.problem for row in rows] == [None, "row 3: empty path in column 'path'", None, None]
    assert rows[0].text == "NA" and rows[2].text is None  # as written; an empty cell is none
    for suffix in (".parquet", ".jsonl"):
        predictor = FakePredictor()
        table = predict_table(predictor, rows, tmp_path / f"out{suffix}")
        assert list(table["error"].notna()) == [False, True, False, False]
        assert predictor.texts == ["NA", None, None]
        written = read_table(tmp_path / f"out{suffix}")
        assert [r["label"] for r in written] == ["calm", None, "calm", "calm"]
        assert "input.probabilities.calm" in written[0] and written[0]["speaker"] in (7, "7")


def test_the_output_cannot_be_an_input_table(tmp_path):
    from crabser.tables import check_output

    table = tmp_path / "meta.csv"
    table.write_text("path\na.wav\n", encoding="utf-8")
    with pytest.raises(CrabserError, match="is an input"):
        check_output(table, inputs=[table])
    with pytest.raises(CrabserError, match="is an input"):
        FakeRecognizer().predict_table([table], table)


class FakeRecognizer(FakePredictor):
    """FakePredictor with Recognizer.predict_table (the checks of the Python entry point)."""

    from crabser.predictor import Predictor

    predict_table = Predictor.predict_table


def test_a_partial_file_cut_inside_a_character_resumes(tmp_path):
    rows = _clips(tmp_path / "clips", 3)
    out = tmp_path / "t.jsonl"
    with pytest.raises(KeyboardInterrupt):
        predict_table(FakePredictor(stop_after=1), rows, out, batch_size=2)
    with partial_path(out).open("ab") as log:
        log.write('{"key": "x", "transcript": "gr\u00fc'.encode()[:-1])  # half of the ü
    predictor = FakePredictor()
    table = predict_table(predictor, rows, out, batch_size=2)
    assert predictor.batches == [["clip02.wav"]] and table["error"].isna().all()


def test_utf16_text_and_filler_bytes_are_not_audio(tmp_path):
    for name, content in {
        "notes.txt": "\ufeffa transcript".encode("utf-16-le"),
        "be.txt": "\ufeffa transcript".encode("utf-16-be"),
        "filler.bin": b"\xff" * 64,
    }.items():
        (tmp_path / name).write_bytes(content)
        assert not looks_like_audio(tmp_path / name), name


def test_a_single_folder_string_and_a_stack_asked_for_embeddings(tmp_path):
    rows = _clips(tmp_path / "clips", 2)
    table = FakeRecognizer().predict_table(str(tmp_path / "clips"))
    assert list(table["source"]) == [str(row.path) for row in rows]
    stack = FakePredictor()
    stack.gives_embeddings = False
    with pytest.raises(CrabserError, match="gives no embeddings"):
        predict_table(stack, rows, embed=True)
    assert stack.batches == []
