"""Long recordings: voice-activity and window segmentation, the timeline, and its outputs."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import soundfile as sf
from conftest import tone
from typer.testing import CliRunner

from crabser.cli import app
from crabser.data.audio import decode_audio, stream_audio
from crabser.data.corpora import emodb as emodb_adapter
from crabser.errors import TranscriptError
from crabser.prediction import Prediction
from crabser.segment import (
    SegmentSettings,
    output_stems,
    plot_timeline,
    predict_timeline,
    timeline_json,
    timeline_record,
    vad_segments,
    window_segments,
    write_timeline_csv,
)

RATE = 16000


def _blocks(wave: np.ndarray, size: int = 7919):
    """An odd block size, so segment and frame edges never line up with block edges."""
    return (wave[i : i + size] for i in range(0, len(wave), size))


@pytest.fixture(scope="module")
def speech_with_pauses(emodb):
    """Two real EmoDB sentences with 2 s of silence before, between and after: (wave, [(start,
    end)])."""
    frame = emodb_adapter.prepare(emodb).frame.set_index("id")
    clips = [decode_audio(frame.loc[name, "audio"]) for name in ("emodb_03a01Fa", "emodb_08a01Ab")]
    silence = np.zeros(2 * RATE, dtype=np.float32)
    parts, spans, at = [silence], [], len(silence)
    for clip in clips:
        parts += [clip, silence]
        spans.append((at / RATE, (at + len(clip)) / RATE))
        at += len(clip) + len(silence)
    return np.concatenate(parts), spans


def test_vad_finds_each_sentence_and_not_the_silence(speech_with_pauses):
    wave, spans = speech_with_pauses
    segments = list(vad_segments(_blocks(wave), SegmentSettings()))
    found = [(start, start + len(w) / RATE) for start, w in segments]
    for start, end in found:  # every segment lies inside a sentence (VAD frames: 30 ms slack)
        assert any(s - 0.05 <= start and end <= e + 0.35 for s, e in spans), (found, spans)
    for s, e in spans:  # and covers most of it
        covered = sum(max(0.0, min(e, b) - max(s, a)) for a, b in found)
        assert covered > 0.6 * (e - s), (found, spans)
    for start, w in segments:  # the samples are the recording's own at that time
        offset = round(start * RATE)
        assert np.array_equal(w, wave[offset : offset + len(w)])


def test_vad_cuts_long_speech_at_max_seconds(speech_with_pauses):
    wave, _ = speech_with_pauses
    segments = list(vad_segments(_blocks(wave), SegmentSettings(max_seconds=0.6, max_gap=5.0)))
    assert len(segments) >= 3 and all(len(w) <= 0.6 * RATE + 1 for _, w in segments)


def test_fixed_windows_overlap_cover_the_tail_and_skip_silence():
    wave = np.concatenate([tone(9.0), np.zeros(4 * RATE, dtype=np.float32), tone(1.5)])  # 14.5 s
    segments = list(
        window_segments(_blocks(wave), SegmentSettings(mode="fixed", window=4.0, hop=2.0))
    )
    starts = [round(s, 3) for s, _ in segments]
    assert starts == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]  # 8 and 10 s each hold a second of tone
    assert all(len(w) == 4 * RATE for _, w in segments[:-1])
    assert len(segments[-1][1]) == int(
        2.5 * RATE
    )  # the tail 12-14.5 s, half of it not covered before
    silent_only = np.concatenate([tone(4.0), np.zeros(8 * RATE, dtype=np.float32)])
    assert [s for s, _ in window_segments(_blocks(silent_only), SegmentSettings(mode="fixed"))] == [
        0.0,
        2.0,
    ]


class _FakeRecognizer:
    """Labels a segment 'loud' or 'soft' by its RMS; fails segments whose name is listed."""

    def __init__(self, fail_at: float | None = None) -> None:
        self.labels, self.modalities = ["loud", "soft"], ["speech"]
        self.batches: list[int] = []
        self.fail_at = fail_at

    def predict_batch(
        self, waves, texts=None, *, sample_rate=None, names=None, min_confidence=None
    ):
        self.batches.append(len(waves))
        return [self.predict(w, sample_rate=sample_rate, name=n) for w, n in zip(waves, names)]

    def predict(self, wave, text=None, *, sample_rate=None, name=None, min_confidence=None):
        if self.fail_at is not None and name == f"segment {self.fail_at:.2f}s":
            raise TranscriptError(name, "ASR heard no words")
        loud = float(np.sqrt(np.mean(wave**2))) > 0.1
        p = 0.9 if loud else 0.1
        return Prediction(name, "loud" if loud else "soft", {"loud": p, "soft": 1 - p})


def test_timeline_batches_segments_and_keeps_going_past_a_failed_one(tmp_path):
    wave = np.concatenate([tone(8.0), 0.05 * tone(8.0)])
    path = tmp_path / "long.wav"
    sf.write(path, wave, RATE)
    recognizer = _FakeRecognizer(fail_at=6.0)
    seen = []
    blocks, total = stream_audio(path)
    entries = predict_timeline(
        recognizer,
        blocks,
        total,
        SegmentSettings(mode="fixed", batch_size=3),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert [e.start for e in entries] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    assert [e.label for e in entries] == ["loud", "loud", "loud", None, "soft", "soft", "soft"]
    assert "ASR heard no words" in entries[3].error
    assert seen[-1] == (16.0, 16.0) and [d for d, _ in seen] == sorted(d for d, _ in seen)

    write_timeline_csv(entries, recognizer.labels, tmp_path / "t.csv")
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0] == "start,end,label,transcript,error,loud,soft" and len(rows) == 8
    assert rows[1].startswith("0.0,4.0,loud,,,0.9000,0.1000")
    record = timeline_record("talk.wav", 16.0, recognizer.labels, entries)
    assert json.loads(timeline_json(record)) == {
        "source": "talk.wav",
        "duration": 16.0,
        "labels": ["loud", "soft"],
        "segments": [asdict(e) for e in entries],
    }
    plot_timeline(entries, recognizer.labels, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 5000


def test_segment_cli_on_a_ten_minute_recording_writes_the_timeline(tmp_path, emodb):
    """The packaged model over 10 minutes of real speech: bounded time, every output written."""
    frame = emodb_adapter.prepare(emodb).frame
    clips = [decode_audio(p) for p in frame[frame["speaker"].isin(["15", "16"])]["audio"][:40]]
    pause = np.zeros(RATE // 2, dtype=np.float32)
    one_pass = np.concatenate([x for c in clips for x in (c, pause)])
    wave = np.tile(one_pass, int(np.ceil(600 * RATE / len(one_pass))))[: 600 * RATE]
    path = tmp_path / "ten_minutes.flac"
    sf.write(path, wave, RATE)
    result = CliRunner().invoke(
        app, ["predict", str(path), "--segment", "--out", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    segments = answer["segments"]
    assert len(segments) > 100 and segments[-1]["end"] <= 600.0 + 1e-6
    assert all(s["label"] for s in segments)
    for suffix in ("csv", "json", "png"):
        assert (tmp_path / "out" / f"ten_minutes.timeline.{suffix}").is_file()
    written = json.loads((tmp_path / "out" / "ten_minutes.timeline.json").read_text())
    assert written == answer and answer["source"] == str(path) and answer["duration"] == 600.0


def test_output_stems_are_distinct_for_same_named_files(tmp_path):
    a, b, c, nested = (
        tmp_path / "a/x.wav",
        tmp_path / "b/x.wav",
        tmp_path / "c/y.wav",
        tmp_path / "d/a/x.wav",
    )
    stems = output_stems([a, b, c, a])
    assert stems[c] == "y" and stems[a] != stems[b]
    assert stems[a].endswith("a_x") and stems[b].endswith("b_x")
    three = output_stems([a, b, nested])
    assert len(set(three.values())) == 3


def test_output_stems_of_one_folder_add_the_extension_and_beside_inputs_keep_stems(tmp_path):
    a_wav, a_mp3, b_wav = tmp_path / "a/x.wav", tmp_path / "a/x.mp3", tmp_path / "b/x.wav"
    assert output_stems([a_wav, a_mp3]) == {a_wav: "x", a_mp3: "x_mp3"}
    one_folder = output_stems([a_wav, a_mp3, b_wav])
    assert one_folder == {a_wav: "a_x", a_mp3: "a_x_mp3", b_wav: "b_x"}
    beside = output_stems([a_wav, a_mp3, b_wav], beside_inputs=True)
    assert beside == {a_wav: "x", a_mp3: "x_mp3", b_wav: "x"}


def test_live_windows_are_the_stream_cut_every_hop_whatever_the_chunks():
    from crabser.segment import LiveWindows

    rng = np.random.default_rng(0)
    stream = rng.standard_normal(16000 * 7 + 123).astype(np.float32)
    windows, cut, at = [], LiveWindows(window=2.0, hop=0.5), 0
    for size in rng.integers(1, 9000, 200):
        windows += cut.push(stream[at : at + size])
        assert cut.kept <= 32000 + 9000  # one window and one chunk, never the stream
        at += size
        if at >= len(stream):
            break
    assert cut.seconds == pytest.approx(len(stream) / 16000)
    assert [start for start, _ in windows] == [0.5 * k for k in range(11)]
    for start, wave in windows:
        np.testing.assert_array_equal(wave, stream[int(start * 16000) : int(start * 16000) + 32000])
    with pytest.raises(ValueError, match="at most the window"):
        LiveWindows(window=1.0, hop=2.0)
