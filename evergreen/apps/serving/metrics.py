"""Operational metrics of the scoring service, served as `GET /metrics` in Prometheus' text
format by `prometheus_client`.

    evergreen_serving_requests_total{route,status}               requests answered
    evergreen_serving_request_errors_total{route,status,error_code} answers >= 400
    evergreen_serving_request_duration_seconds{route}            latency histogram
    evergreen_serving_predictions_total{alias,version}           rows scored per served model
    evergreen_serving_prediction_log_rows_written_total          rows in part files
    evergreen_serving_prediction_log_rows_pending                rows buffered, not yet written
    evergreen_serving_prediction_log_write_errors_total          failed part-file writes
    evergreen_serving_alias_refresh_timestamp_seconds            last time the aliases resolved
    evergreen_serving_alias_refresh_age_seconds                  seconds since then (the oldest
                                                                 worker's), computed per scrape

With several worker processes (`evergreen serve --workers N`) prometheus_client runs in its
multiprocess mode: each worker writes its values to files under PROMETHEUS_MULTIPROC_DIR
(set by `serve` before the workers start, since prometheus_client reads it when imported) and
the worker answering a scrape sums them. Per-request cost: a few dict look-ups and mmap writes
(BENCHMARKS.md measures the service with and without metrics).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "evergreen_serving"
REFRESH_TIMESTAMP = f"{PREFIX}_alias_refresh_timestamp_seconds"
# Scoring takes ~0.1 ms to tens of ms (10,000 rows); health checks less.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Routes get their own label value; any other path is "other" (no label per random URL).
ROUTES = frozenset({"/invocations", "/health", "/ping", "/ready", "/models", "/metrics"})


def route_label(path: str) -> str:
    """The `route` label of a request path."""
    return path if path in ROUTES else "other"


class ServingMetrics:
    """The service's metrics. `multiprocess_dir`: the PROMETHEUS_MULTIPROC_DIR of a
    multi-worker server (each process writes there, a scrape sums them); None: this process's
    own values in a registry of its own (so several apps in one process never collide)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir is not None:
            from prometheus_client import values

            if os.environ.get("PROMETHEUS_MULTIPROC_DIR") != multiprocess_dir or not getattr(
                values.ValueClass, "__name__", ""
            ).startswith("MmapedValue"):
                raise RuntimeError(
                    f"metrics of several workers need PROMETHEUS_MULTIPROC_DIR={multiprocess_dir} "
                    "set before prometheus_client is imported; start the service with "
                    "`evergreen serve --workers N`"
                )
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "Requests answered, by route and HTTP status.",
            ["route", "status"], registry=reg,
        )  # fmt: skip
        self.errors = Counter(
            f"{PREFIX}_request_errors",
            "Requests answered with an error (status >= 400), by route, status and error code.",
            ["route", "status", "error_code"], registry=reg,
        )  # fmt: skip
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from the request's arrival to its answer, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.predictions = Counter(
            f"{PREFIX}_predictions", "Rows scored, by serving alias and model version.",
            ["alias", "version"], registry=reg,
        )  # fmt: skip
        self.log_written = Counter(
            f"{PREFIX}_prediction_log_rows_written", "Prediction-log rows written to part files.",
            registry=reg,
        )  # fmt: skip
        self.log_pending = Gauge(
            f"{PREFIX}_prediction_log_rows_pending",
            "Prediction-log rows buffered in memory, not yet in a part file.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.log_errors = Counter(
            f"{PREFIX}_prediction_log_write_errors", "Failed prediction-log writes (rows kept).",
            registry=reg,
        )  # fmt: skip
        self.refresh_timestamp = Gauge(
            REFRESH_TIMESTAMP,
            "Unix time the champion and canary aliases were last resolved in the registry "
            "(one sample per worker process when there are several).",
            registry=reg, multiprocess_mode="liveall",
        )  # fmt: skip
        # Label children, cached: `.labels()` costs more than the increment itself.
        self._children: dict[tuple[Any, ...], Any] = {}

    # ------------------------------------------------------------------ recording

    def observe(
        self, route: str, status: int, seconds: float, error_code: str | None = None
    ) -> None:
        """One answered request."""
        key = (route, status)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        found[0].inc()
        found[1].observe(seconds)
        if status >= 400:
            self._child(self.errors, route, str(status), error_code or "").inc()

    def scored(self, counts: dict[tuple[str, str], int]) -> None:
        """Rows scored by a request per (alias, version), all appended to the prediction log."""
        for (alias, version), k in counts.items():
            self._child(self.predictions, alias, version).inc(k)
        self.log_pending.inc(sum(counts.values()))

    def log_flushed(self, rows: int) -> None:
        """Rows of the prediction log written to part files."""
        self.log_written.inc(rows)
        self.log_pending.dec(rows)

    def log_failed(self) -> None:
        self.log_errors.inc()

    def aliases_resolved(self, unix_time: float) -> None:
        self.refresh_timestamp.set(unix_time)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # ------------------------------------------------------------------ exposition

    def render(self) -> tuple[bytes, str]:
        """The body and Content-Type of a scrape: every worker's values when there are several."""
        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            source: Any = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(source, path=self.multiprocess_dir)
        else:
            source = self.registry
        registry.register(_Everything(source))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def process_exiting(self) -> None:
        """Drop this process's live gauges (pending rows, refresh time) from a multi-worker
        scrape; its counters stay in the totals."""
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


class _Everything:
    """The source's metrics plus the alias refresh age, computed at scrape time from the
    refresh timestamps (the oldest worker's: an alias move reaches every worker within it)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        stamps: list[float] = []
        for family in self.source.collect():
            if family.name == REFRESH_TIMESTAMP:
                stamps = [s.value for s in family.samples if s.value > 0]
            yield family
        age = GaugeMetricFamily(
            f"{PREFIX}_alias_refresh_age_seconds",
            "Seconds since the aliases were last resolved in the registry (the oldest of the "
            "worker processes); absent until the first refresh.",
        )
        if stamps:
            age.add_metric([], max(0.0, time.time() - min(stamps)))
        yield age
