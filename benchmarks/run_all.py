"""Every benchmark, one after another (``make bench``; ``make bench-quick`` for ``--quick``).

Each script runs in its own process with the arguments below; a failing one is reported and the
others go on. The full run writes its tables into BENCHMARKS.md and a timing table of its own;
``--quick`` passes ``--quick`` to every script (smoke-sized runs in runs/quick) and writes to
BENCHMARKS.quick.md, so a quick run never replaces a measured table.

The full run runs one script at a time (each measures speed, so none may share the machine);
``--quick`` runs two at a time (``--parallel``): its scripts spend most of their time starting
processes and importing libraries on one core (Lightning alone takes ~12 s on the AVX2-only EPYC),
and its figures are smoke checks, not measurements. Each script's output is printed when it ends.

``--long`` adds the benchmarks too long for ``make bench`` (StackingSER, about 100 minutes;
multi-corpus within-corpus folds, about 40; Crab head settings against the probe, about 20; Whisper
layers across corpora, about 10).

Usage (from the repository root): python -m benchmarks.run_all [--quick] [--long] [--only
speed,service] [--parallel N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.common import REPO, command_line, header, write_section

#: name -> arguments of the full run (make bench); --quick replaces them with ["--quick"]
BENCHMARKS = {
    "bigru": [],
    "asr_wer": [],
    "speed": [],
    "service": [],
    "predict_folder": [],  # 1,000 clips three ways and a resumed run: about 5 minutes
    "onnx_speed": [],  # PyTorch vs ONNX fp32 / int8: about 5 minutes
    "hostile_inputs": [],  # about a minute: bombs, slow and chunked clients against the service
    "whisper_padding": [],
    "emodb_loso": [
        "--patience",
        "5",
    ],  # early stopping: about a quarter fewer epochs (its docstring)
    # per-layer probes and three Crab leave-one-speaker-out runs: about 30 minutes
    "whisper_layers": [],
    "meld_text": [
        "--seeds",
        "0,1",
    ],  # two seeds side by side (--jobs 2): a third would train alone, +7 min
    # leave one corpus out, probe, EmoDB-only model on three corpora: about 15 minutes
    "multicorpus": [],
    "objectives": [
        "--budget"
        # both grids in one pool; the full grids take about 3.5 hours:
        # python -m benchmarks.objectives
    ],
}
LONG = {
    "stacking": [],
    "multicorpus_within": [],
    "crab_head": [],
    "multicorpus_layers": [],
}  #: only with --long (or --only); multicorpus_within: about 40 minutes, crab_head about 20,
#: multicorpus_layers about 10 (and 4 GB of every-layer features in the cache)
#: scripts side by side start longest first (their --quick minutes on 2 cores: 1.3, 1.2, 0.9, ...)
LONGEST_FIRST = [
    "objectives",
    "multicorpus",
    "speed",
    "emodb_loso",
    "whisper_layers",
    "whisper_padding",
    "meld_text",
    "service",
    "predict_folder",
    "onnx_speed",
    "hostile_inputs",
    "bigru",
    "asr_wer",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke-sized runs, tables to BENCHMARKS.quick.md"
    )
    parser.add_argument("--long", action="store_true", help="add " + ", ".join(LONG))
    parser.add_argument(
        "--only", help="comma-separated benchmark names (default: all, --long adds the long ones)"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="scripts at a time (default: 2 with --quick, else 1)",
    )
    args = parser.parse_args()
    parallel = args.parallel or (2 if args.quick else 1)
    known = BENCHMARKS | LONG
    names = args.only.split(",") if args.only else [*BENCHMARKS, *(LONG if args.long else [])]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}")
    env = dict(os.environ)
    if args.quick:
        env["CRABSER_BENCHMARKS_MD"] = str(REPO / "BENCHMARKS.quick.md")

    def run(name: str) -> tuple[str, float, int]:
        command = [
            sys.executable,
            "-m",
            f"benchmarks.{name}",
            *(["--quick"] if args.quick else known[name]),
        ]
        print(f"== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        if parallel > 1:  # print each script's output in one piece, when it ends
            done = subprocess.run(
                command,
                cwd=REPO,
                env=env,
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            print(done.stdout, end="", flush=True)
        else:
            done = subprocess.run(command, cwd=REPO, env=env, check=False)
        seconds = time.perf_counter() - started
        print(f"== {name}: {seconds:.0f} s, exit {done.returncode}", flush=True)
        return " ".join(command[2:]), seconds, done.returncode

    if parallel > 1:  # no script left to run alone at the end
        names.sort(key=lambda name: LONGEST_FIRST.index(name) if name in LONGEST_FIRST else -1)
    started_all = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(run, names))
    total = (time.perf_counter() - started_all) / 60
    rows = [
        f"| `{command}` | {seconds / 60:.1f} | {'ok' if code == 0 else f'failed ({code})'} |"
        for command, seconds, code in results
    ]
    failed = [name for name, (_, _, code) in zip(names, results) if code]
    together = f" ({parallel} scripts at a time: the minutes overlap)" if parallel > 1 else ""
    table = (
        "| benchmark | minutes | result |\n|---|---|---|\n"
        + "\n".join(rows)
        + f"\n| **all**{together} | **{total:.1f}** | |\n"
    )
    print(table)
    os.environ.update(env)
    write_section(
        "make bench" + (" --quick" if args.quick else ""), header(command_line()) + "\n" + table
    )
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
