"""The HTTP service: ``crabser serve`` (FastAPI + uvicorn) and a web page at ``/``.

Endpoints: ``POST /v1/predict`` (multipart: ``audio`` file, optional ``text``), ``POST
/v1/predict/segments`` (``audio``; ``mode`` vad|fixed, ``window``, ``hop``: a timeline), the
WebSocket ``/v1/live`` (streamed microphone audio in, a timeline segment per window out; the web
page's Live button), ``GET /v1/labels``, ``GET /health``; OpenAPI docs at ``/docs``. A WebSocket
handshake gets the Host check below, and one from a page of another origin is refused.

Answers: 200 with the prediction; 413 for an upload over ``max_bytes`` (counted as it arrives, so
a chunked upload without Content-Length is cut off at the limit too), audio longer than
``max_seconds`` (``max_segment_seconds`` for segments) or a transcript over
``max_transcript_chars``; 422 for input that cannot be used (not audio, corrupt, empty, silent, NaN
samples, implausible sample rate, missing transcript or audio the model needs), naming the problem;
408 when the body stalls (``body_timeout`` between chunks, ``upload_timeout`` in all); 400 for a
Host header the service does not answer to; 503 with ``Retry-After`` when ``workers`` predictions
run and ``queue`` more wait. Every error body is ``{"detail": "..."}``; no stack trace reaches a
client (unexpected errors are logged and answered 500 "internal error").

Hostile input (issue 19): audio is decoded with ``max_seconds`` as a bound
(:func:`crabser.data.audio.decode_audio`): a header over the limit is refused before decoding, and a
stream of unknown length is decoded only up to the limit, so a request's memory is bounded by the
limit (60 s x 16 kHz x 4 bytes = 3.84 MB by default) plus one decode block (1 MiB) and the codec's
state (``benchmarks/hostile_inputs.py`` measures it). A failing request's traceback frames are
cleared in the error handlers, so the upload and the decoded audio is freed at once instead of at
the next full garbage collection (a traceback -> frame -> exception reference cycle held it).
Transcripts lose their control characters (a NUL-only transcript counts as missing).

DNS rebinding: bound to a loopback interface (``host``, the default 127.0.0.1), the service
answers only requests whose Host header is localhost, 127.0.0.1 or [::1] (any port), plus
``allowed_hosts``; bound elsewhere it answers any Host. Slow clients (:func:`server_config`, used
by ``crabser serve``): a connection must deliver its request headers within ``header_timeout``
seconds; at most ``max_connections`` are open (and at most half the process's file-descriptor
limit, see :func:`connection_limit`): beyond, the oldest connection still waiting for its headers
is closed to make room, or the
new one when none waits; repeated warnings (asyncio's accept errors, uvicorn's) are logged at most
once per ``log_interval`` seconds with a count of those suppressed. ``/docs`` serves Swagger UI
from assets installed with the package (``fastapi-offline``), never a CDN; without it, a minimal
local page lists the endpoints.

Predictions run in a pool of ``workers`` threads (1 by default: torch already uses the cores for
one batch), so concurrent requests queue instead of loading many clips into memory at once.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run
time, and they name classes imported inside :func:`create_app` (FastAPI is an optional extra).
"""

import asyncio
import ipaddress
import logging
import resource
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np

from crabser.data.audio import AudioTooLong, decode_audio
from crabser.data.text import clean_text
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
    max_transcript_chars: int = 10_000  #: longer transcripts are refused (413), not echoed back
    host: str = "127.0.0.1"  #: the interface served; a loopback one turns the Host check on
    allowed_hosts: tuple[str, ...] = ()  #: Host names answered besides the local ones
    header_timeout: float = 10.0  #: seconds a connection has to send its request headers
    body_timeout: float = 30.0  #: seconds the body may stall between two chunks (408 after)
    upload_timeout: float = 300.0  #: seconds a whole request body may take (408 after)
    keep_alive: float = 5.0  #: seconds an idle keep-alive connection stays open
    max_connections: int = 200  #: open connections at most (and under the fd limit)
    log_interval: float = 10.0  #: a repeated warning is logged at most once per this many seconds
    max_live: int = 8  #: live sockets open at once; more are refused (1013, try again later)

    def trusted_hosts(self) -> frozenset[str] | None:
        """The Host names answered (None: any), see the module docstring."""
        if not _is_loopback(self.host):
            return None
        bound = self.host.strip().lower()
        bound = (
            f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound
        )  # IPv6 as in a Host header
        return frozenset(
            {"localhost", "127.0.0.1", "[::1]", bound, *(_host_name(h) for h in self.allowed_hosts)}
        )


