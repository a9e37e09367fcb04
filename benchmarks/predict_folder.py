"""Prediction over a folder of 1,000 clips with the packaged default model, three ways:

- ``crabser predict DIR --out t.parquet`` (one process: the folder searched by content, batches of
  16, the table written with resume records);
- ``Recognizer.predict_batch`` over the same paths in batches of 16, in a Python process (the
  library without the CLI's folder search, progress bar and table);
- ``crabser predict FILE`` once per file, as a shell loop does (measured on a sample of the files:
  each call pays the start-up; the rate is clips per second of that sample);

each in a fresh process, with its wall time (start-up and model load included), clips per second
and peak resident memory (``ru_maxrss`` of the process). Then an interrupted run: the CLI gets
SIGINT (Ctrl-C) half-way, is run again with the same ``--out``, and its table is compared with the
uninterrupted one (same rows, same order, same labels, largest probability difference).

The folder holds the vendored EmoDB clips twice (two sub-folders of links, 1,000 of them in all):
a fresh clone has them, and clip lengths are those of acted speech (1-9 s).

Usage (from the repository root): python -m benchmarks.predict_folder [--quick]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import REPO, command_line, header, write_section

EMODB_FLAC = REPO / "data" / "emodb" / "flac"
CLI = [sys.executable, "-m", "crabser.cli"]


def make_folder(root: Path, clips: int) -> Path:
    """``clips`` links to EmoDB files in two sub-folders (each clip at most twice)."""
    files = sorted(EMODB_FLAC.glob("*.flac"))
    folder = root / "clips"
    for i in range(clips):
        part = folder / ("a" if i < len(files) else "b")
        part.mkdir(parents=True, exist_ok=True)
        source = files[i % len(files)]
        (part / source.name).symlink_to(source)
    return folder


def measured(command: list[str], stop_after: float | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak resident MB, exit code) of a command in its own process; with
    ``stop_after``, SIGINT after that many seconds."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
    )
    if stop_after is not None:
        time.sleep(stop_after)
        process.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, process.returncode


def batch_worker(listing: Path) -> None:
    """The predict_batch way (run in its own process by :func:`main`)."""
    from crabser.inference import Recognizer

    paths = listing.read_text().splitlines()
    recognizer = Recognizer.load()
    for start in range(0, len(paths), 16):
        recognizer.predict_batch(paths[start : start + 16])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="60 clips, 3 CLI calls")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        batch_worker(args.worker)
        return
    clips, loop_clips = (60, 3) if args.quick else (1000, 20)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_folder(root, clips)
        paths = sorted(str(p) for p in folder.rglob("*.flac"))
        listing = root / "paths.txt"
        listing.write_text("\n".join(paths))
        whole = root / "whole.parquet"
        rows = []
        seconds, peak, code = measured([*CLI, "predict", str(folder), "--out", str(whole)])
        assert code == 0, f"crabser predict DIR failed ({code})"
        rows.append(("`crabser predict DIR --out t.parquet`", clips, seconds, peak))
        print(f"table: {clips / seconds:.1f} clips/s, {peak:.0f} MB", flush=True)
        worker = [sys.executable, "-m", "benchmarks.predict_folder", "--worker", str(listing)]
        seconds, peak, code = measured(worker)
        assert code == 0, f"the predict_batch worker failed ({code})"
        rows.append(("`Recognizer.predict_batch`, batches of 16", clips, seconds, peak))
        print(f"predict_batch: {clips / seconds:.1f} clips/s, {peak:.0f} MB", flush=True)
        loop_seconds, loop_peak = 0.0, 0.0
        for path in paths[:: max(1, len(paths) // loop_clips)][:loop_clips]:
            seconds, peak, code = measured([*CLI, "predict", path])
            assert code == 0, f"crabser predict {path} failed ({code})"
            loop_seconds, loop_peak = loop_seconds + seconds, max(loop_peak, peak)
        rows.append(("`crabser predict FILE` per file", loop_clips, loop_seconds, loop_peak))
        print(f"CLI per file: {loop_clips / loop_seconds:.2f} clips/s", flush=True)
        resumed = root / "resumed.parquet"
        table_seconds = rows[0][2]
        first, _, code = measured(
            [*CLI, "predict", str(folder), "--out", str(resumed)], stop_after=table_seconds / 2
        )
        partial = resumed.with_name(resumed.name + ".partial.jsonl")
        kept = len(partial.read_text().splitlines()) if partial.is_file() else 0
        second, _, code2 = measured([*CLI, "predict", str(folder), "--out", str(resumed)])
        assert code2 == 0, f"the resumed run failed ({code2})"
        a, b = pd.read_parquet(whole), pd.read_parquet(resumed)
        columns = [c for c in a.columns if c.startswith("probabilities.")]
        same_rows = list(a["source"]) == list(b["source"]) and list(a["label"]) == list(b["label"])
        difference = float(np.abs(a[columns].to_numpy() - b[columns].to_numpy()).max())
    base = rows[0]
    lines = [
        "| way | clips | wall s | clips/s | ratio to the table | peak memory MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, count, seconds, peak in rows:
        rate = count / seconds
        lines.append(
            f"| {name} | {count} | {seconds:.1f} | {rate:.2f} | "
            f"{rate / (base[1] / base[2]):.3f} | {peak:.0f} |"
        )
    body = (
        header(command_line())
        + f"- folder: {clips} links to vendored EmoDB FLAC clips (1-9 s), the packaged default "
        "model, each way in a fresh process (start-up and model load included)\n\n"
        + "\n".join(lines)
        + "\n\nInterrupted and resumed: SIGINT after "
        f"{table_seconds / 2:.0f} s (exit {code}, {kept} rows kept in the partial file), then the "
        f"same command again: {second:.1f} s (with the first part {first + second:.1f} s, against "
        f"{table_seconds:.1f} s in one go). Same rows, order and labels as the uninterrupted "
        f"table: **{'yes' if same_rows else 'NO'}**; largest probability difference "
        f"{difference:.1e}.\n"
    )
    print(body)
    write_section("Prediction over a folder", body)


if __name__ == "__main__":
    main()
