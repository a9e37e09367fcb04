"""The HTTP service on the packaged model: endpoints, limits, hard inputs, fuzzing, the worker
pool."""

import asyncio
import io
import threading
from dataclasses import replace

import numpy as np
import pytest
import schemathesis
import soundfile as sf
from conftest import tone
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from test_audio import _claiming, _flac_bytes, _peak_bytes

from crabser.data.corpora import emodb as emodb_adapter
from crabser.inference import Recognizer
from crabser.serve import Busy, ServiceSettings, WorkerPool, create_app

LIMITS = ServiceSettings(
    max_bytes=2_000_000,
    max_seconds=8.0,
    max_segment_seconds=40.0,
    queue=4,
    allowed_hosts=("testserver",),
)


@pytest.fixture(scope="module")
def model():
    return Recognizer.load("default")


@pytest.fixture(scope="module")
def app(model):
    return create_app(LIMITS, recognizer=model)


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def clip(emodb):
    frame = emodb_adapter.prepare(emodb).frame
    return frame[frame["speaker"] == "16"]["audio"].iloc[0]


def _wav(
    wave: np.ndarray, rate: int = 16000, subtype: str | None = None, fmt: str = "WAV"
) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def test_health_labels_docs_and_page(client, model):
    assert client.get("/health").json()["labels"] == model.labels
    assert client.get("/v1/labels").json() == {"labels": model.labels}
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/segments", "/v1/labels", "/health"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "crabser" in page.text and 'id="file"' in page.text


