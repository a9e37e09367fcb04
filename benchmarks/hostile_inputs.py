"""Hostile inputs against the HTTP service (issue 19): the answer each gets, the memory and time it
costs, and the old decode path beside the new one.

Usage: python -m benchmarks.hostile_inputs [--quick]

- inputs, built in a temporary folder: decompression bombs (a FLAC of 2 h silence; 30 min of
  96 kHz 6-channel FLAC, its length in the header and unknown; a FLAC whose STREAMINFO claims 2^36
  samples; a 60 KB WAV whose header says 10 Hz; a 3-minute WebM without a duration, as a browser's
  MediaRecorder writes), requests without audio, with a NUL-only or a 1 MB transcript, with a
  foreign Host header (DNS rebinding), a 200 MB chunked upload without Content-Length, 201
  half-open connections.
- service: ``crabser serve``'s configuration (:func:`crabser.serve.server_config`) in a subprocess
  on 127.0.0.1 with the default limits (60 s, 20 MB) except ``max_segment_seconds`` = 120 and
  ``header_timeout`` = 2 s (to keep the run short), ``max_connections`` = 100, and a soft limit of
  256 file descriptors. Per request: status and detail, the server's peak RSS added (its VmHWM is
  reset through ``/proc/PID/clear_refs`` before each request) and the seconds.
- old vs new decode: each bomb decoded in a fresh process by the path before issue 19 (whole file
  through ``sf.read`` or PyAV, then the down-mix and soxr, the duration checked after) under a 4 GB
  address-space cap, and by ``decode_audio(..., max_seconds=60)``: peak RSS added and the ratio.

``--quick`` makes the long bombs 5 minutes instead of 30 / 120 and opens 60 half-open connections.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.common import command_line, header, write_section

LIMIT_S = 60.0  #: the service's max_seconds (its default)
SERVER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from crabser.serve import ServiceSettings, run_service
settings = ServiceSettings(max_segment_seconds=120, header_timeout=2.0, max_connections=100)
run_service(settings, int(sys.argv[1]))
"""
DECODE = """
import io, json, resource, sys, time
import numpy as np, soundfile as sf, soxr
mode, path, LIMIT_S = sys.argv[1], sys.argv[2], float(sys.argv[3])

def old(data):
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):  # what the old code caught
        import av
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            rate = int(stream.rate or 16000)
            mono = av.AudioResampler(format="fltp", layout="mono", rate=rate)
            frames = container.decode(stream)
            audio = np.concatenate([o.to_ndarray()[0] for f in frames for o in mono.resample(f)])
            audio = audio[:, None]
    wave = audio.mean(axis=1)
    return soxr.resample(wave, rate, 16000, quality="HQ") if rate != 16000 else wave

def new(data):
    from crabser.data.audio import decode_audio
    return decode_audio(data, 16000, max_seconds=LIMIT_S, silence_peak=0.0)

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

import av, crabser.data.audio  # imported before the measure
data = open(path, "rb").read()
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + 4 * 2**30, resource.RLIM_INFINITY))
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from here
base = status("VmRSS")
started = time.perf_counter()
try:
    answer = f"{len((old if mode == 'old' else new)(data)) / 16000:.1f} s decoded"
except MemoryError:
    answer = "MemoryError (4 GB cap)"
except Exception as error:
    answer = f"{type(error).__name__}: {str(error)[:90]}"
seconds = time.perf_counter() - started
print(json.dumps({"answer": answer, "mb": (status("VmHWM") - base) / 1e6, "s": seconds}))
"""


# --- building the inputs --------------------------------------------------------------------------


def silent_flac(path: Path, seconds: float, rate: int, channels: int) -> Path:
    """A silent PCM_16 FLAC written one second at a time (tiny file, long audio)."""
    with sf.SoundFile(path, "w", rate, channels, "PCM_16", format="FLAC") as out:
        for _ in range(int(seconds)):
            out.write(np.zeros((rate, channels), dtype=np.int16))
    return path


def with_total_samples(source: Path, target: Path, total: int) -> Path:
    """A copy of a FLAC whose STREAMINFO total-samples field (36 bits at byte 18) says ``total``."""
    data = bytearray(source.read_bytes())
    packed = int.from_bytes(data[18:26], "big")
    data[18:26] = ((packed >> 36 << 36) | total).to_bytes(8, "big")
    target.write_bytes(bytes(data))
    return target


