"""Long recordings: split on voice activity (or fixed windows) and predict a timeline.

``crabser predict long.wav --segment`` and :func:`predict_timeline`. The recording is read in
30 s blocks (:func:`crabser.data.audio.stream_audio`) and segments are predicted in small batches
as they are found, so memory stays bounded by a block plus one batch of segments, whatever the
length of the recording.

Choices (the papers are silent on segmentation):

- ``mode="vad"`` (default): WebRTC VAD (``webrtcvad-wheels``, no weights to download) on 30 ms
  frames, aggressiveness 2; a segment ends after ``max_gap`` s (0.3) of non-speech and is cut at
  ``max_seconds`` (10 s, about an EmoDB-to-IEMOCAP utterance); segments shorter than
  ``min_seconds`` (0.5 s) are dropped as clicks and breaths.
- ``mode="fixed"``: windows of ``window`` s (4) every ``hop`` s (2); silent windows are skipped.
- Models with text get each segment's transcript from the offline ASR; a transcript given for the
  whole recording cannot be aligned to segments and is not used. A segment that fails (for example
  ASR hears no words) is kept in the timeline with its error, and the others go on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crabser.data.audio import SILENCE_PEAK
from crabser.errors import CrabserError
from crabser.io import atomic_path
from crabser.prediction import predict_each

SAMPLE_RATE = 16000
FRAME_MS = 30


@dataclass
class SegmentSettings:
    """How a long recording is cut (see the module docstring for the defaults' reasons)."""

    mode: Literal["vad", "fixed"] = "vad"
    aggressiveness: int = 2
    max_gap: float = 0.3
    min_seconds: float = 0.5
    max_seconds: float = 10.0
    window: float = 4.0
    hop: float = 2.0
    batch_size: int = 8
    min_confidence: float | None = None  #: below it a segment's label is "uncertain"


@dataclass
class TimelineEntry:
    """One segment's prediction (``label`` None and ``error`` set when the segment failed)."""

    start: float
    end: float
    label: str | None
    probabilities: dict[str, float]
    transcript: str | None = None
    error: str | None = None


def vad_segments(
    blocks: Iterator[np.ndarray], settings: SegmentSettings
) -> Iterator[tuple[float, np.ndarray]]:
    """``(start seconds, wave)`` of each stretch of speech in a stream of 16 kHz blocks."""
    import webrtcvad

    if not 0 <= settings.aggressiveness <= 3:
        raise CrabserError(f"VAD aggressiveness must be 0-3, got {settings.aggressiveness}")
    vad = webrtcvad.Vad(settings.aggressiveness)
    frame = SAMPLE_RATE * FRAME_MS // 1000
    max_gap_frames = max(1, round(settings.max_gap * 1000 / FRAME_MS))
    max_frames = max(1, round(settings.max_seconds * 1000 / FRAME_MS))
    min_frames = round(settings.min_seconds * 1000 / FRAME_MS)
    pending = np.zeros(0, dtype=np.float32)
    index = 0  # frames seen
    speech: list[np.ndarray] = []  # frames of the open segment (trailing silence included)
    start = gap = 0

    def close() -> Iterator[tuple[float, np.ndarray]]:
        kept = len(speech) - gap
        if kept >= max(1, min_frames):
            yield start * FRAME_MS / 1000, np.concatenate(speech[:kept])

    for block in blocks:
        pending = np.concatenate([pending, block])
        usable = len(pending) // frame * frame
        for offset in range(0, usable, frame):
            samples = pending[offset : offset + frame]
            pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
            voiced = vad.is_speech(pcm, SAMPLE_RATE)
            if speech:
                speech.append(samples)
                gap = 0 if voiced else gap + 1
                if gap >= max_gap_frames or len(speech) >= max_frames:
                    yield from close()
                    speech, gap = [], 0
            elif voiced:
                speech, start, gap = [samples], index, 0
            index += 1
        pending = pending[usable:]
    if speech:
        yield from close()


def window_segments(
    blocks: Iterator[np.ndarray], settings: SegmentSettings
) -> Iterator[tuple[float, np.ndarray]]:
    """``(start seconds, wave)`` of fixed, overlapping windows; silent windows are skipped."""
    if not 0 < settings.hop <= settings.window:
        raise CrabserError(
            f"window segmentation needs 0 < hop <= window, got hop {settings.hop}, window "
            f"{settings.window}"
        )
    window, hop = int(settings.window * SAMPLE_RATE), int(settings.hop * SAMPLE_RATE)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # sample index of buffer[0]
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while len(buffer) >= window:
            piece = buffer[:window]
            if np.abs(piece).max() >= SILENCE_PEAK:
                yield offset / SAMPLE_RATE, piece.copy()
            buffer, offset = buffer[hop:], offset + hop
    # what is left is shorter than a window; the last window covered its first window - hop samples
    uncovered = len(buffer) if offset == 0 else len(buffer) - (window - hop)
    if (
        uncovered > 0
        and len(buffer) >= settings.min_seconds * SAMPLE_RATE
        and np.abs(buffer).max() >= SILENCE_PEAK
    ):
        yield offset / SAMPLE_RATE, buffer.copy()


def predict_timeline(
    recognizer,
    blocks: Iterator[np.ndarray],
    total: float,
    settings: SegmentSettings | None = None,
    progress: Callable[[float, float], None] | None = None,
) -> list[TimelineEntry]:
    """Segment a recording (the 16 kHz ``blocks`` and duration from
    :func:`~crabser.data.audio.stream_audio`,
    opened by the caller, who may check the duration first) and predict every segment;
    ``progress(seconds done, total)`` after each batch."""
    settings = settings or SegmentSettings()
    cut = vad_segments if settings.mode == "vad" else window_segments
    entries: list[TimelineEntry] = []
    batch: list[tuple[float, np.ndarray]] = []
    for segment in cut(blocks, settings):
        batch.append(segment)
        if len(batch) >= settings.batch_size:
            entries += _predict_batch(recognizer, batch, settings.min_confidence)
            batch = []
            if progress:
                progress(entries[-1].end, total)
    if batch:
        entries += _predict_batch(recognizer, batch, settings.min_confidence)
    if progress:
        progress(total, total)
    return entries


def _predict_batch(
    recognizer, batch: list[tuple[float, np.ndarray]], min_confidence: float | None = None
) -> list[TimelineEntry]:
    """Predict segments together; if the batch fails, one by one, so one bad segment loses no
    other (:func:`crabser.prediction.predict_each`)."""
    names = [f"segment {start:.2f}s" for start, _ in batch]
    answers = predict_each(
        recognizer,
        [w for _, w in batch],
        [None] * len(batch),
        names,
        sample_rate=SAMPLE_RATE,
        min_confidence=min_confidence,
    )
    entries = []
    for (start, wave), answer in zip(batch, answers):
        if isinstance(answer, CrabserError):
            end = round(start + len(wave) / SAMPLE_RATE, 3)
            entries.append(TimelineEntry(round(start, 3), end, None, {}, None, str(answer)))
        else:
            entries.append(_entry(start, wave, answer))
    return entries


def _entry(start: float, wave: np.ndarray, prediction) -> TimelineEntry:
    end = start + len(wave) / SAMPLE_RATE
    return TimelineEntry(
        round(start, 3),
        round(end, 3),
        prediction.label,
        prediction.probabilities,
        prediction.transcript,
    )


class LiveWindows:
    """A live stream cut into windows as it arrives: :meth:`push` 16 kHz samples, get each window
    of ``window`` s that they complete, every ``hop`` s (``hop`` <= ``window``), as ``(start
    seconds, wave)``. Pushed chunks are joined only when a window is complete (many tiny messages
    cost no copying), and samples no later window reads are dropped: memory stays one window plus
    the chunks since, and the windows one push returns."""

    def __init__(self, window: float, hop: float) -> None:
        if not 0 < hop <= window:
            raise ValueError(f"hop ({hop} s) must be positive and at most the window ({window} s)")
        self.size, self.step = round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE)
        self.chunks: list[np.ndarray] = []
        self.buffer_start = 0  #: the stream position (samples) of the first kept sample
        self.next_start = 0  #: where the next window starts
        self.received = 0

    @property
    def seconds(self) -> float:
        """Seconds of audio received so far."""
        return self.received / SAMPLE_RATE

    @property
    def kept(self) -> int:
        """Samples held."""
        return sum(len(chunk) for chunk in self.chunks)

    def push(self, samples: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Add samples; the windows now complete."""
        self.chunks.append(np.asarray(samples, dtype=np.float32))
        self.received += len(samples)
        if self.next_start + self.size > self.received:
            return []
        buffer = np.concatenate(self.chunks)
        windows = []
        while self.next_start + self.size <= self.received:
            at = self.next_start - self.buffer_start
            windows.append((self.next_start / SAMPLE_RATE, buffer[at : at + self.size].copy()))
            self.next_start += self.step
        drop = self.next_start - self.buffer_start  # no later window reads these samples
        self.chunks, self.buffer_start = [buffer[drop:]], self.buffer_start + drop
        return windows


def predict_live_window(
    recognizer, start: float, wave: np.ndarray, min_confidence: float | None = None
) -> TimelineEntry:
    """One live window's entry: silent (peak under :data:`SILENCE_PEAK`) gets ``error`` "silent"
    and no prediction, a failure its error."""
    if not len(wave) or float(np.abs(wave).max()) < SILENCE_PEAK:
        end = round(start + len(wave) / SAMPLE_RATE, 3)
        return TimelineEntry(round(start, 3), end, None, {}, None, "silent")
    return _predict_batch(recognizer, [(start, wave)], min_confidence)[0]


def timeline_record(
    source: str, duration: float, labels: list[str], entries: list[TimelineEntry]
) -> dict[str, Any]:
    """A recording's timeline as every output gives it (``crabser predict --segment --json``, the
    ``.timeline.json`` file, ``POST /v1/predict/segments``): source, duration, the model's labels
    and one record per segment (start, end, label, probabilities, transcript, error)."""
    return {
        "source": source,
        "duration": round(duration, 3),
        "labels": list(labels),
        "segments": [asdict(e) for e in entries],
    }


def timeline_json(record: dict[str, Any]) -> str:
    """A :func:`timeline_record` as JSON (strict: the recognizer never returns NaN
    probabilities)."""
    return json.dumps(record, ensure_ascii=False, indent=1, allow_nan=False)


def output_stems(paths: list[Path], beside_inputs: bool = False) -> dict[Path, str]:
    """A distinct output name per input file for one output folder: the file's stem, or, where two
    inputs share a stem (``a/x.wav``, ``b/x.wav``), the stem prefixed with the parent folders that
    tell them apart (``a_x``, ``b_x``); inputs of one folder that share a stem (``x.wav``,
    ``x.mp3``) add their extension (``x``, ``x_mp3``), and a number if even that is taken.
    ``beside_inputs``: each output goes to its input's own folder, so names need only be distinct
    within a folder."""
    resolved = {path: path.resolve() for path in paths}
    if beside_inputs:
        folders: dict[Path, list[Path]] = {}
        for path in paths:
            folders.setdefault(resolved[path].parent, []).append(path)
        return {
            path: stem for group in folders.values() for path, stem in output_stems(group).items()
        }
    stems: dict[Path, str] = {}
    for path in paths:
        folders_of_twins = {resolved[p].parent for p in paths if p.stem == path.stem}
        depth = 0
        while len({_named(f / path.stem, depth) for f in folders_of_twins}) < len(
            folders_of_twins
        ) and depth < len(resolved[path].parts):
            depth += 1
        stems[path] = _named(resolved[path], depth)
    taken: dict[str, Path] = {}
    for path in paths:
        name, n = stems[path], 1
        if name in taken and taken[name] != resolved[path] and resolved[path].suffix:
            name = f"{stems[path]}_{resolved[path].suffix.lstrip('.')}"
        while name in taken and taken[name] != resolved[path]:
            n += 1
            name = f"{stems[path]}_{n}"
        taken[name], stems[path] = resolved[path], name
    return stems


def _named(path: Path, depth: int) -> str:
    """The stem of ``path`` prefixed with its ``depth`` nearest parent folder names."""
    parents = [p.name for p in list(path.parents)[:depth] if p.name][::-1]
    return "_".join([*parents, path.stem])


def write_timeline_csv(entries: list[TimelineEntry], labels: list[str], path: Path) -> None:
    """One row per segment: start, end, label, transcript, error, then a probability per class
    (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["start", "end", "label", "transcript", "error", *labels])
        for e in entries:
            probs = [
                f"{e.probabilities[label]:.4f}" if label in e.probabilities else ""
                for label in labels
            ]
            writer.writerow(
                [e.start, e.end, e.label or "", e.transcript or "", e.error or "", *probs]
            )


def plot_timeline(
    entries: list[TimelineEntry], labels: list[str], path: Path, title: str = ""
) -> None:
    """Each class's probability over time (a step per segment) above a bar of the predicted
    labels, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours: dict[str | None, Any] = {
        label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)
    }
    fig, (top, bar) = plt.subplots(
        2, 1, figsize=(12, 4), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    for label in labels:
        for e in entries:
            if label in e.probabilities:
                top.hlines(
                    e.probabilities[label], e.start, e.end, color=colours[label], linewidth=2
                )
        top.plot([], [], color=colours[label], label=label)
    for e in entries:
        bar.axvspan(
            e.start,
            e.end,
            color=colours.get(e.label, (0.8, 0.8, 0.8)),
            alpha=0.9 if e.label else 0.3,
        )
    top.set_ylim(0, 1.02)
    top.set_ylabel("probability")
    top.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=min(len(labels), 7),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title)
    bar.set_yticks([])
    bar.set_xlabel("time (s)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
