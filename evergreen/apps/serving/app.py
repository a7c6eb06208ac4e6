"""The scoring service: MLflow's scoring protocol with a champion/canary split.

    POST /invocations   score rows (dataframe_split / dataframe_records / instances / inputs, CSV)
    GET  /health, /ping process alive
    GET  /ready         200 once a champion is loaded, else 503 with the reason
    GET  /models        the versions being served and the canary share

Nothing heavy is imported here: mlflow is imported by the refresher thread when it first
talks to the registry; nannyml, great_expectations and prefect never are.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

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
    # A part file costs ~10 ms of CPU to write whatever its size up to ~10,000 rows: flush
    # every 5 s, or sooner once this many rows wait (~4 MB for 20 features).
    flush_rows: int = 20_000
    flush_seconds: float = 5.0


def create_app(
    config: ModelConfig,
    *,
    refresh_seconds: float = 2.0,
    limits: RequestLimits | None = None,
    log_settings: LogSettings | None = None,
    store: ModelStore | None = None,
) -> FastAPI:
    """The scoring app for one model. Models load in the background once the app starts
    (FastAPI lifespan); `store` replaces the registry-backed model store (tests)."""
    limits = limits or RequestLimits()
    settings = log_settings or LogSettings()
    if store is None:
        store = ModelStore(
            config.mlflow.model_name, config.canary.traffic_share, connect=_connector(config)
        )
    writer = PredictionLogWriter(
        settings.directory or config.data.path("predictions_log"),
        timestamp_column=config.columns.timestamp,
        flush_rows=settings.flush_rows,
        flush_seconds=settings.flush_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.start(refresh_seconds)
        writer.start()
        log.info(
            "scoring %s (registry model %s); prediction log in %s",
            config.name,
            config.mlflow.model_name,
            writer.directory,
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

    app = ScoringApp(
        title=f"Evergreen scoring: {config.name}",
        description="MLflow scoring protocol with a champion/canary split.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.writer = writer
    app.state.config = config

    def score(body: bytes, content_type: str | None) -> ScoredRequest:
        snapshot = store.snapshot  # one snapshot for the whole request
        table = parse_body(body, content_type, limits)
        result = score_table(snapshot, table, config, pd.Timestamp.now(tz="UTC"), uuid.uuid4().hex)
        writer.append(result.log)  # columnar; becomes a frame at the next flush
        return result

    async def answer(body: bytes, content_type: str | None) -> tuple[int, bytes]:
        """Status and JSON body of the answer to an /invocations request."""
        try:
            if len(body) <= INLINE_BODY_BYTES:
                # Scoring a small body takes well under a millisecond: a hop to the thread
                # pool would cost about as much again and contend for the GIL.
                result = score(body, content_type)
            else:
                result = await run_in_threadpool(score, body, content_type)
        except PayloadError as exc:
            return exc.status, jsoncodec.dumps(exc.to_dict())
        except NotReadyError as exc:
            return 503, jsoncodec.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": str(exc)})
        except Exception as exc:
            log.exception("scoring failed")
            error = {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}
            return 500, jsoncodec.dumps(error)
        return 200, jsoncodec.dumps(result.response())

    async def invocations_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type")
        try:
            body = await _read_asgi_body(headers, receive, limits.max_body_bytes)
        except PayloadError as exc:
            status, payload = exc.status, jsoncodec.dumps(exc.to_dict())
        except _Disconnected:
            return
        else:
            status, payload = await answer(body, content_type.decode("latin-1") if content_type else None)
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
        }

    return app


class ScoringApp(FastAPI):
    """The FastAPI app, with `POST /invocations` answered by a plain ASGI handler before the
    middleware stack: a scoring request needs none of it (error pages, exception handlers,
    routing, FastAPI's parameter handling), and that stack costs as much CPU per request as
    scoring a small one. Every other path (health, readiness, docs) goes through FastAPI."""

    fast_invocations: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast_invocations is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/invocations"
            and not scope.get("root_path")
        ):
            await self.fast_invocations(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


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


def serve(
    config: ModelConfig,
    host: str = "127.0.0.1",
    port: int = 5001,
    *,
    refresh_seconds: float = 2.0,
    limits: RequestLimits | None = None,
    log_settings: LogSettings | None = None,
    access_log: bool = False,
) -> None:
    """Run the scoring service with uvicorn until interrupted (flushes the log on exit).

    One process: the snapshot and the log buffer live in it. Per-request access logging is
    off by default (the prediction log is the record of what was served).
    """
    import os

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from evergreen.telemetry import disable_telemetry

    disable_telemetry()
    # Model downloads would otherwise draw tqdm bars into the service log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app = create_app(
        config, refresh_seconds=refresh_seconds, limits=limits, log_settings=log_settings
    )
    uvicorn.run(
        app, host=host, port=port, log_config=_log_config(LOGGING_CONFIG), access_log=access_log
    )


def _log_config(base: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging config plus Evergreen's loggers on the same handler."""
    loggers = {
        **base["loggers"],
        "evergreen": {"handlers": ["default"], "level": "INFO", "propagate": False},
    }
    return {**base, "loggers": loggers}
