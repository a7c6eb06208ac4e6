"""The scoring service: MLflow's scoring protocol with a champion/canary split.

    POST /invocations   score rows (dataframe_split / dataframe_records / instances / inputs, CSV)
    GET  /health, /ping process alive
    GET  /ready         200 once a champion is loaded, else 503 with the reason
    GET  /models        the versions being served and the canary share
    GET  /metrics       Prometheus metrics (requests, latency, predictions, log, refresh age)

Served by uvicorn on uvloop and httptools (one process, or `workers` processes sharing the
port, each with its own model refresher and prediction-log writer). Nothing heavy is imported
here: mlflow is imported by the refresher thread when it first talks to the registry;
nannyml, great_expectations and prefect never are.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from evergreen.adapters.predlog import PredictionLogWriter
from evergreen.apps.serving import jsoncodec
from evergreen.apps.serving.models import ModelStore
from evergreen.apps.serving.schema import PayloadError, RequestLimits, parse_body
from evergreen.apps.serving.scoring import NotReadyError, ScoredRequest, score_table
from evergreen.config import ModelConfig

log = logging.getLogger("evergreen.apps.serving")

# Bodies up to this size are scored on the event loop, larger ones in the thread pool (so a
# 10 MB request does not hold up /health and the small requests behind it).
INLINE_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class LogSettings:
    """Where and how often the prediction log is written."""

    directory: str | None = None  # default: config.data.path("predictions_log")
    # A part file costs ~10 ms of CPU plus ~0.65 us per row to write (pandas -> Arrow ->
    # Parquet): flush every 5 s, or sooner once this many rows wait (~20 MB for 20 features);
    # at 20,000 rows a busy service spent ~1.2 us per logged row, at 100,000 ~0.75.
    flush_rows: int = 100_000
    flush_seconds: float = 5.0


def create_app(
    config: ModelConfig,
    *,
    refresh_seconds: float = 2.0,
    limits: RequestLimits | None = None,
    log_settings: LogSettings | None = None,
    store: ModelStore | None = None,
    metrics: bool = True,
    metrics_dir: str | None = None,
) -> FastAPI:
    """The scoring app for one model. Models load in the background once the app starts
    (FastAPI lifespan); `store` replaces the registry-backed model store (tests).
    `metrics`: serve GET /metrics and record what it shows; `metrics_dir`: the shared
    directory of a multi-worker server's metrics (see `evergreen.apps.serving.metrics`)."""
    limits = limits or RequestLimits()
    settings = log_settings or LogSettings()
    if store is None:
        store = ModelStore(
            config.mlflow.model_name, config.canary.traffic_share, connect=_connector(config)
        )
    recorder = None
    if metrics:
        from evergreen.apps.serving.metrics import ServingMetrics

        recorder = ServingMetrics(metrics_dir)
        store.on_resolved = recorder.aliases_resolved
    writer = PredictionLogWriter(
        settings.directory or config.data.path("predictions_log"),
        timestamp_column=config.columns.timestamp,
        flush_rows=settings.flush_rows,
        flush_seconds=settings.flush_seconds,
        on_written=recorder.log_flushed if recorder else None,
        on_error=recorder.log_failed if recorder else None,
    )
    request_ids = RequestIds()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        request_ids.reset()  # in the serving process (a worker is started from a parent)
        store.start(refresh_seconds)
        writer.start()
        log.info(
            "scoring %s (registry model %s); prediction log in %s (process %d)",
            config.name,
            config.mlflow.model_name,
            writer.directory,
            os.getpid(),
        )
        try:
            yield
        finally:
            store.stop()
            try:
                writer.close()
            except Exception:
                log.exception(
                    "could not flush %d logged predictions to %s at shutdown",
                    writer.buffered_rows,
                    writer.directory,
                )
            if recorder is not None:
                recorder.process_exiting()

    app = ScoringApp(
        title=f"Evergreen scoring: {config.name}",
        description="MLflow scoring protocol with a champion/canary split.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.writer = writer
    app.state.config = config
    app.metrics = recorder

    def score(body: bytes, content_type: str | None) -> ScoredRequest:
        snapshot = store.snapshot  # one snapshot for the whole request
        table = parse_body(body, content_type, limits)
        result = score_table(
            snapshot, table, config, pd.Timestamp.now(tz="UTC"), request_ids.next()
        )
        writer.append(result.log)  # columnar; becomes a frame at the next flush
        if recorder is not None:
            recorder.scored(result.counts())
        return result

    async def answer(body: bytes, content_type: str | None) -> tuple[int, bytes, str | None]:
        """Status, JSON body and error code (None: scored) of an /invocations answer."""
        try:
            if len(body) <= INLINE_BODY_BYTES:
                # Scoring a small body takes well under a millisecond: a hop to the thread
                # pool would cost about as much again and contend for the GIL.
                result = score(body, content_type)
            else:
                result = await run_in_threadpool(score, body, content_type)
        except PayloadError as exc:
            error = exc.to_dict()
            return exc.status, jsoncodec.dumps(error), error["error_code"]
        except NotReadyError as exc:
            error = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": str(exc)}
            return 503, jsoncodec.dumps(error), error["error_code"]
        except Exception as exc:
            log.exception("scoring failed")
            error = {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}
            return 500, jsoncodec.dumps(error), error["error_code"]
        return 200, jsoncodec.dumps(result.response()), None

    async def invocations_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type")
        try:
            body = await _read_asgi_body(headers, receive, limits.max_body_bytes)
        except PayloadError as exc:
            error = exc.to_dict()
            status, payload, code = exc.status, jsoncodec.dumps(error), error["error_code"]
        except _Disconnected:
            return
        else:
            status, payload, code = await answer(
                body, content_type.decode("latin-1") if content_type else None
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        if recorder is not None:
            recorder.observe("/invocations", status, perf_counter() - started, code)

    app.fast_invocations = invocations_asgi

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        """Score rows (MLflow's scoring protocol). Normally answered ahead of the middleware
        stack (`ScoringApp.__call__`); this route serves the same through FastAPI otherwise
        (e.g. under a root path) and documents the endpoint."""
        try:
            body = await _read_body(request, limits.max_body_bytes)
        except PayloadError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        status, payload = await answer(body, request.headers.get("content-type"))
        return Response(payload, status_code=status, media_type="application/json")

    @app.get("/health")
    @app.get("/ping")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        ok, reason = store.readiness()
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    @app.get("/models")
    def models() -> dict[str, Any]:
        return {
            **store.snapshot.describe(),
            "last_refresh": store.last_refresh,
            "refresh_seconds": refresh_seconds,
            "errors": dict(store.errors),
            "prediction_log": {
                "directory": writer.directory,
                "buffered_rows": writer.buffered_rows,
                "rows_written": writer.rows_written,
                "last_error": writer.last_error,
            },
            "process": os.getpid(),
        }

    if recorder is not None:

        @app.get("/metrics")
        def prometheus_metrics() -> Response:
            """Prometheus text format: every worker process's values summed."""
            body, content_type = recorder.render()
            return Response(body, media_type=content_type)

    return app


class RequestIds:
    """Request ids, unique across processes and restarts: 16 random hex digits per process
    (drawn again in each worker) and a counter (uuid4 per request costs a system call)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class ScoringApp(FastAPI):
    """The FastAPI app, with `POST /invocations` answered by a plain ASGI handler before the
    middleware stack: a scoring request needs none of it (error pages, exception handlers,
    routing, FastAPI's parameter handling), and that stack costs as much CPU per request as
    scoring a small one. Every other path (health, readiness, docs) goes through FastAPI."""

    fast_invocations: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
    metrics: Any = None  # evergreen.apps.serving.metrics.ServingMetrics, when on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if (
            self.fast_invocations is not None
            and scope["method"] == "POST"
            and scope["path"] == "/invocations"
            and not scope.get("root_path")
        ):
            await self.fast_invocations(scope, receive, send)
            return
        if self.metrics is None:
            await super().__call__(scope, receive, send)
            return
        started, status = perf_counter(), 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, watch)
        finally:
            from evergreen.apps.serving.metrics import route_label

            self.metrics.observe(route_label(scope["path"]), status, perf_counter() - started)


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


async def _read_asgi_body(headers: dict[bytes, bytes], receive: Receive, max_bytes: int) -> bytes:
    declared = headers.get(b"content-length", b"").decode("latin-1")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadError(
            f"request body is {declared} bytes; the limit is {max_bytes} bytes. "
            "Send fewer rows per request.",
            status=413,
        )
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadError(
                f"request body exceeds the limit of {max_bytes} bytes. Send fewer rows per request.",
                status=413,
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadError(
            f"request body is {declared} bytes; the limit is {max_bytes} bytes. "
            "Send fewer rows per request.",
            status=413,
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadError(
                f"request body exceeds the limit of {max_bytes} bytes. Send fewer rows per request.",
                status=413,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _connector(config: ModelConfig) -> Any:
    def connect() -> None:
        from evergreen.adapters.tracking import connect as connect_tracking

        connect_tracking(config.mlflow)

    return connect


SPEC_ENV = "EVERGREEN_SERVE_SPEC"


def serve(
    config: ModelConfig,
    host: str = "127.0.0.1",
    port: int = 5001,
    *,
    workers: int = 1,
    refresh_seconds: float = 2.0,
    limits: RequestLimits | None = None,
    log_settings: LogSettings | None = None,
    access_log: bool = False,
    metrics: bool = True,
) -> None:
    """Run the scoring service with uvicorn (uvloop, httptools) until interrupted.

    `workers` > 1 starts that many processes on the same port (uvicorn's supervisor, which
    restarts a worker that dies). Each loads the models and refreshes the aliases itself and
    writes its own prediction-log part files; on SIGINT/SIGTERM every worker finishes its
    requests and flushes its log before it exits. Per-request access logging is off by
    default (the prediction log is the record of what was served).
    """
    import shutil
    import tempfile

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from evergreen.telemetry import disable_telemetry

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    disable_telemetry()
    # Model downloads would otherwise draw tqdm bars into the service log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": _log_config(LOGGING_CONFIG),
        "access_log": access_log,
        **_fast_io(),
    }
    if workers == 1:
        app = create_app(
            config, refresh_seconds=refresh_seconds, limits=limits, log_settings=log_settings,
            metrics=metrics,
        )  # fmt: skip
        uvicorn.run(app, **options)
        return
    # Workers are spawned processes: they build the app from a spec file (the config with its
    # secrets, so a private temporary folder, not the environment), and share metrics through
    # prometheus_client's multiprocess directory, which must be set before they import it.
    private = tempfile.mkdtemp(prefix="evergreen-serve-")
    try:
        metrics_dir = os.path.join(private, "metrics")
        os.mkdir(metrics_dir)
        spec = ServeSpec(
            config=config, refresh_seconds=refresh_seconds, limits=limits or RequestLimits(),
            log_settings=log_settings or LogSettings(), metrics=metrics,
            metrics_dir=metrics_dir if metrics else None,
        )  # fmt: skip
        spec_path = os.path.join(private, "spec.pickle")
        spec.write(spec_path)
        os.environ[SPEC_ENV] = spec_path
        if metrics:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(
            "evergreen.apps.serving.app:app_from_spec", factory=True, workers=workers, **options
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)


@dataclass(frozen=True)
class ServeSpec:
    """What a worker process needs to build the app (`app_from_spec`)."""

    config: ModelConfig
    refresh_seconds: float
    limits: RequestLimits
    log_settings: LogSettings
    metrics: bool
    metrics_dir: str | None

    def write(self, path: str) -> None:
        import pickle

        # Our own objects, read back by our own workers, in a folder only this user reads.
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            pickle.dump(self, out)


def app_from_spec() -> FastAPI:
    """The app of a worker process of `serve(workers=N)` (uvicorn's app factory): built from
    the spec file named by EVERGREEN_SERVE_SPEC."""
    import pickle

    path = os.environ.get(SPEC_ENV)
    if not path or not os.path.exists(path):
        raise RuntimeError(
            f"{SPEC_ENV} does not name a spec file ({path!r}); start workers with "
            "`evergreen serve --workers N`"
        )
    with open(path, "rb") as spec_file:
        spec: ServeSpec = pickle.load(spec_file)  # noqa: S301 - written by serve() above
    return create_app(
        spec.config, refresh_seconds=spec.refresh_seconds, limits=spec.limits,
        log_settings=spec.log_settings, metrics=spec.metrics, metrics_dir=spec.metrics_dir,
    )  # fmt: skip


def _fast_io() -> dict[str, str]:
    """uvloop and httptools (dependencies; ~4x less CPU per small request than asyncio's
    loop and h11), or uvicorn's defaults where they cannot be imported."""
    chosen = {}
    for option, module, value in (("loop", "uvloop", "uvloop"), ("http", "httptools", "httptools")):
        try:
            __import__(module)
            chosen[option] = value
        except ImportError:
            log.warning("%s is not installed: the service runs slower without it", module)
    return chosen


def _log_config(base: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging config plus Evergreen's loggers on the same handler."""
    loggers = {
        **base["loggers"],
        "evergreen": {"handlers": ["default"], "level": "INFO", "propagate": False},
    }
    return {**base, "loggers": loggers}
