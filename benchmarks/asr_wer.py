"""ASR word error rate of the embedded Whisper tiny.en on speech synthesised with espeak-ng.

No English speech with reference transcripts is available offline (MELD's audio is not here), so
the sentences below (Harvard sentences, RAVDESS and CREMA-D statements) are spoken by espeak-ng's
en-us voice at three speaking rates, resampled to 16 kHz, transcribed by crabser's WhisperASR and
scored against the text. Synthetic speech is cleaner but less natural than real speech: the WER
here says the ASR path works, not how it does on real conversational audio. Baseline for the
speed ratio: transcription time vs. audio duration (real-time factor).

Needs espeak-ng on PATH (Debian: apt-get install espeak-ng). Usage: python -m benchmarks.asr_wer
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import command_line, header, write_section
from crabser.data.audio import load_audio
from crabser.evaluation.wer import word_error_rate
from crabser.features.asr import WhisperASR

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "Kids are talking by the door.",
    "Dogs are sitting by the door.",
    "I'm on my way to the meeting.",
    "I wonder what this is about.",
    "Maybe tomorrow it will be cold.",
    "I think I have a doctor's appointment.",
]
RATES = (140, 175, 210)  # words per minute


def synthesise(text: str, rate: int, path: Path) -> Path:
    """Speak ``text`` with espeak-ng into a WAV file."""
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(rate), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="175 wpm only, 4 sentences")
    args = parser.parse_args()
    rates, sentences = ((175,), SENTENCES[:4]) if args.quick else (RATES, SENTENCES)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    asr = WhisperASR()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in rates:
            waves = [
                load_audio(synthesise(s, rate, Path(tmp) / f"{rate}_{i}.wav"), 16000)
                for i, s in enumerate(sentences)
            ]
            started = time.perf_counter()
            hypotheses = [asr.transcribe(w) for w in waves]
            seconds = time.perf_counter() - started
            audio = sum(len(w) for w in waves) / 16000
            wer = word_error_rate(sentences, hypotheses)
            rows.append(
                f"| {rate} wpm | {len(sentences)} | {audio:.1f} | {wer:.3f} | {seconds:.1f} | "
                f"{seconds / audio:.3f} |"
            )
            print(rows[-1], flush=True)
            for ref, hyp in zip(sentences, hypotheses):
                if word_error_rate([ref], [hyp]) > 0:
                    print(f"    {ref!r} -> {hyp!r}")
    body = (
        header(command_line())
        + "\nEmbedded Whisper tiny.en (CTranslate2, greedy, 30 s windows) on espeak-ng en-us "
        "speech of known\n"
        "sentences (synthetic: cleaner than real speech, so this checks the ASR path, not "
        "real-world WER).\n\n"
        "| espeak-ng rate | sentences | audio s | WER | transcribe s | RTF "
        "|\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    write_section("ASR: Whisper tiny.en WER on synthesised speech", body)


if __name__ == "__main__":
    main()
