"""The HTTP service: ``crabser serve`` (FastAPI + uvicorn) and a web page at ``/``.

Endpoints: ``POST /v1/predict`` (multipart: ``audio`` file, optional ``text``), ``POST
/v1/predict/segments`` (``audio``; ``mode`` vad|fixed, ``window``, ``hop``: a timeline), ``GET
/v1/labels``, ``GET /health``; OpenAPI docs at ``/docs``.

Answers: 200 with the prediction; 413 for an upload over ``max_bytes`` or audio longer than
``max_seconds`` (``max_segment_seconds`` for segments); 422 for input that cannot be used (not
audio, corrupt, empty, silent, NaN samples, missing transcript or audio the model needs), naming
the problem; 503 with ``Retry-After`` when ``workers`` predictions run and ``queue`` more wait.
Every error body is ``{"detail": "..."}``; no stack trace reaches a client (unexpected errors are
logged and answered 500 "internal error").

Predictions run in a pool of ``workers`` threads (1 by default: torch already uses the cores for
one batch), so concurrent requests queue instead of loading many clips into memory at once.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run
time, and they name classes imported inside :func:`create_app` (FastAPI is an optional extra).
"""


import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

from crabser.data.audio import decode_audio
from crabser.errors import AudioError, CrabserError

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


@dataclass
class ServiceSettings:
    """Limits and pool size of the service."""

    model: str = "default"
    workers: int = 1
    queue: int = 32
    max_bytes: int = 20_000_000
    max_seconds: float = 60.0
    max_segment_seconds: float = 1200.0


class TooLarge(CrabserError):
    """An upload or a recording over the service's limits (413)."""


class Busy(CrabserError):
    """Every worker busy and the queue full (503)."""


