"""The HTTP service on the packaged model: endpoints, limits, hard inputs, fuzzing, the worker pool."""

import asyncio
import io
import threading

import numpy as np
import pytest
import schemathesis
import soundfile as sf
from conftest import tone
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from crabser.data.corpora import emodb as emodb_adapter
from crabser.inference import Recognizer
from crabser.serve import Busy, ServiceSettings, WorkerPool, create_app

LIMITS = ServiceSettings(max_bytes=2_000_000, max_seconds=8.0, max_segment_seconds=40.0, queue=4)


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


def _wav(wave: np.ndarray, rate: int = 16000, subtype: str | None = None, fmt: str = "WAV") -> bytes:
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
    assert body["probabilities"][direct.label] == pytest.approx(direct.probabilities[direct.label], abs=1e-5)


HARD_INPUTS = [
    # (name, payload, status, words in the answer)
    ("empty.wav", b"", 422, "empty file"),
    ("notes.txt", "Grüße, this is text and not audio".encode() * 20, 422, "not audio"),
    ("truncated.wav", _wav(tone(1.0))[:30], 422, "truncated.wav"),
    ("silent.wav", _wav(np.zeros(16000, dtype=np.float32)), 422, "silent"),
    ("zero.wav", _wav(np.zeros(0, dtype=np.float32)), 422, "empty audio"),
    ("nan.wav", _wav(np.full(16000, np.nan, dtype=np.float32), subtype="FLOAT"), 422, "NaN"),
    ("inf.wav", _wav(np.concatenate([tone(0.5), [np.inf]]).astype(np.float32), subtype="FLOAT"), 422, "NaN or infinite"),
    ("long.wav", _wav(tone(9.0)), 413, "over the limit of 8 s"),
    ("stereo48k.wav", _wav(tone(1.0, rate=48000, channels=2), 48000), 200, ""),
    ("phone8k.wav", _wav(tone(1.0, rate=8000), 8000), 200, ""),
    ("tone.flac", _wav(tone(1.0), fmt="FLAC"), 200, ""),
]


@pytest.mark.parametrize("name, payload, status, words", HARD_INPUTS, ids=[h[0] for h in HARD_INPUTS])
def test_hard_inputs_get_the_documented_answer(client, name, payload, status, words):
    answer = client.post("/v1/predict", files={"audio": (name, payload, "application/octet-stream")}, data={"text": "Grüße 😀"})
    assert answer.status_code == status, answer.text
    if status != 200:
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and words in detail
        assert "Traceback" not in answer.text and "File \"" not in answer.text


def test_requests_without_audio_to_a_speech_model(client):
    answer = client.post("/v1/predict", data={"text": "I am so happy"})
    assert answer.status_code == 422 and "needs audio" in answer.json()["detail"]
    answer = client.post("/v1/predict")
    assert answer.status_code == 422


def test_upload_over_the_size_limit_is_413(client):
    big = _wav(0.1 * np.random.default_rng(0).standard_normal(1_100_000).astype(np.float32))  # 2.2 MB
    answer = client.post("/v1/predict", files={"audio": ("big.wav", big, "audio/wav")})
    assert answer.status_code == 413 and "over the limit" in answer.json()["detail"]


def test_segments_give_a_timeline_and_check_their_limits(client, emodb, model):
    frame = emodb_adapter.prepare(emodb).frame
    clips = [sf.read(p, dtype="float32")[0] for p in frame[frame["speaker"] == "16"]["audio"][:4]]
    pause = np.zeros(16000, dtype=np.float32)
    recording = _wav(np.concatenate([x for c in clips for x in (pause, c)] + [pause]))
    answer = client.post("/v1/predict/segments", files={"audio": ("talk.wav", recording, "audio/wav")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["labels"] == model.labels and 3 <= len(body["segments"]) <= 8
    assert all(s["label"] in model.labels for s in body["segments"])
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts) and body["segments"][-1]["end"] <= body["duration"]
    fixed = client.post("/v1/predict/segments", files={"audio": ("talk.wav", recording, "audio/wav")},
                        data={"mode": "fixed", "window": "3", "hop": "1.5"})
    assert fixed.status_code == 200 and fixed.json()["segments"][1]["start"] == 1.5
    bad_mode = client.post("/v1/predict/segments", files={"audio": ("t.wav", recording, "audio/wav")}, data={"mode": "magic"})
    assert bad_mode.status_code == 422 and "mode" in bad_mode.json()["detail"]
    bad_hop = client.post("/v1/predict/segments", files={"audio": ("t.wav", recording, "audio/wav")},
                          data={"mode": "fixed", "window": "2", "hop": "3"})
    assert bad_hop.status_code == 422 and "hop" in bad_hop.json()["detail"]
    too_long = client.post("/v1/predict/segments", files={"audio": ("long.wav", _wav(tone(41.0)), "audio/wav")})
    assert too_long.status_code == 413 and "40 s" in too_long.json()["detail"]


def test_a_bimodal_model_answers_text_only_and_audio_only_requests(run, clip):
    """Text only: 422 (it needs audio). Audio only: the offline ASR supplies the transcript."""
    root, _ = run
    client = TestClient(create_app(LIMITS, recognizer=Recognizer.load(root / "runs/e2e")), raise_server_exceptions=False)
    text_only = client.post("/v1/predict", data={"text": "Der Lappen liegt auf dem Eisschrank."})
    assert text_only.status_code == 422 and "needs audio" in text_only.json()["detail"]
    with open(clip, "rb") as handle:
        audio_only = client.post("/v1/predict", files={"audio": ("clip.wav", handle, "audio/wav")})
    assert audio_only.status_code == 200, audio_only.text
    assert audio_only.json()["text_source"] == "asr" and audio_only.json()["transcript"]
    with open(clip, "rb") as handle:
        both = client.post("/v1/predict", files={"audio": ("clip.wav", handle, "audio/wav")}, data={"text": "Grüße 😀"})
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
    app = create_app(ServiceSettings(workers=1, queue=0), recognizer=model)
    client = TestClient(app, raise_server_exceptions=False)
    gate = threading.Event()
    original = model.predict

    def slow(*args, **kwargs):
        gate.wait(10)
        return original(*args, **kwargs)

    results = []
    model.predict = slow
    try:
        worker = threading.Thread(target=lambda: results.append(client.post("/v1/predict", files={"audio": ("a.wav", _wav(tone(1.0)), "audio/wav")})))
        worker.start()
        for _ in range(100):  # until the first request holds the only worker
            if client.get("/health").json()["busy"] == 1:
                break
            threading.Event().wait(0.05)
        refused = client.post("/v1/predict", files={"audio": ("b.wav", _wav(tone(1.0)), "audio/wav")})
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
    from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/predict/segments", "/v1/labels", "/health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(checks=[not_a_server_error, status_code_conformance, response_schema_conformance])

        check()
