"""Corpus adapters on tiny fake trees that mimic each corpus's layout and file-name conventions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import shared_corpus, tone

from crabser.data.corpora import CORPORA, get_adapter
from crabser.errors import CorpusError


@pytest.fixture
def wav(write_wav):
    return lambda relative: write_wav(relative, tone(0.3))


def test_every_registered_adapter_imports():
    for name in CORPORA:
        assert callable(get_adapter(name))
    with pytest.raises(ValueError, match="unknown corpus 'nope'"):
        get_adapter("nope")


def _iemocap_dialog(root: Path, session: int, dialog: str, codes: dict[str, str], wav) -> None:
    """One dialog of a fake IEMOCAP session: evaluation, transcription and one wav per utterance."""
    folder = root / f"Session{session}" / "dialog"
    for sub in ("EmoEvaluation", "transcriptions"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    utterances = {f"{dialog}_{suffix}": code for suffix, code in codes.items()}
    (folder / "EmoEvaluation" / f"{dialog}.txt").write_text(
        "% header\n\n"
        + "".join(
            f"[1.0 - 2.5]\t{u}\t{c}\t[2.5, 2.5, 2.5]\nC-E1:\tNeutral;\t()\n"
            for u, c in utterances.items()
        )
    )
    (folder / "transcriptions" / f"{dialog}.txt").write_text(
        "".join(f"{u} [001.0000-002.5000]: Words of {u}.\n" for u in utterances)
    )
    for u in utterances:
        wav(f"{root.name}/Session{session}/sentences/wav/{dialog}/{u}.wav")


def test_iemocap(tmp_path, wav):
    root = tmp_path / "IEMOCAP_full_release"
    for session in (1, 2):
        _iemocap_dialog(
            root,
            session,
            f"Ses0{session}F_impro01",
            {"F000": "neu", "M000": "exc", "M001": "fru"},
            wav,
        )
        _iemocap_dialog(root, session, f"Ses0{session}F_script01_1", {"F000": "ang"}, wav)
    manifest = get_adapter("iemocap")(root, sessions=(1, 2))
    frame = manifest.frame.set_index("id")
    assert len(frame) == 6  # frustration is not in the 4-class set
    assert frame.loc["Ses01F_impro01_M000", "label"] == "happiness"  # excited merged into happiness
    assert frame.loc["Ses02F_impro01_M000", "speaker"] == "Ses02M"
    assert frame.loc[
        "Ses01F_script01_1_F000", ["label", "speaker", "session", "kind"]
    ].tolist() == ["anger", "Ses01F", "1", "scripted"]
    assert frame.loc["Ses01F_impro01_F000", "text"] == "Words of Ses01F_impro01_F000."
    assert Path(frame.loc["Ses01F_impro01_F000", "audio"]).is_file()
    with_frustration = get_adapter("iemocap")(
        root, classes={"fru": "frustration", "neu": "neutral"}, sessions=(1,)
    )
    assert sorted(with_frustration.labels) == ["frustration", "neutral"]
    with pytest.raises(CorpusError, match="Session3"):
        get_adapter("iemocap")(root)


def test_meld_from_csvs_with_and_without_clips(tmp_path, wav):
    header = (
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
        "StartTime,EndTime\n"
    )
    for name in ("train", "dev", "test"):
        (tmp_path / f"{name}_sent_emo.csv").write_text(
            header + '1,"Oh, he’s lost '
            'it…",Phoebe,sadness,negative,0,0,4,7,"00:20:57,256","00:21:00,049"\n'
            + "2,What?,Monica,surprise,negative,0,1,4,7,a,b\n",
            encoding="utf-8",
        )
    wav("train_splits/dia0_utt1.wav")
    frame = get_adapter("meld")(tmp_path).frame.set_index("id")
    assert len(frame) == 6 and set(frame["split"]) == {"train", "val", "test"}
    assert frame.loc["meld_dev_dia0_utt0", "split"] == "val"
    assert frame.loc["meld_train_dia0_utt0", "text"] == "Oh, he's lost it..."  # ASCII punctuation
    assert frame.loc["meld_train_dia0_utt1", "audio"].endswith("train_splits/dia0_utt1.wav")
    assert frame.loc["meld_test_dia0_utt0", "audio"].endswith(
        "output_repeated_splits_test/dia0_utt0.mp4"
    )
    (tmp_path / "test_sent_emo.csv").unlink()
    with pytest.raises(CorpusError, match="test_sent_emo.csv"):
        get_adapter("meld")(tmp_path)


def test_meld_real_csvs(meld_csvs):
    manifest = get_adapter("meld")(meld_csvs)
    counts = manifest.frame.groupby("split").size().to_dict()
    assert counts == {"train": 9989, "val": 1109, "test": 2610}
    assert manifest.labels == ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
    assert (manifest.frame.query("split == 'test'")["label"] == "neutral").sum() == 1256
    assert not manifest.frame["text"].str.contains("’").any()


def test_msp_podcast(tmp_path, wav):
    (tmp_path / "Labels").mkdir()
    (tmp_path / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
        "MSP-PODCAST_0001_0001.wav,A,5.2,2.0,4.8,127,Male,Train\n"
        "MSP-PODCAST_0001_0002.wav,X,4.0,4.0,4.0,127,Male,Train\n"
        "MSP-PODCAST_0002_0001.wav,N,4.0,4.0,4.0,128,Female,Development\n"
        "MSP-PODCAST_0003_0001.wav,S,2.0,2.0,2.0,Unknown,Female,Test1\n"
        "MSP-PODCAST_0004_0001.wav,H,5.0,6.0,4.0,130,Male,Test2\n"
    )
    for i in ("0001_0001", "0001_0002", "0002_0001", "0003_0001", "0004_0001"):
        wav(f"Audios/MSP-PODCAST_{i}.wav")
    (tmp_path / "Transcripts").mkdir()
    (tmp_path / "Transcripts" / "MSP-PODCAST_0001_0001.txt").write_text("I can't believe it\n")
    frame = get_adapter("msp-podcast")(tmp_path).frame.set_index("id")
    assert list(frame.index) == [
        "MSP-PODCAST_0001_0001",
        "MSP-PODCAST_0002_0001",
        "MSP-PODCAST_0003_0001",
        "MSP-PODCAST_0004_0001",
    ]
    assert frame["split"].tolist() == ["train", "val", "test", "test"]
    assert frame.loc["MSP-PODCAST_0001_0001", ["label", "speaker", "text", "arousal"]].tolist() == [
        "anger",
        "127",
        "I can't believe it",
        "5.2",
    ]
    assert frame.loc["MSP-PODCAST_0002_0001", "text"] is None
    only_test1 = get_adapter("msp-podcast")(tmp_path, test_partition="Test1").frame
    assert only_test1.query("split == 'test'")["partition"].tolist() == ["Test1"]


def test_ravdess(tmp_path, wav):
    for name in (
        "Actor_01/03-01-05-01-02-01-01",
        "Actor_02/03-01-01-02-01-02-02",
        "Actor_02/03-02-03-01-01-01-02",
    ):
        wav(f"{name}.wav")
    frame = get_adapter("ravdess")(tmp_path).frame.set_index("id")
    assert len(frame) == 2  # the song file (vocal channel 02) is skipped
    row = frame.loc["ravdess_03-01-05-01-02-01-01"]
    assert [row.label, row.speaker, row.gender, row.text] == [
        "anger",
        "01",
        "male",
        "Dogs are sitting by the door.",
    ]
    assert frame.loc["ravdess_03-01-01-02-01-02-02", ["label", "gender", "intensity"]].tolist() == [
        "neutral",
        "female",
        "strong",
    ]


def test_crema_d(tmp_path, wav):
    for name in ("1001_DFA_ANG_XX", "1091_WSI_SAD_HI", "README"):
        wav(f"AudioWAV/{name}.wav")
    frame = get_adapter("crema-d")(tmp_path).frame.set_index("id")
    assert frame.loc["cremad_1001_DFA_ANG_XX", ["label", "speaker", "text"]].tolist() == [
        "anger",
        "1001",
        "Don't forget a jacket.",
    ]
    assert frame.loc["cremad_1091_WSI_SAD_HI", "label"] == "sadness" and len(frame) == 2


def test_savee_both_layouts(tmp_path, wav):
    wav("AudioData/DC/sa01.wav")
    wav("AudioData/JK/su15.wav")
    wav("ALL/KL_a03.wav")
    frame = get_adapter("savee")(tmp_path).frame.set_index("id")
    assert frame.loc["savee_DC_sa01", ["label", "speaker"]].tolist() == ["sadness", "DC"]
    assert frame.loc["savee_JK_su15", "label"] == "surprise"
    assert frame.loc["savee_KL_a03", ["label", "speaker"]].tolist() == ["anger", "KL"]


def _counts(frame, column: str) -> dict[str, int]:
    return frame[column].value_counts().to_dict()


def test_ased(tmp_path, wav):
    for name in (
        "01Neutral/n1-01-01-01-01",
        "04Sad/S4-04-02-01-29",
        "05Angry/a5-07-02-02-41",
        "05Angry/a5-07-02-03-41",
        "05Angry/readme",
    ):
        wav(f"{name}.wav")
    wav("flat/f2-03-01-02-09.flac")
    frame = get_adapter("ased")(tmp_path).frame.set_index("id")
    assert sorted(frame.index) == [
        "ased_S4-04-02-01-29",
        "ased_a5-07-02-02-41",
        "ased_f2-03-01-02-09",
        "ased_n1-01-01-01-01",
    ]
    assert frame.loc[
        "ased_n1-01-01-01-01", ["label", "speaker", "gender", "text_code", "repetition"]
    ].tolist() == ["neutral", "01", "female", "01", "01"]
    assert frame.loc["ased_S4-04-02-01-29", ["label", "speaker", "gender"]].tolist() == [
        "sadness",
        "29",
        "female",
    ]  # upper-case letter as in the release
    assert frame.loc["ased_a5-07-02-02-41", ["label", "speaker", "gender"]].tolist() == [
        "anger",
        "41",
        "male",
    ]
    assert frame.loc["ased_f2-03-01-02-09", ["label", "speaker", "gender"]].tolist() == [
        "fear",
        "09",
        "male",
    ]
    assert frame["text"].isna().all()


def test_ased_real():
    manifest = get_adapter("ased")(shared_corpus("ased"))
    assert len(manifest) == 2474
    assert _counts(manifest.frame, "label") == {
        "neutral": 522,
        "fear": 510,
        "happiness": 486,
        "anger": 486,
        "sadness": 470,
    }
    assert (
        manifest.frame["speaker"].nunique() == 65
    )  # the paper's 65 participants (gg-bb would give 70)


def test_emovo(tmp_path, wav):
    for name in (
        "f1/dis-f1-b1",
        "f1/gio-f1-n5",
        "m3/pau-m3-l4",
        "m3/sor-m3-d2",
        "m2/tri-m2-b3",
        "m2/xyz-m2-b1",
        "m2/notes",
    ):
        wav(f"{name}.wav")
    wav("m1/rab-m1-b2.flac")
    frame = get_adapter("emovo")(tmp_path).frame.set_index("id")
    assert len(frame) == 6
    assert frame.loc["emovo_dis-f1-b1", ["label", "speaker", "gender", "text_code"]].tolist() == [
        "disgust",
        "f1",
        "female",
        "b1",
    ]
    assert frame.loc["emovo_gio-f1-n5", "label"] == "happiness"
    assert frame.loc["emovo_pau-m3-l4", ["label", "speaker", "gender", "text_code"]].tolist() == [
        "fear",
        "m3",
        "male",
        "l4",
    ]
    assert frame.loc["emovo_sor-m3-d2", "label"] == "surprise"
    assert frame.loc["emovo_tri-m2-b3", ["label", "speaker"]].tolist() == ["sadness", "m2"]
    assert frame.loc["emovo_rab-m1-b2", ["label", "speaker", "gender"]].tolist() == [
        "anger",
        "m1",
        "male",
    ]
    assert frame["text"].isna().all()


def test_emovo_real():
    manifest = get_adapter("emovo")(shared_corpus("emovo"))
    assert len(manifest) == 588
    assert _counts(manifest.frame, "label") == dict.fromkeys(
        ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"], 84
    )
    assert sorted(manifest.frame["speaker"].unique()) == ["f1", "f2", "f3", "m1", "m2", "m3"]
    assert manifest.frame["text_code"].nunique() == 14


def test_urdu(tmp_path, wav):
    for name in (
        "Angry/SM1_F10_A010",
        "Happy/SF3_F2_H05",
        "Neutral/SM27_F41_N093",
        "Sad/SM17_F1_S01",
        "Sad/SM17_F1",
        "Sad/Thumbs",
    ):
        wav(f"{name}.wav")
    wav("Sad/SF11_F6_S094.flac")
    frame = get_adapter("urdu")(tmp_path).frame.set_index("id")
    assert len(frame) == 5
    assert frame.loc["urdu_SM1_F10_A010", ["label", "speaker", "gender"]].tolist() == [
        "anger",
        "SM1",
        "male",
    ]
    assert frame.loc["urdu_SF3_F2_H05", ["label", "speaker", "gender"]].tolist() == [
        "happiness",
        "SF3",
        "female",
    ]
    assert frame.loc["urdu_SM27_F41_N093", ["label", "speaker", "gender"]].tolist() == [
        "neutral",
        "SM27",
        "male",
    ]
    assert frame.loc["urdu_SM17_F1_S01", ["label", "speaker"]].tolist() == ["sadness", "SM17"]
    assert frame.loc["urdu_SF11_F6_S094", ["label", "speaker", "gender"]].tolist() == [
        "sadness",
        "SF11",
        "female",
    ]
    assert frame["text"].isna().all()


def test_urdu_real():
    manifest = get_adapter("urdu")(shared_corpus("urdu"))
    assert len(manifest) == 400
    assert _counts(manifest.frame, "label") == dict.fromkeys(
        ["anger", "happiness", "neutral", "sadness"], 100
    )
    speakers = manifest.frame.drop_duplicates("speaker")
    assert len(speakers) == 29 and _counts(speakers, "gender") == {"male": 18, "female": 11}


def test_msp_improv(tmp_path, wav):
    (tmp_path / "Evaluation.txt").write_text(
        "UTD-IMPROV-S01A-F01-P-FM01.avi; A; A:2.0; V:2.0; D:3.0; N:3.0;\nA1; Angry; ...\n\n"
        "UTD-IMPROV-S02B-M03-R-MF02.avi; N; A:3.0; V:3.0; D:3.0; N:3.0;\n"
        "UTD-IMPROV-S03C-M03-S-MF03.avi; O; A:3.0; V:3.0; D:3.0; N:3.0;\n"
    )
    for stem in (
        "session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01",
        "session3/S02B/R/MSP-IMPROV-S02B-M03-R-MF02",
        "session3/S03C/S/MSP-IMPROV-S03C-M03-S-MF03",
    ):
        wav(f"Audio/{stem}.wav")
    frame = get_adapter("msp-improv")(tmp_path).frame.set_index("id")
    assert len(frame) == 2  # "other" is dropped
    assert frame.loc[
        "MSP-IMPROV-S01A-F01-P-FM01", ["label", "speaker", "session", "scenario"]
    ].tolist() == ["anger", "F01", "1", "P"]
    assert frame.loc["MSP-IMPROV-S02B-M03-R-MF02", ["label", "speaker"]].tolist() == [
        "neutral",
        "M03",
    ]


@pytest.mark.parametrize(
    "corpus",
    [
        "iemocap",
        "meld",
        "msp-podcast",
        "msp-improv",
        "ravdess",
        "crema-d",
        "savee",
        "emodb",
        "ased",
        "emovo",
        "urdu",
    ],
)
def test_missing_or_empty_corpus_names_the_problem(tmp_path, corpus):
    with pytest.raises(CorpusError, match=str(tmp_path / "absent")):
        get_adapter(corpus)(tmp_path / "absent")
    with pytest.raises(CorpusError) as error:
        get_adapter(corpus)(tmp_path)
    assert str(tmp_path) in str(error.value) and (
        "not found" in str(error.value) or "no utterances" in str(error.value)
    )


@pytest.mark.parametrize(
    "path",
    sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_config_is_valid(path):
    from crabser.config import load_config

    config = load_config(path)
    assert config.data.corpus in CORPORA
    if config.train.finetune:
        from crabser.training.fit import finetune_encoders

        encoders = finetune_encoders(config)
        for modality in config.model.modalities:  # each fine-tuned branch names its encoder
            assert encoders[f"{modality}_model"], f"{path.name}: no {modality} encoder to fine-tune"


def test_a_non_utf8_transcript_counts_as_missing_and_is_named(tmp_path, caplog):
    import soundfile as sf

    folder = tmp_path / "calm"
    folder.mkdir()
    for name, text in (("good", b"fine words"), ("bad", "très mal".encode("latin-1"))):
        sf.write(folder / f"{name}.wav", tone(0.2), 16000)
        (folder / f"{name}.txt").write_bytes(text)
    frame = get_adapter("folder")(tmp_path).frame.set_index("id")
    assert frame.loc["calm/good", "text"] == "fine words" and frame.loc["calm/bad", "text"] is None
    assert str(folder / "bad.txt") in caplog.text and "UTF-8" in caplog.text


def test_adapter_options_and_roots_are_checked_with_the_setting_named(tmp_path):
    """A misspelt adapter option is refused by name with the options the adapter takes (not a
    TypeError from inside); a corpus root that is not there says which setting to set."""
    from crabser.config import load_config
    from crabser.data.corpora import read_corpus
    from crabser.errors import ConfigError, CorpusError
    from crabser.pipeline import source_manifest

    with pytest.raises(ConfigError, match=r"iemocap does not take \['clases'\]; it takes: classes"):
        read_corpus("iemocap", tmp_path, {"clases": 4})
    config = load_config(None, ["data.corpus=emodb", f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(CorpusError, match=r"folder not found.*set data\.root"):
        source_manifest(config)
    several = load_config(
        None, [f"data.corpora=[{{corpus: emovo, root: {tmp_path}, options: {{speakers: 2}}}}]"]
    )
    with pytest.raises(ConfigError, match=r"data\.corpora\[0\]\.options: emovo does not take"):
        source_manifest(several)


def test_an_adapter_taking_any_option_gets_them_unchecked(monkeypatch, tmp_path):
    from crabser.data import corpora
    from crabser.data.manifest import Manifest

    seen = {}

    def prepare(root, **options):
        seen.update(options)
        return Manifest(pd.DataFrame({"id": ["a"], "audio": ["a.wav"], "label": ["x"]}))

    monkeypatch.setattr(corpora, "get_adapter", lambda name: prepare)
    corpora.read_corpus("anything", tmp_path, {"whatever": 1})
    assert seen == {"whatever": 1}