def tone_flac(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(
        path,
        (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
        16000,
        subtype="PCM_16",
        format="FLAC",
    )
    return path


def ten_hertz_wav(path: Path) -> Path:
    """60 KB of 16-bit samples whose header says 10 Hz (50 minutes; 1600x upsampling to 16 kHz)."""
    sf.write(path, np.full(30_000, 0.1, dtype=np.float32), 10, subtype="PCM_16", format="WAV")
    return path


def live_webm(path: Path, seconds: float) -> Path:
    """Opus in WebM written as a live stream (no duration in the header, like MediaRecorder's)."""
    import av

    noise = (0.1 * np.random.default_rng(0).standard_normal((1, 960 * 50))).astype(np.float32)
    with av.open(str(path), "w", format="webm", options={"live": "1"}) as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        for i in range(int(seconds * 48000 / 960)):
            j = i % 50
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(noise[:, 960 * j : 960 * (j + 1)]),
                format="fltp",
                layout="mono",
            )
            frame.sample_rate = 48000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def build_bombs(folder: Path, quick: bool) -> dict[str, Path]:
    """The decompression bombs and odd headers, by name."""
    long_s, hires_s = (300, 300) if quick else (7200, 1800)
    hires = silent_flac(folder / "hires.flac", hires_s, 96000, 6)
    short = tone_flac(folder / "short.flac", 2.0)
    return {
        f"FLAC, {long_s / 60:g} min of silence, 16 kHz": silent_flac(
            folder / "silence.flac", long_s, 16000, 1
        ),
        f"FLAC, {hires_s / 60:g} min, 96 kHz, 6 channels": hires,
        "the same, length unknown (STREAMINFO 0)": with_total_samples(
            hires, folder / "hires0.flac", 0
        ),
        "FLAC claiming 2^36 samples (2 s real)": with_total_samples(
            short, folder / "claim36.flac", (1 << 36) - 1
        ),
        "FLAC of unknown length (2 s real)": with_total_samples(short, folder / "live.flac", 0),
        "WAV, 60 KB, header says 10 Hz": ten_hertz_wav(folder / "rate10.wav"),
        "WebM/Opus, 3 min, no duration": live_webm(folder / "recording.webm", 180),
    }


# --- the service in a subprocess -----------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {
        key: int(value) * 1024
        for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE)
    }


class Service:
    """``crabser serve``'s configuration in a subprocess; measures the peak RSS each call adds."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = log
        with open(log, "wb") as stderr:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVER, str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        import httpx

        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        for _ in range(600):
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the service did not start: {log.read_text()[-2000:]}")

    def measure(self, call) -> tuple[str, float, float]:
        """``(answer, peak RSS added in MB, seconds)`` of ``call(client)``."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        except OSError:
            pass
        before = _status(self.process.pid)["VmRSS"]
        started = time.perf_counter()
        answer = call(self.client)
        seconds = time.perf_counter() - started
        peak = _status(self.process.pid)["VmHWM"]
        return answer, max(0, peak - before) / 1e6, seconds

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)


def _answer(response) -> str:
    try:
        detail = (
            response.json().get("detail")
            if response.status_code != 200
            else f"label {response.json().get('label')}"
        )
    except ValueError:
        detail = response.text[:80]
    return f"{response.status_code} {str(detail)[:110]}".replace("|", "/")


def upload(path: Path, endpoint: str = "/v1/predict", text: str | None = None):
    data = {"text": text} if text is not None else None
    return lambda client: _answer(
        client.post(endpoint, files={"audio": (path.name, path.read_bytes())}, data=data)
    )