LOCAL_NAMES = ("localhost",)


#: the min_confidence field of the predict endpoints
CONFIDENCE = 'below this top probability the label is "uncertain" (probabilities still given)'


def _is_loopback(host: str) -> bool:
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TooLarge(CrabserError):
    """An upload, a recording or a transcript over the service's limits (413)."""


class Busy(CrabserError):
    """Every worker busy and the queue full (503)."""


class WorkerPool:
    """A bounded pool: at most ``workers`` jobs run and ``queue`` wait; more are refused (Busy)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="crabser-predict"
        )
        self.capacity = max(1, workers) + max(0, queue)
        self.pending = 0
        self.lock = threading.Lock()

    async def run(self, function, *args):
        """Run ``function(*args)`` in the pool; Busy when it is full."""
        with self.lock:
            if self.pending >= self.capacity:
                raise Busy(
                    f"the service is busy ({self.pending} requests running or waiting); retry "
                    "shortly"
                )
            self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)
        finally:
            with self.lock:
                self.pending -= 1


def release_frames(error: BaseException) -> None:
    """Clear the locals of the finished frames that ``error``'s traceback (and its cause's and
    context's) holds: the upload and the decoded audio they reference are freed now, not when a
    full GC breaks the exception -> traceback -> frame -> exception cycle that Starlette's error
    handling creates. Frames still running are left as they are."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


