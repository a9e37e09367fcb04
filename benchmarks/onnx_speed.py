"""The packaged default model on PyTorch vs. its ONNX build (fp32 and int8 weights):

- cold: ``crabser predict CLIP --json`` of a 3-second EmoDB clip in a fresh process (import, load,
  predict; wall time of the process, best of three) and its peak resident memory;
- warm: one ``predict`` of the same clip in a loaded model (median of 30), each model in a process
  of its own (so no runtime's worker threads compete with another's);
- agreement with PyTorch over all 535 EmoDB clips: largest difference of a class probability and
  the share of equal labels;
- export time and size of each form.

The ratios are to PyTorch, measured in the same run. Usage (from the repository root):
python -m benchmarks.onnx_speed [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, command_line, header, write_section

EMODB_FLAC = REPO / "data" / "emodb" / "flac"


def three_second_clip() -> Path:
    import soundfile as sf

    clips = sorted(EMODB_FLAC.glob("*.flac"))
    return min(clips, key=lambda p: abs(sf.info(p).duration - 3.0))


def cold(model: str, clip: Path, repeats: int = 3) -> tuple[float, float]:
    """(best wall seconds, peak MB) of ``crabser predict CLIP --model MODEL --json``."""
    best, peak = float("inf"), 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "crabser.cli", "predict", str(clip), "--model", model, "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )
        _, status, usage = os.wait4(process.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"crabser predict --model {model} failed"
        best = min(best, time.perf_counter() - started)
        peak = max(peak, usage.ru_maxrss / 1024)
    return best, peak


def warm_worker(model: str, clip: str, count: int) -> None:
    """Print the median warm predict time and the probabilities of every clip listed in
    ``count`` (run in its own process by :func:`main`)."""
    from crabser.loading import load_predictor

    recognizer = load_predictor(model)
    recognizer.predict(clip)
    times = []
    for _ in range(30):
        started = time.perf_counter()
        recognizer.predict(clip)
        times.append(time.perf_counter() - started)
    clips = sorted(str(p) for p in EMODB_FLAC.glob("*.flac"))[:count]
    probabilities = []
    for start in range(0, len(clips), 16):
        batch = recognizer.predict_batch(clips[start : start + 16])
        probabilities += [[p.probabilities[label] for label in recognizer.labels] for p in batch]
    print(json.dumps({"warm_s": float(np.median(times)), "probabilities": probabilities}))


def warm(model: str, clip: Path, count: int) -> dict:
    """The worker's answer, run twice: the faster median (a 2-core machine has noisy moments)."""
    code = [sys.executable, "-m", "benchmarks.onnx_speed", "--worker", model, str(clip), str(count)]
    answers = [
        json.loads(
            subprocess.run(code, capture_output=True, text=True, check=True, cwd=REPO)
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    return min(answers, key=lambda answer: answer["warm_s"])


def export(folder: Path, int8: bool) -> float:
    """Seconds to export the default model as ONNX, in a process of its own (this one stays small:
    a child's peak memory counts its parent's at the fork)."""
    code = (
        "from crabser.onnx_export import export_onnx; "
        f"export_onnx('default', {str(folder)!r}, int8={int8})"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="40 clips for the agreement")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        warm_worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    count = 40 if args.quick else 535
    clip = three_second_clip()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        forms = {"PyTorch (`default`)": ("default", None)}
        for name, int8 in (("ONNX fp32", False), ("ONNX int8", True)):
            folder = Path(tmp) / name.replace(" ", "_")
            forms[name] = (str(folder), export(folder, int8))
        for name, (model, export_s) in forms.items():
            cold_s, peak = cold(model, clip)
            measured = warm(model, clip, count)
            folder = Path(model) if export_s is not None else None
            size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6 if folder else None
            rows[name] = (cold_s, peak, measured, export_s, size)
            print(
                f"{name}: cold {cold_s:.2f} s, warm {1000 * measured['warm_s']:.1f} ms", flush=True
            )
    base = rows["PyTorch (`default`)"]
    reference = np.array(base[2]["probabilities"])
    lines = [
        (
            "| form | cold `crabser predict` | peak MB | warm predict | cold / warm vs PyTorch "
            f"| largest probability difference ({count} clips) | same label | export s | size MB |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (cold_s, peak, measured, export_s, size) in rows.items():
        probabilities = np.array(measured["probabilities"])
        difference = float(np.abs(probabilities - reference).max())
        same = float((probabilities.argmax(1) == reference.argmax(1)).mean())
        lines.append(
            f"| {name} | {cold_s:.2f} s | {peak:.0f} | {1000 * measured['warm_s']:.1f} ms | "
            f"{cold_s / base[0]:.2f}x / {measured['warm_s'] / base[2]['warm_s']:.2f}x | "
            f"{difference:.1e} | {100 * same:.1f} % | "
            f"{'' if export_s is None else f'{export_s:.1f}'} | "
            f"{'' if size is None else f'{size:.1f}'} |"
        )
    body = (
        header(command_line())
        + f"- clip: `{clip.name}` (3 s); the packaged default model (`crabser/multicorpus_speech`)"
        + "; each form in fresh processes; targets (issue 22): warm <= 30 ms, cold <= 2 s\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(body)
    write_section("ONNX: cold and warm prediction, agreement with PyTorch", body)


if __name__ == "__main__":
    main()