def test_predict_a_real_clip(client, clip, model):
    with open(clip, "rb") as handle:
        answer = client.post("/v1/predict", files={"audio": ("clip.wav", handle, "audio/wav")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["label"] in model.labels and body["source"] == "clip.wav"
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    direct = model.predict(clip)
    assert body["label"] == direct.label
    assert body["probabilities"][direct.label] == pytest.approx(
        direct.probabilities[direct.label], abs=1e-5
    )


HARD_INPUTS = [
    # (name, payload, status, words in the answer)
    ("empty.wav", b"", 422, "empty file"),
    ("notes.txt", "Grüße, this is text and not audio".encode() * 20, 422, "not audio"),
    ("truncated.wav", _wav(tone(1.0))[:30], 422, "truncated.wav"),
    ("silent.wav", _wav(np.zeros(16000, dtype=np.float32)), 422, "silent"),
    ("zero.wav", _wav(np.zeros(0, dtype=np.float32)), 422, "empty audio"),
    ("nan.wav", _wav(np.full(16000, np.nan, dtype=np.float32), subtype="FLOAT"), 422, "NaN"),
    (
        "inf.wav",
        _wav(np.concatenate([tone(0.5), [np.inf]]).astype(np.float32), subtype="FLOAT"),
        422,
        "NaN or infinite",
    ),
    ("long.wav", _wav(tone(9.0)), 413, "over the limit of 8 s"),
    ("stereo48k.wav", _wav(tone(1.0, rate=48000, channels=2), 48000), 200, ""),
    ("phone8k.wav", _wav(tone(1.0, rate=8000), 8000), 200, ""),
    ("tone.flac", _wav(tone(1.0), fmt="FLAC"), 200, ""),
]


@pytest.mark.parametrize(
    "name, payload, status, words", HARD_INPUTS, ids=[h[0] for h in HARD_INPUTS]
)
def test_hard_inputs_get_the_documented_answer(client, name, payload, status, words):
    answer = client.post(
        "/v1/predict",
        files={"audio": (name, payload, "application/octet-stream")},
        data={"text": "Grüße 😀"},
    )
    assert answer.status_code == status, answer.text
    if status != 200:
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and words in detail
        assert "Traceback" not in answer.text and 'File "' not in answer.text


def test_requests_without_audio_to_a_speech_model(client):
    answer = client.post("/v1/predict", data={"text": "I am so happy"})
    assert answer.status_code == 422 and "needs audio" in answer.json()["detail"]
    answer = client.post("/v1/predict")
    assert answer.status_code == 422


def test_upload_over_the_size_limit_is_413(client):
    big = _wav(
        0.1 * np.random.default_rng(0).standard_normal(1_100_000).astype(np.float32)
    )  # 2.2 MB
    answer = client.post("/v1/predict", files={"audio": ("big.wav", big, "audio/wav")})
    assert answer.status_code == 413 and "over the limit" in answer.json()["detail"]


def test_segments_give_a_timeline_and_check_their_limits(client, emodb, model):
    frame = emodb_adapter.prepare(emodb).frame
    clips = [sf.read(p, dtype="float32")[0] for p in frame[frame["speaker"] == "16"]["audio"][:4]]
    pause = np.zeros(16000, dtype=np.float32)
    recording = _wav(np.concatenate([x for c in clips for x in (pause, c)] + [pause]))
    answer = client.post(
        "/v1/predict/segments", files={"audio": ("talk.wav", recording, "audio/wav")}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["labels"] == model.labels and 3 <= len(body["segments"]) <= 8
    assert all(s["label"] in model.labels for s in body["segments"])
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts) and body["segments"][-1]["end"] <= body["duration"]
    fixed = client.post(
        "/v1/predict/segments",
        files={"audio": ("talk.wav", recording, "audio/wav")},
        data={"mode": "fixed", "window": "3", "hop": "1.5"},
    )
    assert fixed.status_code == 200 and fixed.json()["segments"][1]["start"] == 1.5
    bad_mode = client.post(
        "/v1/predict/segments",
        files={"audio": ("t.wav", recording, "audio/wav")},
        data={"mode": "magic"},
    )
    assert bad_mode.status_code == 422 and "mode" in bad_mode.json()["detail"]
    bad_hop = client.post(
        "/v1/predict/segments",
        files={"audio": ("t.wav", recording, "audio/wav")},
        data={"mode": "fixed", "window": "2", "hop": "3"},
    )
    assert bad_hop.status_code == 422 and "hop" in bad_hop.json()["detail"]
    too_long = client.post(
        "/v1/predict/segments", files={"audio": ("long.wav", _wav(tone(41.0)), "audio/wav")}
    )
    assert too_long.status_code == 413 and "40 s" in too_long.json()["detail"]


def test_a_bimodal_model_answers_text_only_and_audio_only_requests(run, clip):
    """Text only: 422 (it needs audio). Audio only: the offline ASR supplies the transcript."""
    root, _ = run
    client = TestClient(
        create_app(LIMITS, recognizer=Recognizer.load(root / "runs/e2e")),
        raise_server_exceptions=False,
    )
    text_only = client.post("/v1/predict", data={"text": "Der Lappen liegt auf dem Eisschrank."})
    assert text_only.status_code == 422 and "needs audio" in text_only.json()["detail"]
    with open(clip, "rb") as handle:
        audio_only = client.post("/v1/predict", files={"audio": ("clip.wav", handle, "audio/wav")})
    assert audio_only.status_code == 200, audio_only.text
    assert audio_only.json()["text_source"] == "asr" and audio_only.json()["transcript"]
    with open(clip, "rb") as handle:
        both = client.post(
            "/v1/predict",
            files={"audio": ("clip.wav", handle, "audio/wav")},
            data={"text": "Grüße 😀"},
        )
    assert both.json()["transcript"] == "Grüße 😀" and both.json()["text_source"] == "given"


def test_an_unexpected_failure_is_a_500_without_a_traceback(model):
    class Broken:
        labels, modalities, needs_audio = model.labels, model.modalities, True

        def predict(self, *args, **kwargs):
            raise RuntimeError("secret internals at /home/x/model.py line 3")

    client = TestClient(create_app(LIMITS, recognizer=Broken()), raise_server_exceptions=False)
    answer = client.post("/v1/predict", files={"audio": ("a.wav", _wav(tone(1.0)), "audio/wav")})
    assert answer.status_code == 500 and answer.json() == {"detail": "internal error"}


def test_the_pool_runs_workers_queues_the_rest_and_refuses_beyond():
    pool = WorkerPool(workers=1, queue=1)
    release = threading.Event()
    running = []

    def job(i):
        running.append(i)
        release.wait(5)
        return i

    async def scenario():
        first = asyncio.create_task(pool.run(job, 1))
        second = asyncio.create_task(pool.run(job, 2))
        await asyncio.sleep(0.2)
        assert running == [1] and pool.pending == 2  # one runs, one waits
        with pytest.raises(Busy, match="busy"):
            await pool.run(job, 3)
        release.set()
        assert await first == 1 and await second == 2
        assert pool.pending == 0

    asyncio.run(scenario())


def test_busy_is_answered_503_with_retry_after(model):
    app = create_app(replace(LIMITS, workers=1, queue=0), recognizer=model)
    client = TestClient(app, raise_server_exceptions=False)
    gate = threading.Event()
    original = model.predict

    def slow(*args, **kwargs):
        gate.wait(10)
        return original(*args, **kwargs)

    results = []
    model.predict = slow
    try:
        worker = threading.Thread(
            target=lambda: results.append(
                client.post("/v1/predict", files={"audio": ("a.wav", _wav(tone(1.0)), "audio/wav")})
            )
        )
        worker.start()
        for _ in range(100):  # until the first request holds the only worker
            if client.get("/health").json()["busy"] == 1:
                break
            threading.Event().wait(0.05)
        refused = client.post(
            "/v1/predict", files={"audio": ("b.wav", _wav(tone(1.0)), "audio/wav")}
        )
        gate.set()
        worker.join(30)
    finally:
        model.predict = original
        gate.set()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert results and results[0].status_code == 200


def test_fuzzed_requests_never_crash_the_service(app):
    """Schema-driven fuzzing (schemathesis, every operation of the OpenAPI schema): any request gets
    a documented status and a body of the documented shape, never a 500."""
    from hypothesis import given
    from schemathesis.checks import (
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/predict",
        "/v1/predict/segments",
        "/v1/labels",
        "/health",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(
                checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
            )

        check()


# --- hostile input and clients (issue 19) ---------------------------------------------------------


def _silent_flac(seconds: float, rate: int, channels: int) -> bytes:
    """A silent FLAC written block by block (a decompression bomb: tiny file, long audio)."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, channels, "PCM_16", format="FLAC") as out:
        for _ in range(int(seconds)):
            out.write(np.zeros((rate, channels), dtype=np.int16))
    return buffer.getvalue()


def test_a_decompression_bomb_is_refused_in_bounded_memory(client):
    """60 s of 6-channel 96 kHz audio of unknown length: decoding stops at the 8 s limit."""
    bomb = _claiming(_silent_flac(60, 96000, 6), 0)
    peak, answer = _peak_bytes(
        lambda: client.post("/v1/predict", files={"audio": ("bomb.flac", bomb, "audio/flac")})
    )
    assert answer.status_code == 413 and "over the limit of 8 s" in answer.json()["detail"]
    limit_size = LIMITS.max_seconds * 16000 * 4
    assert peak < limit_size + 2 * 2**20 + 4 * len(
        bomb
    )  # the limit's own size, a decode block, the upload's copies


def test_absurd_rates_and_unknown_lengths_get_their_answers(client):
    rate10 = io.BytesIO()
    sf.write(
        rate10, np.full(30_000, 0.1, dtype=np.float32), 10, format="WAV"
    )  # 50 min at 10 Hz in 120 KB
    answer = client.post(
        "/v1/predict", files={"audio": ("rate10.wav", rate10.getvalue(), "audio/wav")}
    )
    assert answer.status_code == 422 and "implausible sample rate 10 Hz" in answer.json()["detail"]
    streamed = _claiming(
        _flac_bytes(tone(2.0), 16000), 0
    )  # short, length unknown: decoded (it is under the limit)
    assert (
        client.post(
            "/v1/predict", files={"audio": ("live.flac", streamed, "audio/flac")}
        ).status_code
        == 200
    )


def test_a_failed_prediction_frees_its_audio_at_once(model):
    """A 500 must not leave the decoded audio held by a traceback reference cycle until a full
    GC."""
    import gc
    import weakref

    decoded = []

    class Failing:
        labels, modalities, needs_audio = model.labels, model.modalities, True

        def predict(self, audio, *args, **kwargs):
            decoded.append(weakref.ref(audio[0]))
            raise RuntimeError("boom")

    client = TestClient(create_app(LIMITS, recognizer=Failing()), raise_server_exceptions=False)
    gc.collect()
    gc.disable()
    try:
        answer = client.post(
            "/v1/predict", files={"audio": ("a.wav", _wav(tone(7.5)), "audio/wav")}
        )
        alive = decoded[0]() is not None
    finally:
        gc.enable()
    assert answer.status_code == 500 and not alive


def test_transcripts_are_cleaned_and_capped(client):
    from crabser.data.text import clean_text as clean_transcript

    assert clean_transcript("\x00\x00 \x1b") is None and clean_transcript("a\x00b\tc\n") == "ab c"
    nul_only = client.post("/v1/predict", data={"text": "\x00\x00"})
    assert (
        nul_only.status_code == 422 and "no file in its 'audio' field" in nul_only.json()["detail"]
    )
    huge = client.post(
        "/v1/predict",
        files={"audio": ("a.wav", _wav(tone(1.0)), "audio/wav")},
        data={"text": "x" * 1_000_000},
    )
    assert (
        huge.status_code == 413
        and f"over the limit of {LIMITS.max_transcript_chars}" in huge.json()["detail"]
    )
    assert len(huge.text) < 1000  # not echoed back


def test_a_request_without_audio_says_so(client):
    answer = client.post("/v1/predict")
    assert answer.status_code == 422
    assert (
        "no file in its 'audio' field" in answer.json()["detail"]
        and "transcript" not in answer.json()["detail"]
    )


def test_docs_are_served_without_a_cdn(client):
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(
        r"""url: ?["']([^"']+)["']""", page.text
    )
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from another host
    for source in sources:
        assert client.get(source).status_code == 200, source


@pytest.mark.parametrize(
    "host, status",
    [
        ("localhost", 200),
        ("127.0.0.1:8000", 200),
        ("[::1]:8000", 200),
        ("LOCALHOST:1", 200),
        ("testserver", 200),
        ("attacker.example", 400),
        ("attacker.example:8000", 400),
        ("127.0.0.1.attacker.example", 400),
    ],
)
def test_a_loopback_service_answers_local_host_names_only(client, host, status):
    """DNS rebinding: a page on attacker.example resolving to 127.0.0.1 must not reach the
    service."""
    answer = client.get("/health", headers={"host": host})
    assert answer.status_code == status
    if status == 400:
        assert "Host" in answer.json()["detail"]


def test_a_loopback_service_answers_its_own_address_and_allowed_hosts_with_ports(model):
    client = TestClient(
        create_app(
            replace(LIMITS, host="127.0.0.2", allowed_hosts=("My.Host:8000",)), recognizer=model
        )
    )
    for host in ("127.0.0.2:8000", "my.host", "MY.HOST:8000", "localhost"):
        assert client.get("/health", headers={"host": host}).status_code == 200, host
    assert client.get("/health", headers={"host": "other.host"}).status_code == 400


def test_a_service_on_all_interfaces_answers_any_host(model):
    client = TestClient(create_app(replace(LIMITS, host="0.0.0.0"), recognizer=model))
    assert client.get("/health", headers={"host": "crabser.example"}).status_code == 200


def test_repeated_warnings_are_throttled():
    import logging

    from crabser.serve import throttle_logs

    records = []
    logger = logging.getLogger("asyncio")
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    gate = throttle_logs(interval=60.0)
    try:
        for fd in range(1000):
            logger.error("socket.accept() out of system resource\nsocket: <fd=%d>", 7)
        logger.error("another problem")
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(gate)
    assert [r.getMessage().split("\n")[0] for r in records] == [
        "socket.accept() out of system resource",
        "another problem",
    ]


# --- a real server on 127.0.0.1: slow and chunked clients -----------------------------------------

SLOW = replace(LIMITS, max_bytes=200_000, header_timeout=0.6, body_timeout=0.6, max_connections=4)


@pytest.fixture(scope="module")
def server(model):
    """``crabser serve``'s uvicorn configuration (:func:`server_config`) on a free loopback port."""
    import socket
    import time

    import uvicorn

    from crabser.serve import server_config

    listener = socket.socket()
    listener.setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 16384
    )  # small kernel buffers: what is sent is what is read
    listener.bind(("127.0.0.1", 0))
    service = uvicorn.Server(
        server_config(create_app(SLOW, recognizer=model), SLOW, log_level="warning")
    )
    thread = threading.Thread(target=service.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    for _ in range(200):
        if service.started:
            break
        time.sleep(0.05)
    yield listener.getsockname()
    service.should_exit = True
    thread.join(10)
    listener.close()


def _connect(address, first: bytes = b""):
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.settimeout(5)
    sock.connect(address)
    if first:
        sock.sendall(first)
    return sock


def _closed_within(sock, seconds: float) -> bool:
    """Whether the server closes (or answers and closes) ``sock`` within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_connection_that_never_finishes_its_headers_is_closed(server):
    partial = _connect(server, b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    silent = _connect(server)
    assert _closed_within(partial, 3.0) and _closed_within(silent, 3.0)


def test_half_open_connections_cannot_starve_the_service(server):
    import http.client

    hanging = [_connect(server, b"GET /health HTTP/1.1\r\n") for _ in range(10)]
    health = http.client.HTTPConnection(*server, timeout=3)
    health.request("GET", "/health")
    assert health.getresponse().status == 200
    health.close()
    still_open = sum(not _closed_within(sock, 0.05) for sock in hanging)
    assert still_open <= SLOW.max_connections - 1  # the oldest idle ones were closed to make room
    for sock in hanging:
        sock.close()


def test_a_stalled_body_gets_408(server):
    stalled = _connect(
        server,
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
        b"boundary=x"
        b"\r\nContent-Length: 5000\r\n\r\n--x\r\n",
    )
    stalled.settimeout(5)
    assert stalled.recv(200).startswith(b"HTTP/1.1 408")
    stalled.close()


def test_a_chunked_upload_is_cut_off_at_the_limit(server):
    """No Content-Length: the size is counted as the body arrives, and the answer comes at the
    limit."""
    import select

    sock = _connect(
        server,
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\n\r\n",
    )
    part = (
        b'--x\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    chunk, sent = b"%x\r\n%s\r\n" % (65536, b"a" * 65536), 0
    try:
        while sent < 20 * SLOW.max_bytes and not select.select([sock], [], [], 0)[0]:
            sock.sendall(chunk)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(5)
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert (
        sent < SLOW.max_bytes + 64_000 + 256_000
    )  # refused as the limit passed (+ multipart, socket buffers), not at the end


def test_the_body_timeout_ends_with_the_body():
    """After the last body chunk, a receive() that waits for the client to go (a streamed response
    listens so) is not cut off by the body timeout."""
    from crabser.serve import _Guard

    seen = []

    async def inner(scope, receive, send):
        seen.append(await receive())  # the whole body
        seen.append(await receive())  # then: wait for the disconnect

    async def receive_from_client():
        if not seen:
            return {"type": "http.request", "body": b"abc", "more_body": False}
        await asyncio.sleep(0.5)
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    guard = _Guard(inner, replace(LIMITS, body_timeout=0.1))
    scope = {"type": "http", "headers": [(b"host", b"localhost")]}
    asyncio.run(guard(scope, receive_from_client, send))
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


def test_decided_label_is_uncertain_below_the_threshold():
    from crabser.prediction import UNCERTAIN, decided_label

    scores = {"anger": 0.55, "joy": 0.30, "sadness": 0.15}
    assert decided_label(scores) == "anger"
    assert decided_label(scores, 0.55) == "anger"  # at the threshold: decided
    assert decided_label(scores, 0.56) == UNCERTAIN == "uncertain"
    assert decided_label(scores, 0.0) == "anger"
    with pytest.raises(ValueError, match="between 0 and 1"):
        decided_label(scores, 1.5)


def test_min_confidence_in_python_cli_and_http(client, clip, model):
    """Below --min-confidence the label is "uncertain" and the probabilities are unchanged, the
    same in Recognizer.predict, `crabser predict` and POST /v1/predict (and per segment)."""
    import json

    from typer.testing import CliRunner

    from crabser.cli import app as cli

    direct = model.predict(clip)
    top = direct.probabilities[direct.label]
    assert top < 1.0
    above = (top + 1.0) / 2  # a threshold the clip's top probability does not reach
    assert model.predict(clip, min_confidence=top).label == direct.label
    unsure = model.predict(clip, min_confidence=above)
    assert unsure.label == "uncertain" and unsure.probabilities == direct.probabilities
    with pytest.raises(ValueError, match="between 0 and 1"):
        model.predict(clip, min_confidence=-0.1)

    printed = CliRunner().invoke(
        cli, ["predict", str(clip), "--json", "--min-confidence", str(above)]
    )
    assert printed.exit_code == 0, printed.output
    line = json.loads(printed.output.strip().splitlines()[-1])
    assert line["label"] == "uncertain"
    assert line["probabilities"][direct.label] == pytest.approx(top, abs=1e-6)
    refused = CliRunner().invoke(cli, ["predict", str(clip), "--min-confidence", "2"])
    assert refused.exit_code == 2

    with open(clip, "rb") as handle:
        data = handle.read()
    answer = client.post(
        "/v1/predict",
        files={"audio": ("clip.wav", data, "audio/wav")},
        data={"min_confidence": str(above)},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "uncertain"
    assert answer.json()["probabilities"][direct.label] == pytest.approx(top, abs=1e-5)
    bad = client.post(
        "/v1/predict",
        files={"audio": ("clip.wav", data, "audio/wav")},
        data={"min_confidence": "1.5"},
    )
    assert bad.status_code == 422
    timeline = client.post(
        "/v1/predict/segments",
        files={"audio": ("clip.wav", data, "audio/wav")},
        data={"min_confidence": "1.0"},
    )
    assert timeline.status_code == 200, timeline.text
    segments = timeline.json()["segments"]
    assert segments and all(s["label"] == "uncertain" for s in segments)


def test_one_output_schema_in_python_the_cli_and_http(client, clip, model, tmp_path):
    """The same clip gives the same record (Prediction.to_dict) from Recognizer.predict, from
    `crabser predict --json` and from POST /v1/predict (which adds the seconds it took); the same
    timeline record from `crabser predict --segment --json` and POST /v1/predict/segments."""
    import json

    from typer.testing import CliRunner

    from crabser.cli import app as cli

    python = model.predict(clip).to_dict()
    printed = CliRunner().invoke(cli, ["predict", str(clip), "--json"])
    assert printed.exit_code == 0, printed.output
    cli_record = json.loads(printed.output.strip().splitlines()[-1])
    with open(clip, "rb") as handle:
        data = handle.read()
    http = client.post("/v1/predict", files={"audio": (str(clip), data, "audio/wav")}).json()
    assert set(http) - {"seconds"} == set(cli_record) == set(python)
    for record in (cli_record, http):
        assert record["source"] == python["source"] == str(clip)
        assert record["label"] == python["label"] and record["transcript"] == python["transcript"]
        for label, p in python["probabilities"].items():
            assert record["probabilities"][label] == pytest.approx(p, abs=1e-5)

    timeline = CliRunner().invoke(
        cli, ["predict", str(clip), "--segment", "--json", "--out", str(tmp_path)]
    )
    assert timeline.exit_code == 0, timeline.output
    cli_timeline = json.loads(timeline.output.strip().splitlines()[-1])
    http_timeline = client.post(
        "/v1/predict/segments", files={"audio": (str(clip), data, "audio/wav")}
    ).json()
    assert set(cli_timeline) == set(http_timeline) == {"source", "duration", "labels", "segments"}
    assert cli_timeline["source"] == http_timeline["source"] == str(clip)
    assert cli_timeline["labels"] == http_timeline["labels"] == model.labels
    assert [s["label"] for s in cli_timeline["segments"]] == [
        s["label"] for s in http_timeline["segments"]
    ]


def test_embeddings_in_python_the_cli_http_and_a_table(client, clip, model, emodb, tmp_path):
    """The utterance embedding (the fused tap) is the same vector from Recognizer.embed,
    predict(embed=True), `crabser predict --json --embeddings`, POST /v1/predict with embedding=true
    and a Parquet table; frame embeddings are the encoder's frames the model reads."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from crabser.cli import app as cli
    from crabser.data.audio import load_audio
    from crabser.errors import CrabserError

    frame = emodb_adapter.prepare(emodb).frame
    other = frame[frame["speaker"] == "16"]["audio"].iloc[1]
    vectors = model.embed([clip, other])
    assert vectors.shape == (2, model.module.model.tap_dims()["fused"])
    assert np.isfinite(vectors).all() and not np.allclose(vectors[0], vectors[1])
    direct = model.predict(clip, embed=True)
    np.testing.assert_allclose(direct.embedding, vectors[0], atol=1e-5)
    assert direct.label == model.predict(clip).label
    printed = CliRunner().invoke(cli, ["predict", str(clip), "--json", "--embeddings"])
    assert printed.exit_code == 0, printed.output
    np.testing.assert_allclose(
        json.loads(printed.output.splitlines()[-1])["embedding"], vectors[0], atol=1e-5
    )
    with open(clip, "rb") as handle:
        data = handle.read()
    http = client.post(
        "/v1/predict", files={"audio": ("clip.wav", data, "audio/wav")}, data={"embedding": "true"}
    )
    assert http.status_code == 200, http.text
    np.testing.assert_allclose(http.json()["embedding"], vectors[0], atol=1e-5)
    table = model.predict_table([clip, other], tmp_path / "e.parquet", embed=True)
    written = pd.read_parquet(tmp_path / "e.parquet")
    np.testing.assert_allclose(np.stack(written["embedding"]), vectors, atol=1e-5)
    assert list(table["source"]) == [str(clip), str(other)]
    with pytest.raises(CrabserError, match="write .parquet or .jsonl"):
        model.predict_table([clip], tmp_path / "e.csv", embed=True)
    (frames,) = model.embed_frames([clip])
    expected = model.encoders["speech"].encode([load_audio(clip)]).unpadded()[0]
    np.testing.assert_allclose(frames, expected, atol=1e-5)
    with pytest.raises(CrabserError, match="not text"):
        model.embed_frames([clip], modality="text")


def test_live_audio_over_a_websocket_gets_a_segment_per_window(client, clip, model):
    """A real clip streamed in 0.25 s chunks: the first message names the labels, then one record
    per 2 s window every 1 s, each what predict gives on that window; silence is marked."""
    from crabser.data.audio import load_audio

    wave = np.concatenate([load_audio(clip), np.zeros(48000, dtype=np.float32)])  # 3 s silence
    records = []
    with client.websocket_connect("/v1/live?window=2&hop=1") as socket:
        first = socket.receive_json()
        assert first == {"labels": model.labels, "sample_rate": 16000, "window": 2.0, "hop": 1.0}
        for start in range(0, len(wave), 4000):
            socket.send_bytes(wave[start : start + 4000].astype("<f4").tobytes())
        expected = int((len(wave) / 16000 - 2.0) // 1.0) + 1
        records = [socket.receive_json() for _ in range(expected)]
    assert [r["start"] for r in records] == [float(k) for k in range(expected)]
    assert records[-1]["error"] == "silent" and records[-1]["label"] is None
    for record in records[:-1]:
        piece = wave[int(record["start"] * 16000) : int(record["start"] * 16000) + 32000]
        direct = model.predict((piece, 16000))
        assert record["label"] == direct.label and record["error"] is None
        assert record["probabilities"][direct.label] == pytest.approx(
            direct.probabilities[direct.label], abs=1e-5
        )


@pytest.mark.parametrize(
    ("query", "message", "code", "detail"),
    [
        ("window=0.1", None, 1008, "window must be between"),
        ("window=2&hop=3", None, 1008, "hop must be between"),
        ("window=2&hop=0.1", None, 1008, "hop must be between 0.25 s"),
        ("", np.zeros(16000 * 5, dtype="<f4").tobytes() * 7, 1003, "at most 5 s per message"),
        ("", "text", 1003, "send audio as binary messages"),
        ("", b"\x00\x00\x00", 1003, "whole float32 samples"),
        ("", np.array([np.nan], dtype="<f4").tobytes(), 1003, "NaN"),
    ],
)
def test_live_refusals_are_one_message_and_a_close(client, query, message, code, detail):
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect(f"/v1/live?{query}") as socket:
        if message is not None:
            socket.receive_json()  # the labels
            if isinstance(message, str):
                socket.send_text(message)
            else:
                socket.send_bytes(message)
        assert detail in socket.receive_json()["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert closed.value.code == code


def test_a_live_socket_from_another_origin_or_host_is_refused(client):
    from starlette.websockets import WebSocketDisconnect

    for headers in ({"origin": "http://evil.example"}, {"host": "evil.example"}):
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/v1/live", headers=headers) as socket,
        ):
            socket.receive_json()
        assert refused.value.code == 1008
    with client.websocket_connect("/v1/live", headers={"origin": "http://testserver"}) as socket:
        assert "labels" in socket.receive_json()
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect(
            "/v1/live", headers={"host": "localhost:8000", "origin": "http://localhost:9"}
        ) as socket,
    ):
        socket.receive_json()  # another port is another origin (unless an --allowed-host)


def test_live_streams_are_bounded_in_number_and_rate(model):
    from starlette.websockets import WebSocketDisconnect

    app = create_app(ServiceSettings(max_live=1, allowed_hosts=("testserver",)), recognizer=model)
    client = TestClient(app)
    with client.websocket_connect("/v1/live") as first:
        first.receive_json()
        with client.websocket_connect("/v1/live") as second:
            assert "1 live streams are open" in second.receive_json()["detail"]
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_json()
            assert closed.value.code == 1013
        noise = np.random.default_rng(0).uniform(-0.1, 0.1, 16000 * 5).astype("<f4").tobytes()
        answers = []
        for _ in range(12):  # 60 s of audio at once: far faster than it could be recorded
            first.send_bytes(noise)
        while "detail" not in (answer := first.receive_json()):
            answers.append(answer)
        assert "real time" in answer["detail"] and answers  # the first 30 s were predicted