class _Guard:
    """ASGI middleware: the Host check, the upload size counted as it arrives (chunked uploads
    have no Content-Length) and the body's stall / total timeouts. The refusals are HTTPExceptions
    raised in ``receive``: FastAPI passes them through its body parsing to its handler."""

    def __init__(self, app, settings: ServiceSettings) -> None:
        self.app, self.settings, self.hosts = app, settings, settings.trusted_hosts()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        from starlette.responses import JSONResponse

        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if scope["type"] == "websocket":
            refused = self._socket_refusal(headers)
            if refused is None:
                return await self.app(scope, receive, send)
            await receive()  # the handshake's websocket.connect; closing now answers 403
            return await send({"type": "websocket.close", "code": 1008, "reason": refused[:120]})
        problem = self._refusal(headers)
        if problem is not None:
            status, detail = problem
            return await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
        return await self.app(scope, self._bounded(receive), send)

    def _refusal(self, headers: dict[str, str]) -> tuple[int, str] | None:
        host = _host_name(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            return 400, (
                f"Host {host or '(none)'!r} is not served: this service listens on "
                f"{self.settings.host} and answers"
                " localhost names only (add others with --allowed-host)"
            )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_bytes + MULTIPART_OVERHEAD:
            return (
                413,
                (
                    f"upload of {int(length)} bytes is over the limit of {self.settings.max_bytes} "
                    "bytes"
                ),
            )
        return None

    def _socket_refusal(self, headers: dict[str, str]) -> str | None:
        """Why a WebSocket handshake is refused: a Host not served (as for HTTP), or a page of
        another origin (a browser sends Origin; any site could otherwise open a socket to a local
        service)."""
        refused = self._refusal({"host": headers.get("host", "")})
        if refused is not None:
            return refused[1]
        origin = headers.get("origin")
        if origin is not None:
            from urllib.parse import urlsplit

            netloc = urlsplit(origin).netloc.lower()
            served = {_host_name(h) for h in self.settings.allowed_hosts}
            if netloc != headers.get("host", "").lower() and _host_name(netloc) not in served:
                return f"a page of another origin ({origin}) may not open this socket"
        return None

    def _bounded(self, receive):
        from fastapi import HTTPException

        settings, received, deadline = (
            self.settings,
            0,
            time.monotonic() + self.settings.upload_timeout,
        )

        finished = False

        async def guarded():
            nonlocal received, finished
            if (
                finished
            ):  # the body is read: later calls wait for a disconnect (streamed responses), untimed
                return await receive()
            wait = min(settings.body_timeout, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body stalled (no data for {settings.body_timeout:g} s,"
                    f" or over {settings.upload_timeout:g} s in all)",
                ) from None
            received += len(message.get("body", b""))
            finished = message["type"] != "http.request" or not message.get("more_body", False)
            if received > settings.max_bytes + MULTIPART_OVERHEAD:
                raise HTTPException(413, f"upload over the limit of {settings.max_bytes} bytes")
            return message

        return guarded


#: bytes of multipart framing and form fields allowed beyond ``max_bytes``

MULTIPART_OVERHEAD = 64_000


#: the longest chunk a live client may send in one message, seconds
LIVE_CHUNK_SECONDS = 5.0


def _live_problem(window: float, hop: float, min_confidence: float | None) -> str | None:
    """Why live settings are refused (None: they are fine). A window is predicted every hop, so
    the hop is at least 0.25 s and an eighth of the window: at most 4 windows a second and 8
    windows over any sample."""
    if not 0.5 <= window <= 30.0:
        return f"window must be between 0.5 and 30 s, got {window}"
    least = max(0.25, window / 8)
    if not least <= hop <= window:
        return f"hop must be between {least:g} s and the window ({window:g} s), got {hop}"
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        return f"min_confidence must be between 0 and 1, got {min_confidence}"
    return None


#: a live client may send audio this many times faster than real time, after a first burst
LIVE_RATE, LIVE_BURST_SECONDS = 4.0, 30.0


def _live_chunk_problem(
    data: bytes | None, seconds: float, elapsed: float, settings: ServiceSettings
) -> tuple[int, str] | None:
    """(close code, detail) for a live message that cannot be used, None for good audio;
    ``seconds`` of audio came in ``elapsed`` seconds before it."""
    if data is None:
        return 1003, "send audio as binary messages of 16 kHz mono float32 samples"
    if len(data) % 4 or len(data) > LIVE_CHUNK_SECONDS * 16000 * 4:
        return 1003, (
            f"a message of {len(data)} bytes: send whole float32 samples, at most "
            f"{LIVE_CHUNK_SECONDS:g} s per message"
        )
    if not np.isfinite(np.frombuffer(data, dtype="<f4")).all():
        return 1003, "the audio holds NaN or infinite samples"
    after = seconds + len(data) / 64000
    if after > settings.max_segment_seconds:
        return 1009, f"live audio over the limit of {settings.max_segment_seconds:g} s"
    if after > LIVE_BURST_SECONDS + LIVE_RATE * elapsed:
        return 1008, (
            f"{after:.0f} s of audio in {elapsed:.0f} s: a live stream comes at about real "
            "time (send a recording to /v1/predict/segments)"
        )
    return None


def _host_name(host: str) -> str:
    """The Host header without its port: ``[::1]:8000`` -> ``[::1]``, ``LocalHost:80`` ->
    ``localhost``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


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
        embedding: list[float] | None = None  #: only when asked for
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
        parts.append(
            f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid"))
        )
    return "; ".join(parts) or "invalid request"


def create_app(settings: ServiceSettings | None = None, recognizer=None):
    """The FastAPI application (``recognizer`` given, or loaded from ``settings.model``)."""
    from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket, WebSocketDisconnect
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse

    ErrorAnswer, PredictionAnswer, TimelineAnswer = _answer_models()
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorAnswer, "description": why}
        for status, why in (
            (413, "upload or audio over the limits"),
            (422, "input that cannot be used, and why"),
            (503, "every worker busy and the queue full; retry"),
        )
    }

    from crabser.loading import load_predictor

    settings = settings or ServiceSettings()
    recognizer = recognizer or load_predictor(settings.model)
    pool = WorkerPool(settings.workers, settings.queue)
    model_lock = (
        threading.Lock() if settings.workers > 1 else None
    )  # the lazily built ASR is not thread-safe
    app = FastAPI(
        title="crabser",
        version=_version(),
        docs_url=None,
        redoc_url=None,
        description="Speech emotion recognition (Crab). Upload audio (and optionally its "
        "transcript); get a label and class probabilities.",
    )
    _offline_docs(app)

    @app.exception_handler(CrabserError)
    async def _crabser_error(request: Request, error: CrabserError) -> JSONResponse:
        status = (
            413
            if isinstance(error, (TooLarge, AudioTooLong))
            else 503
            if isinstance(error, Busy)
            else 422
        )
        headers = {"Retry-After": "1"} if isinstance(error, Busy) else None
        release_frames(error)
        return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(error)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        release_frames(error)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.add_middleware(_Guard, settings=settings)

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

    def predict_one(
        data: bytes | None,
        name: str,
        text: str | None,
        min_confidence: float | None,
        embed: bool = False,
    ) -> dict:
        started = time.perf_counter()
        wave = None
        if data is not None:
            try:
                wave = decode_audio(data, 16000, name=name, max_seconds=settings.max_seconds)
            except AudioTooLong as error:
                raise TooLarge(f"{error} (use /v1/predict/segments)") from None
        prediction = locked(
            recognizer.predict,
            (wave, 16000) if wave is not None else None,
            text,
            name=name,
            min_confidence=min_confidence,
            embed=embed,
        )
        return {**prediction.to_dict(), "seconds": round(time.perf_counter() - started, 4)}

    def predict_segments(
        data: bytes,
        name: str,
        mode: str,
        window: float,
        hop: float,
        min_confidence: float | None,
    ) -> dict:
        from crabser.data.audio import stream_audio
        from crabser.segment import SegmentSettings, predict_timeline, timeline_record

        blocks, total = stream_audio(
            data, 16000, name=name, max_seconds=settings.max_segment_seconds
        )
        cut = SegmentSettings(
            mode=mode,  # type: ignore[arg-type]
            window=window,
            hop=hop,
            min_confidence=min_confidence,
        )
        entries = locked(predict_timeline, recognizer, blocks, total, cut)
        return timeline_record(name, total, recognizer.labels, entries)

    @app.get("/health", summary="Liveness and the model served")
    async def health() -> dict:
        return {
            "status": "ok",
            "labels": recognizer.labels,
            "modalities": recognizer.modalities,
            "busy": pool.pending,
        }

    @app.get("/v1/labels", summary="The classes the model predicts")
    async def labels() -> dict:
        return {"labels": recognizer.labels}

    @app.post(
        "/v1/predict",
        summary="Predict the emotion of one clip",
        response_model=PredictionAnswer,
        response_model_exclude_unset=True,  # "embedding" only when asked for
        responses=errors,
    )
    async def predict(
        audio: Annotated[
            UploadFile | None, File(description="An audio file (WAV, FLAC, OGG, MP3, WebM, ...)")
        ] = None,
        text: Annotated[
            str | None, Form(description="The transcript (else ASR, if the model reads text)")
        ] = None,
        min_confidence: Annotated[
            float | None, Form(ge=0.0, le=1.0, description=CONFIDENCE)
        ] = None,
        embedding: Annotated[
            bool, Form(description="add the utterance embedding (the model's fused vector)")
        ] = False,
    ) -> dict:
        data, name = await read_upload(audio)
        text = clean_text(text)
        if text is not None and len(text) > settings.max_transcript_chars:
            raise TooLarge(
                f"transcript of {len(text)} characters is over the limit of "
                f"{settings.max_transcript_chars}"
            )
        if data is None and recognizer.needs_audio:
            kinds = " + ".join(recognizer.modalities)
            got = (
                "got only a transcript" if text else "the request has no file in its 'audio' field"
            )
            raise AudioError(name, f"this model ({kinds}) needs audio; {got}")
        if data is None and text is None:
            raise AudioError(name, "send audio or a transcript")
        return await pool.run(predict_one, data, name, text, min_confidence, embedding)

    @app.post(
        "/v1/predict/segments",
        summary="Split a long recording and predict each segment (a timeline)",
        response_model=TimelineAnswer,
        responses=errors,
    )
    async def segments(
        audio: Annotated[UploadFile, File(description="An audio file")],
        mode: Annotated[
            str, Form(pattern="^(vad|fixed)$", description="vad (voice activity) or fixed windows")
        ] = "vad",
        window: Annotated[
            float, Form(gt=0.5, le=30.0, description="fixed: window length, seconds")
        ] = 4.0,
        hop: Annotated[float, Form(gt=0.1, le=30.0, description="fixed: hop, seconds")] = 2.0,
        min_confidence: Annotated[
            float | None, Form(ge=0.0, le=1.0, description=CONFIDENCE)
        ] = None,
    ) -> dict:
        data, name = await read_upload(audio)
        if hop > window:
            raise AudioError(name, f"hop ({hop} s) longer than the window ({window} s)")
        return await pool.run(predict_segments, data, name, mode, window, hop, min_confidence)

    live_sockets = [0]  # open live sockets (a list: changed inside the endpoint)

    @app.websocket("/v1/live")
    async def live(
        socket: WebSocket,
        window: float = 2.0,
        hop: float = 1.0,
        min_confidence: float | None = None,
    ) -> None:
        """Live emotion: the client streams 16 kHz mono float32 samples (little-endian binary
        messages of at most LIVE_CHUNK_SECONDS); the service answers a first message (labels,
        sample_rate, window, hop), then one timeline segment record per window of ``window`` s
        every ``hop`` s as the audio arrives (silent windows: error "silent"). A problem is one
        ``{"detail": ...}`` message, then the socket closes (1008 refused settings or a stream
        far faster than real time, 1003 wrong data, 1009 over the limits, 1013 too many live
        sockets or a full queue, 1001 no audio for ``body_timeout`` s)."""
        from crabser.segment import LiveWindows, predict_live_window

        problem = _live_problem(window, hop, min_confidence)
        await socket.accept()
        if problem is None and live_sockets[0] >= settings.max_live:
            problem = f"{settings.max_live} live streams are open; try again later"
        if problem is not None:
            await socket.send_json({"detail": problem})
            return await socket.close(code=1013 if "try again" in problem else 1008)
        await socket.send_json(
            {"labels": recognizer.labels, "sample_rate": 16000, "window": window, "hop": hop}
        )
        windows, started = LiveWindows(window, hop), time.monotonic()
        live_sockets[0] += 1
        try:
            while True:
                try:
                    message = await asyncio.wait_for(socket.receive(), settings.body_timeout)
                except asyncio.TimeoutError:
                    await socket.send_json(
                        {"detail": f"no audio for {settings.body_timeout:g} s: closed"}
                    )
                    return await socket.close(code=1001)
                if message["type"] == "websocket.disconnect":
                    return None
                data = message.get("bytes")
                elapsed = time.monotonic() - started
                refusal = _live_chunk_problem(data, windows.seconds, elapsed, settings)
                if refusal is not None:
                    code, detail = refusal
                    await socket.send_json({"detail": detail})
                    return await socket.close(code=code)
                samples = np.frombuffer(cast(bytes, data), dtype="<f4")
                for start, wave in windows.push(samples):
                    entry = await pool.run(
                        locked, predict_live_window, recognizer, start, wave, min_confidence
                    )
                    await socket.send_json(asdict(entry))
        except Busy as error:
            await socket.send_json({"detail": str(error)})
            await socket.close(code=1013)
        except WebSocketDisconnect:
            pass
        finally:
            live_sockets[0] -= 1
        return None

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _offline_docs(app) -> None:
    """``/docs``: Swagger UI from the assets of the installed ``fastapi-offline`` package (no CDN);
    without the package, a minimal local page listing the endpoints."""
    import importlib.util

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    spec = importlib.util.find_spec("fastapi_offline")
    assets = Path(spec.origin).parent / "static" if spec and spec.origin else None
    if assets is not None and (assets / "swagger-ui-bundle.js").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url="/openapi.json",
                title="crabser - API",
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            )

        return

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        from html import escape

        rows = "".join(
            f"<li><code>{method.upper()} {escape(path)}</code>: "
            f"{escape(op.get('summary', ''))}</li>"
            for path, item in app.openapi()["paths"].items()
            for method, op in item.items()
        )
        return HTMLResponse(
            f"<!doctype html><title>crabser - API</title><h1>crabser API</h1><ul>{rows}</ul>"
            '<p>The full schema: <a href="/openapi.json">/openapi.json</a></p>'
        )


DOCS_ASSETS = "/docs-assets"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crabser")
    except PackageNotFoundError:
        return "0"


class _OncePer(logging.Filter):
    """Lets a repeated message (same logger and template) through at most once per ``interval``
    seconds, noting how many were suppressed: an accept() failing on every loop turn when file
    descriptors run out would otherwise write megabytes of log per second."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = (record.name, str(record.msg).split("\n")[0]), time.monotonic()
        shown, suppressed = self.last.get(key, (-float("inf"), 0))
        if now - shown < self.interval:
            self.last[key] = (shown, suppressed + 1)
            return False
        if suppressed:
            note = f"{suppressed} similar messages suppressed in the last {self.interval:g} s"
            record.msg = f"{record.msg} ({note})"
        self.last[key] = (now, 0)
        return True


THROTTLED_LOGGERS = ("asyncio", "uvicorn.error", __name__)


def throttle_logs(interval: float) -> _OncePer:
    """Install one :class:`_OncePer` on the loggers that flood under attack (asyncio, uvicorn, this
    one)."""
    gate = _OncePer(interval)
    for name in THROTTLED_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _OncePer)]:
            logger.removeFilter(old)
        logger.addFilter(gate)
    return gate


