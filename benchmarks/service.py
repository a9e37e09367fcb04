"""Using a trained model: latency of one 3-second clip (cold, warm), --segment on a 10-minute
recording, and a load test of the HTTP service, each beside its plain baseline.

Usage: python -m benchmarks.service [--requests 500] [--concurrency 16] [--model default] [--quick]

- cold: a fresh process that imports crabser, loads the model and predicts one clip (wall time of
  the whole process) vs. warm: the same predict again in a loaded Recognizer.
- segment: real-time factor of ``predict_timeline`` on 10 minutes of EmoDB speech with 0.5 s pauses,
  vs. the same clips predicted directly one by one (no VAD, no streaming), and the peak RSS of the
  segmenting process (bounded memory: it does not grow with the recording).
- load: ``crabser serve`` in a subprocess, N requests with a 3-second clip at C concurrent
  clients on loopback (httpx): throughput, p50 / p99 latency, failures, the server's peak RSS; the
  baseline is the in-process throughput of ``Recognizer.predict`` on the same clip (the ratio is the
  cost of HTTP + upload + decode + queue).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, command_line, header, write_section


def three_second_clip() -> Path:
    """The EmoDB clip closest to 3 s (vendored copy)."""
    from crabser.data.corpora import emodb

    frame = emodb.prepare(REPO / "data" / "emodb").frame
    import soundfile as sf

    durations = [sf.info(p).duration for p in frame["audio"]]
    return Path(frame["audio"].iloc[int(np.argmin(np.abs(np.array(durations) - 3.0)))])


def cold_and_warm(model: str, clip: Path, repeats: int = 20) -> dict:
    """Cold: a new process end to end; warm: predict in a loaded model (median of ``repeats``)."""
    code = (
        "import time; t=time.perf_counter(); from crabser.inference import Recognizer; "
        f"r=Recognizer.load({model!r}); r.predict({str(clip)!r}); print(time.perf_counter()-t)"
    )
    started = time.perf_counter()
    inside = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    process = time.perf_counter() - started
    from crabser.inference import Recognizer

    recognizer = Recognizer.load(model)
    recognizer.predict(clip)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        recognizer.predict(clip)
        times.append(time.perf_counter() - t)
    return {
        "cold_process_s": process,
        "cold_in_process_s": inside,
        "warm_s": float(np.median(times)),
    }


def ten_minute_recording(folder: Path, minutes: float) -> tuple[Path, list[np.ndarray]]:
    """EmoDB clips of speakers 15 and 16 with 0.5 s pauses, repeated to ``minutes``."""
    import soundfile as sf

    from crabser.data.audio import decode_audio
    from crabser.data.corpora import emodb

    frame = emodb.prepare(REPO / "data" / "emodb").frame
    clips = [decode_audio(p) for p in frame[frame["speaker"].isin(["15", "16"])]["audio"]]
    pause = np.zeros(8000, dtype=np.float32)
    one_pass = np.concatenate([x for c in clips for x in (c, pause)])
    samples = int(minutes * 60 * 16000)
    wave = np.tile(one_pass, int(np.ceil(samples / len(one_pass))))[:samples]
    path = folder / "long.flac"
    sf.write(path, wave, 16000)
    used, total = [], 0
    while total < samples:  # the clips the recording holds, for the direct baseline
        for c in clips:
            used.append(c)
            total += len(c) + len(pause)
            if total >= samples:
                break
    return path, used


def segment_rtf(model: str, minutes: float) -> dict:
    """Real-time factor of --segment vs. predicting the same clips directly, and peak RSS."""
    import psutil

    from crabser.data.audio import stream_audio
    from crabser.inference import Recognizer
    from crabser.segment import SegmentSettings, predict_timeline

    recognizer = Recognizer.load(model)
    with tempfile.TemporaryDirectory() as tmp:
        path, clips = ten_minute_recording(Path(tmp), minutes)
        process, peak, stop = psutil.Process(), [0], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.05)

        base_rss = process.memory_info().rss
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t = time.perf_counter()
        entries = predict_timeline(recognizer, *stream_audio(path), SegmentSettings())
        seconds = time.perf_counter() - t
        stop.set()
        watcher.join()
        t = time.perf_counter()
        for start in range(0, len(clips), 8):
            recognizer.predict_batch([(c, 16000) for c in clips[start : start + 8]])
        direct = time.perf_counter() - t
    audio_s = minutes * 60
    return {
        "audio_s": audio_s,
        "segments": len(entries),
        "seconds": seconds,
        "rtf": seconds / audio_s,
        "direct_seconds": direct,
        "direct_rtf": direct / audio_s,
        "peak_rss_mb": peak[0] / 1e6,
        "rss_growth_mb": (peak[0] - base_rss) / 1e6,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_test(model: str, clip: Path, requests: int, concurrency: int) -> dict:
    """``crabser serve`` in a subprocess under ``concurrency`` clients; in-process predict as
    baseline."""
    import httpx
    import psutil

    from crabser.inference import Recognizer

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "crabser.cli",
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--queue",
        str(4 * concurrency),
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(
                "the service did not start: " + server.stderr.read().decode()[-2000:]
            )
        data = clip.read_bytes()
        watched, peak, stop = psutil.Process(server.pid), [0], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], watched.memory_info().rss)
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()

        async def run() -> tuple[list[float], list[int], float]:
            latencies, statuses, queue = [], [], asyncio.Queue()
            for i in range(requests):
                queue.put_nowait(i)
            async with httpx.AsyncClient(base_url=url, timeout=300) as client:

                async def worker() -> None:
                    while not queue.empty():
                        queue.get_nowait()
                        t = time.perf_counter()
                        response = await client.post(
                            "/v1/predict", files={"audio": (clip.name, data, "audio/wav")}
                        )
                        latencies.append(time.perf_counter() - t)
                        statuses.append(response.status_code)

                t = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return latencies, statuses, time.perf_counter() - t

        latencies, statuses, wall = asyncio.run(run())
        stop.set()
    finally:
        server.terminate()
        server.wait(30)
    recognizer = Recognizer.load(model)
    recognizer.predict(clip)
    n = min(100, requests)
    t = time.perf_counter()
    for _ in range(n):
        recognizer.predict(clip)
    direct = n / (time.perf_counter() - t)
    failed = sum(s != 200 for s in statuses)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "failed": failed,
        "throughput": requests / wall,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "peak_rss_mb": peak[0] / 1e6,
        "direct_throughput": direct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="100 requests, a 2-minute recording.")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.minutes = 100, 2.0
    clip = three_second_clip()
    import soundfile as sf

    clip_s = sf.info(clip).duration
    latency = cold_and_warm(args.model, clip)
    print(
        f"one {clip_s:.2f} s clip: cold {latency['cold_process_s']:.2f} s (process), warm "
        f"{1000 * latency['warm_s']:.0f} ms",
        flush=True,
    )
    segment = segment_rtf(args.model, args.minutes)
    print(
        f"--segment on {args.minutes:g} min: RTF {segment['rtf']:.4f} vs direct "
        f"{segment['direct_rtf']:.4f}; peak RSS {segment['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    load = load_test(args.model, clip, args.requests, args.concurrency)
    print(
        f"load: {load['throughput']:.1f} req/s (direct {load['direct_throughput']:.1f}/s), p50 "
        f"{load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms, failed {load['failed']}",
        flush=True,
    )

    body = (
        header(command_line())
        + f"- model: `{args.model}`; clip: `{clip.name}` ({clip_s:.2f} s)\n\n"
    )
    body += "| measure | crabser | baseline | ratio |\n|---|---|---|---|\n"
    body += (
        "| one clip, cold (new process: import + load + predict) | "
        f"{latency['cold_process_s']:.2f} s "
        f"| warm predict {1000 * latency['warm_s']:.0f} ms | "
        f"{latency['cold_process_s'] / latency['warm_s']:.0f}x |\n"
    )
    body += (
        f"| `--segment`, {args.minutes:g} min recording ({segment['segments']} segments) | RTF "
        f"{segment['rtf']:.4f} "
        f"({segment['seconds']:.1f} s) | same clips predicted directly: RTF "
        f"{segment['direct_rtf']:.4f} "
        f"| {segment['rtf'] / segment['direct_rtf']:.2f}x |\n"
    )
    body += (
        f"| `--segment` peak RSS (growth during the run) | {segment['peak_rss_mb']:.0f} MB "
        f"(+{segment['rss_growth_mb']:.0f} MB) | | |\n"
    )
    body += (
        f"| service: {load['requests']} requests, {load['concurrency']} concurrent | "
        f"{load['throughput']:.1f} req/s, "
        f"p50 {load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms, {load['failed']} failed, "
        "server peak RSS "
        f"{load['peak_rss_mb']:.0f} MB | in-process predict {load['direct_throughput']:.1f}/s "
        f"| {load['throughput'] / load['direct_throughput']:.2f}x |\n"
    )
    write_section("Using a trained model: latency, --segment, service load", body)
    print(body)


if __name__ == "__main__":
    main()
