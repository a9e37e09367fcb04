"""Whisper encoder: encode each clip's own length vs. Whisper's 30 s padding (speed and accuracy).

For each padding mode: extract EmoDB speech features with the embedded Whisper tiny.en encoder
(time, real-time factor), then on the demo's speaker-independent split train (1) Crab with MLCS
from configs/demo.yaml and (2) the pooled mean+std + logistic-regression baseline, selecting
nothing on test. Prints the speed ratio and writes a table to BENCHMARKS.md.

Usage (from the repository root): python -m benchmarks.whisper_padding [--pads none,30] [--epochs
20] [--jobs 2]
"""

from __future__ import annotations

import argparse
import shutil
import time

from benchmarks.common import (
    command_line,
    header,
    pooled_baseline,
    quick_emodb_manifest,
    quick_overrides,
    write_section,
)
from crabser import pipeline
from crabser.config import load_config
from crabser.crossval import for_job, train_and_test
from crabser.parallel import encoders_for_jobs, jobs_for, run_jobs
from crabser.runs import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pads", default="none,30")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--quick", action="store_true", help="own length only, 2 epochs, in runs/quick"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="the Crab trainings side by side (as crabser experiment --jobs); "
        "1 = one after another",
    )
    args = parser.parse_args()
    if args.quick:
        args.pads, args.epochs = "none", 2
    rows, seconds, crab_val, prepared = [], {}, {}, {}
    for pad in args.pads.split(
        ","
    ):  # extraction one padding at a time: its time is the measurement
        pad_value = None if pad == "none" else float(pad)
        config = load_config(
            "configs/demo.yaml",
            [
                f"name=bench_pad_{pad}",
                f"speech.pad_to_seconds={pad if pad_value else 'null'}",
                f"train.epochs={args.epochs}",
                "train.progress=false",
                *quick_overrides(args.quick),
                # its own feature cache, so the extraction time is measured from scratch (not in
                # --quick)
                *([] if args.quick else ["cache_dir=cache/bench_features"]),
                # --quick: six speakers, the demo's val and test ones among them
                *(
                    ["data.manifest=" + quick_emodb_manifest(("03", "10", "12", "13", "15", "16"))]
                    if args.quick
                    else []
                ),
            ],
        )
        shutil.rmtree(config.run_dir, ignore_errors=True)  # train from scratch every time
        manifest = pipeline.prepare(config)
        encoders = pipeline.build_encoders(config)
        started = time.perf_counter()
        report = pipeline.extract_features(config, manifest, encoders)["speech"]
        seconds[pad] = time.perf_counter() - started
        rtf = seconds[pad] / max(report.seconds_of_audio, 1e-9) if report.encoded else float("nan")
        prepared[pad] = (config, manifest, encoders, rtf)
    jobs = jobs_for(args.jobs, len(prepared))
    run_jobs(  # the trainings side by side (--jobs), on the cached features
        train_and_test,
        {
            pad: (for_job(config, jobs), manifest, encoders_for_jobs(encoders, jobs))
            for pad, (config, manifest, encoders, _) in prepared.items()
        },
        jobs,
    )
    for pad, (config, manifest, encoders, rtf) in prepared.items():
        pad_value = config.speech.pad_to_seconds
        metrics = RunFolder.of(config).read_metrics()
        crab_val[pad], _ = RunFolder.of(config).best_validation()
        baseline = pooled_baseline(config, manifest, encoders["speech"].cache_id, "speech")
        baseline = {split: baseline[split]["uar"] for split in baseline}
        rows.append(
            f"| {'own length' if pad_value is None else f'{pad_value:g} s'} | {seconds[pad]:.1f} | "
            f"{rtf:.4f} | "
            f"{crab_val[pad]:.4f} | {metrics['uar']:.4f} | {baseline['val']:.4f} | "
            f"{baseline['test']:.4f} |"
        )
        print(rows[-1], flush=True)
    ratio = ""
    if "none" in seconds and "30" in seconds:
        ratio = (
            "\nExtraction speed-up of own-length over 30 s padding: "
            f"**{seconds['30'] / seconds['none']:.1f}x**;"
            " Crab validation UAR with 30 s padding minus own length: "
            f"**{crab_val['30'] - crab_val['none']:+.4f}**"
            " (the default in configs/demo.yaml follows the validation UAR; test columns are for "
            "reading only).\n"
        )
        print(ratio)
    body = (
        header(command_line())
        + "\nEmoDB, all 535 clips (24.8 min of audio); split: test speakers 15, 16, val 12, 13, "
        "train the rest.\n"
        "Crab = configs/demo.yaml (best epoch by val UAR); LR = mean+std pooled frames + logistic "
        "regression.\n\n"
        "| Whisper input | extract s | RTF | Crab val UAR | Crab test UAR | LR val UAR | LR test "
        "UAR |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n" + ratio
    )
    write_section("Whisper tiny.en: own length vs. 30 s padding", body)


if __name__ == "__main__":
    main()