def connection_limit(wanted: int) -> int:
    """``wanted``, kept to half the soft file-descriptor limit less 32 (the model, logs, the
    listener):
    the listen backlog is set to the same number, so a burst accepted at once (asyncio accepts up to
    a backlog's worth before any ``connection_made`` can evict) stays under the fd limit too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        max(1, min(wanted, (soft - 32) // 2)) if soft != resource.RLIM_INFINITY else max(1, wanted)
    )


def guarded_protocol(header_timeout: float, max_connections: int):
    """uvicorn's h11 protocol with a header timeout and a cap on open connections (see the module
    docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _opened = 0.0

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._opened = time.monotonic()
            if len(self.connections) > max_connections and not self._evict_one():
                log.warning(
                    "refused a connection: %d open, the limit is %d",
                    len(self.connections) - 1,
                    max_connections,
                )
                transport.close()
                return
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self._waiting_for_headers():
                self._disarm()
            elif self._header_timer is None and not self.transport.is_closing():
                self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                log.warning(
                    "closed a connection: no complete request headers within %g s", header_timeout
                )
                self.transport.close()

        def _evict_one(self) -> bool:
            """Close the oldest other connection still waiting for its headers; False when none
            does."""
            idle = [
                c
                for c in self.connections
                if c is not self
                and isinstance(c, GuardedH11Protocol)
                and c._waiting_for_headers()
                and not c.transport.is_closing()
            ]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._opened)
            log.warning(
                "closed the oldest idle connection: %d open, the limit is %d",
                len(self.connections),
                max_connections,
            )
            oldest.transport.close()
            self.connections.discard(oldest)
            return True

    return GuardedH11Protocol


def server_config(app, settings: ServiceSettings, port: int = 8000, log_level: str = "info"):
    """The uvicorn configuration ``crabser serve`` runs: timeouts, connection cap, throttled
    logs."""
    import uvicorn

    limit = connection_limit(settings.max_connections)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_level=log_level,
        timeout_keep_alive=int(max(1, settings.keep_alive)),
        http=guarded_protocol(settings.header_timeout, limit),
        limit_concurrency=limit + settings.queue + settings.workers,
        backlog=limit,
    )
    throttle_logs(settings.log_interval)
    return config


def run_service(settings: ServiceSettings, port: int = 8000) -> None:
    """Serve ``settings.model`` on ``settings.host``:``port`` until stopped (``crabser serve``)."""
    import uvicorn

    config = server_config(create_app(settings), settings, port)
    uvicorn.Server(config).run()
