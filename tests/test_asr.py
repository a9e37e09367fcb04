"""Offline ASR: WER arithmetic, the embedded Whisper on known speech, transcripts cached and
marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import tone

from crabser.data.audio import load_audio
from crabser.data.manifest import Manifest
from crabser.evaluation.wer import edit_distance, normalise_words, word_error_rate
from crabser.features.asr import WhisperASR, fill_missing_transcripts
from crabser.features.store import FeatureStore

SPOKEN = Path(__file__).parent / "data" / "espeak_i_wonder_what_this_is_about.flac"


def test_word_error_rate_by_hand():
    assert normalise_words("Kid's  are, TALKING... by the door!") == [
        "kid's",
        "are",
        "talking",
        "by",
        "the",
        "door",
    ]
    # one substitution (sat->sit), one deletion (the), one insertion (down): 3 edits / 6 words
    assert (
        edit_distance(
            ["the", "cat", "sat", "on", "the", "mat"], ["the", "cat", "sit", "on", "mat", "down"]
        )
        == 3
    )
    assert word_error_rate(
        ["the cat sat on the mat", "hello world"], ["the cat sit on mat down", "hello world"]
    ) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="2 references but 1"):
        word_error_rate(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def asr() -> WhisperASR:
    return WhisperASR()


def test_embedded_whisper_transcribes_known_speech(asr):
    hypothesis = asr.transcribe(load_audio(SPOKEN, 16000))
    assert word_error_rate(["I wonder what this is about."], [hypothesis]) <= 0.2, hypothesis
    assert asr.cache_id.startswith("asr:whisper-tiny.en-ct2")


class CountingASR:
    """A stand-in ASR that counts its calls."""

    cache_id = "asr:fake"

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, wave) -> str:
        self.calls += 1
        return f"fake transcript {len(wave)}"


def test_missing_transcripts_are_filled_cached_and_marked(tmp_path, write_wav):
    good = write_wav("a.wav", tone(0.5))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    frame = pd.DataFrame(
        [
            {"id": "has_text", "audio": str(good), "label": "x", "text": "given words"},
            {"id": "no_text", "audio": str(good), "label": "x", "text": None},
            {"id": "bad_audio", "audio": str(empty), "label": "x", "text": ""},
        ]
    )
    fake, store = CountingASR(), FeatureStore(tmp_path / "cache")
    filled = fill_missing_transcripts(Manifest(frame), fake, store).frame.set_index("id")
    assert filled.loc["has_text", ["text", "text_source"]].tolist() == ["given words", "reference"]
    assert filled.loc["no_text", ["text", "text_source"]].tolist() == [
        "fake transcript 8000",
        "asr",
    ]
    assert (
        filled.loc["bad_audio", "text_source"] == "" and not filled.loc["bad_audio", "text"]
    )  # skipped, others kept
    again = fill_missing_transcripts(Manifest(frame), fake, store).frame.set_index("id")
    assert (
        fake.calls == 1 and again.loc["no_text", "text"] == "fake transcript 8000"
    )  # read from the cache