def chunked_upload(port: int, total: int) -> str:
    """A multipart upload sent in 64 KB chunks without Content-Length; stops when the server
    answers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
    )
    part = b'--x\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
    chunk, sent = b"%x\r\n%s\r\n" % (65536, b"a" * 65536), 0
    try:
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(chunk)
            sent += 65536
        reply = _read_all(sock).decode("latin-1")
    except OSError as error:
        reply = f"connection error {error}"
    finally:
        sock.close()
    status = reply.split("\r\n", 1)[0].replace("HTTP/1.1 ", "")
    detail = reply.rsplit("\r\n\r\n", 1)[-1][:80] if "\r\n\r\n" in reply else ""
    return f"{status} {detail} (after {sent / 1e6:.1f} MB of {total / 1e6:.0f} MB sent)".replace(
        "|", "/"
    )


def _read_all(sock: socket.socket, limit: int = 8192) -> bytes:
    """What the server sends until it closes the connection (or ``limit`` bytes, or 5 s of
    silence)."""
    sock.settimeout(5)
    reply = b""
    while len(reply) < limit:
        try:
            part = sock.recv(limit)
        except OSError:
            break
        if not part:
            break
        reply += part
    return reply


def half_open(service: Service, count: int) -> str:
    """``count`` connections that send half a request line; then /health; how many the server
    closed."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        sockets.append(sock)
    log_before = service.log.stat().st_size
    started = time.perf_counter()
    import httpx

    health = httpx.get(
        f"http://127.0.0.1:{service.port}/health", timeout=30
    ).status_code  # a new client's connection
    health_ms = 1000 * (time.perf_counter() - started)
    closed_now = sum(_closed(s) for s in sockets)
    time.sleep(2.5)  # past header_timeout
    closed_later = sum(_closed(s) for s in sockets)
    for sock in sockets:
        sock.close()
    log = service.log.stat().st_size - log_before
    return (
        f"/health {health} in {health_ms:.0f} ms; {closed_now} of {count} closed at once (cap "
        f"100), {closed_later} after"
        f" the 2 s header timeout; server log +{log / 1000:.1f} KB"
    )


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def old_and_new(path: Path) -> tuple[dict, dict]:
    """The old and the new decode path on ``path``, each in a fresh process."""
    runs = []
    for mode in ("old", "new"):
        out = subprocess.run(
            [sys.executable, "-c", DECODE, mode, str(path), str(LIMIT_S)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        runs.append(
            json.loads(out.stdout.strip().splitlines()[-1])
            if out.returncode == 0 and out.stdout.strip()
            else {
                "answer": f"crashed ({out.returncode}) {out.stderr.strip()[-80:]}",
                "mb": float("nan"),
                "s": float("nan"),
            }
        )
    return runs[0], runs[1]


def _ratio(old_mb: float, new_mb: float, old_answer: str) -> str:
    """old / new, with 0.1 MB as the floor of the new figure (a refusal from the header costs
    nothing)."""
    if math.isnan(old_mb) or math.isnan(new_mb):  # a crashed run
        return "-"
    if old_answer.startswith("MemoryError"):
        return "old fails"
    return f"{old_mb / new_mb:.0f}x" if new_mb >= 0.1 else f"> {old_mb / 0.1:.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="5-minute bombs, 60 half-open connections."
    )
    args = parser.parse_args()
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bombs = build_bombs(folder, args.quick)
        clip = tone_flac(folder / "clip.flac", 2.0)
        service = Service(folder / "server.log")
        try:
            rows = [
                (name, path.stat().st_size, *service.measure(upload(path)))
                for name, path in bombs.items()
            ]
            webm = bombs["WebM/Opus, 3 min, no duration"]
            rows.append(
                (
                    "the WebM to /v1/predict/segments (limit 120 s)",
                    webm.stat().st_size,
                    *service.measure(upload(webm, "/v1/predict/segments")),
                )
            )
            rows += [
                (
                    "no audio field, a transcript",
                    0,
                    *service.measure(
                        lambda c: _answer(c.post("/v1/predict", data={"text": "hello"}))
                    ),
                ),
                (
                    "no audio field, nothing else",
                    0,
                    *service.measure(lambda c: _answer(c.post("/v1/predict"))),
                ),
                (
                    "2 s clip + NUL-only transcript",
                    clip.stat().st_size,
                    *service.measure(upload(clip, text="\x00\x00")),
                ),
                (
                    "2 s clip + 1 MB transcript",
                    clip.stat().st_size + 1_000_000,
                    *service.measure(upload(clip, text="x" * 1_000_000)),
                ),
                (
                    "Host: attacker.example (DNS rebinding)",
                    0,
                    *service.measure(
                        lambda c: _answer(c.get("/health", headers={"host": "attacker.example"}))
                    ),
                ),
                (
                    "200 MB chunked upload, no Content-Length",
                    200_000_000,
                    *service.measure(lambda c: chunked_upload(service.port, 200_000_000)),
                ),
            ]
            count = 60 if args.quick else 201
            rows.append(
                (
                    f"{count} half-open connections",
                    0,
                    *service.measure(lambda c: half_open(service, count)),
                )
            )
        finally:
            service.close()
        compared = {name: old_and_new(path) for name, path in bombs.items()}

    body = header(command_line())
    body += (
        "- service: `crabser serve`'s configuration in a subprocess, default limits (60 s, 20 MB), "
        "max_segment_seconds 120, header timeout 2 s, max_connections 100, 256 file descriptors; "
        "memory is the "
        "server's peak RSS added by the request (VmHWM reset before each)\n\n"
    )
    body += "| input | size | answer | peak RSS added | seconds |\n|---|---|---|---|---|\n"
    for name, size, answer, mb, seconds in rows:
        body += f"| {name} | {size / 1000:,.0f} KB | {answer} | {mb:.1f} MB | {seconds:.2f} |\n"
    body += (
        "\nDecoding alone, each in a fresh process: the path before issue 19 (whole file, then "
        "down-mix and "
        f"resampling, the duration checked after) vs `decode_audio(max_seconds={LIMIT_S:g})` (the "
        "bound: "
        f"{LIMIT_S:g} s x 16 kHz x 4 B = {LIMIT_S * 16000 * 4 / 1e6:.2f} MB plus a 1 MiB decode "
        "block).\n\n"
    )
    body += (
        "| input | old: answer | old: peak RSS | new: answer | new: peak RSS | old / new "
        "|\n|---|---|---|---|---|---|\n"
    )
    for name, (old, new) in compared.items():
        body += (
            f"| {name} | {old['answer']} ({old['s']:.1f} s) | {old['mb']:.1f} MB | {new['answer']} "
            f"({new['s']:.2f} s) "
            f"| {new['mb']:.1f} MB | {_ratio(old['mb'], new['mb'], old['answer'])} |\n"
        )
    body += f"\nWhole run: {time.perf_counter() - begun:.0f} s.\n"
    write_section("Hostile inputs: what the service answers, and what it costs", body)
    print(body)


if __name__ == "__main__":
    main()