class WorkerPool:
    """A bounded pool: at most ``workers`` jobs run and ``queue`` wait; more are refused (Busy)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="crabser-predict")
        self.capacity = max(1, workers) + max(0, queue)
        self.pending = 0
        self.lock = threading.Lock()

    async def run(self, function, *args):
        """Run ``function(*args)`` in the pool; Busy when it is full."""
        with self.lock:
            if self.pending >= self.capacity:
                raise Busy(f"the service is busy ({self.pending} requests running or waiting); retry shortly")
            self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)
        finally:
            with self.lock:
                self.pending -= 1


def _answer_models():
    """The response schemas (pydantic; imported with FastAPI, which is an optional dependency)."""
    from pydantic import BaseModel

    from crabser.segment import TimelineEntry

    class ErrorAnswer(BaseModel):
        detail: str

    class PredictionAnswer(BaseModel):
        source: str
        label: str
        probabilities: dict[str, float]
        transcript: str | None = None
        text_source: str | None = None
        seconds: float

    class TimelineAnswer(BaseModel):
        source: str
        duration: float
        labels: list[str]
        segments: list[TimelineEntry]

    return ErrorAnswer, PredictionAnswer, TimelineAnswer


def _validation_detail(error) -> str:
    """FastAPI's request validation errors as one readable line."""
    parts = []
    for item in error.errors():
        where = ".".join(str(x) for x in item.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def create_app(settings: ServiceSettings | None = None, recognizer=None):
    """The FastAPI application (``recognizer`` given, or loaded from ``settings.model``)."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse

    ErrorAnswer, PredictionAnswer, TimelineAnswer = _answer_models()
    errors = {status: {"model": ErrorAnswer, "description": why} for status, why in (
        (413, "upload or audio over the limits"), (422, "input that cannot be used, and why"),
        (503, "every worker busy and the queue full; retry"),
    )}

    from crabser.inference import Recognizer

    settings = settings or ServiceSettings()
    recognizer = recognizer or Recognizer.load(settings.model)
    pool = WorkerPool(settings.workers, settings.queue)
    model_lock = threading.Lock() if settings.workers > 1 else None  # the lazily built ASR is not thread-safe
    app = FastAPI(
        title="crabser", version=_version(),
        description="Speech emotion recognition (Crab). Upload audio (and optionally its transcript); get a label and class probabilities.",
    )

    @app.exception_handler(CrabserError)
    async def _crabser_error(request: Request, error: CrabserError) -> JSONResponse:
        status = 413 if isinstance(error, TooLarge) else 503 if isinstance(error, Busy) else 422
        headers = {"Retry-After": "1"} if isinstance(error, Busy) else None
        return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(error)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_bytes + 64_000:  # multipart overhead
            return JSONResponse({"detail": f"upload of {int(length)} bytes is over the limit of {settings.max_bytes} bytes"}, status_code=413)
        return await call_next(request)

    async def read_upload(audio: UploadFile | None) -> tuple[bytes | None, str]:
        if audio is None:
            return None, "<no audio>"
        name = audio.filename or "upload"
        data = await audio.read(settings.max_bytes + 1)
        if len(data) > settings.max_bytes:
            raise TooLarge(f"{name}: upload over the limit of {settings.max_bytes} bytes")
        return data, name

    def locked(function, *args, **kwargs):
        if model_lock is None:
            return function(*args, **kwargs)
        with model_lock:
            return function(*args, **kwargs)

    def predict_one(data: bytes | None, name: str, text: str | None) -> dict:
        started = time.perf_counter()
        wave = None
        if data is not None:
            wave = decode_audio(data, 16000, name=name)
            seconds = len(wave) / 16000
            if seconds > settings.max_seconds:
                raise TooLarge(f"{name}: audio is {seconds:.1f} s long, over the limit of {settings.max_seconds:g} s (use /v1/predict/segments)")
        prediction = locked(recognizer.predict, (wave, 16000) if wave is not None else None, text, name=name)
        return {**prediction.to_dict(), "seconds": round(time.perf_counter() - started, 4)}

    def predict_segments(data: bytes, name: str, mode: str, window: float, hop: float) -> dict:
        from crabser.data.audio import stream_audio
        from crabser.segment import SegmentSettings, predict_timeline

        blocks, total = stream_audio(data, 16000, name=name)
        if total > settings.max_segment_seconds:
            raise TooLarge(f"{name}: audio is {total:.1f} s long, over the limit of {settings.max_segment_seconds:g} s")
        cut = SegmentSettings(mode=mode, window=window, hop=hop)  # type: ignore[arg-type]
        entries = locked(predict_timeline, recognizer, blocks, total, cut)
        return {"source": name, "duration": round(total, 3), "labels": recognizer.labels, "segments": [asdict(e) for e in entries]}

    @app.get("/health", summary="Liveness and the model served")
    async def health() -> dict:
        return {"status": "ok", "labels": recognizer.labels, "modalities": recognizer.modalities, "busy": pool.pending}

    @app.get("/v1/labels", summary="The classes the model predicts")
    async def labels() -> dict:
        return {"labels": recognizer.labels}

    @app.post("/v1/predict", summary="Predict the emotion of one clip", response_model=PredictionAnswer, responses=errors)
    async def predict(
        audio: Annotated[UploadFile | None, File(description="An audio file (WAV, FLAC, OGG, MP3, WebM, ...)")] = None,
        text: Annotated[str | None, Form(description="The transcript (else ASR, if the model reads text)")] = None,
    ) -> dict:
        data, name = await read_upload(audio)
        if data is None and not recognizer.needs_audio and not (text or "").strip():
            raise AudioError(name, "send audio or a transcript")
        return await pool.run(predict_one, data, name, text)

    @app.post("/v1/predict/segments", summary="Split a long recording and predict each segment (a timeline)",
              response_model=TimelineAnswer, responses=errors)
    async def segments(
        audio: Annotated[UploadFile, File(description="An audio file")],
        mode: Annotated[str, Form(pattern="^(vad|fixed)$", description="vad (voice activity) or fixed windows")] = "vad",
        window: Annotated[float, Form(gt=0.5, le=30.0, description="fixed: window length, seconds")] = 4.0,
        hop: Annotated[float, Form(gt=0.1, le=30.0, description="fixed: hop, seconds")] = 2.0,
    ) -> dict:
        data, name = await read_upload(audio)
        if hop > window:
            raise AudioError(name, f"hop ({hop} s) longer than the window ({window} s)")
        return await pool.run(predict_segments, data, name, mode, window, hop)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crabser")
    except PackageNotFoundError:
        return "0"
