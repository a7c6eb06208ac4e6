"""GET /metrics and `evergreen serve --workers N`: the metrics say what was served, and with
several worker processes the canary split and the prediction log stay exact (every scored
row logged once, nothing lost at shutdown)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from serving_support import FEATURES, Registry, make_frame, run_service, set_aliases

from evergreen.adapters.predlog import read_prediction_log
from evergreen.apps.services import executable, free_port, service_env, wait_http
from evergreen.apps.serving.app import LogSettings
from evergreen.config import parse_config
from evergreen.decisions.routing import route_many

pytestmark = pytest.mark.slow


def split_body(frame: pd.DataFrame) -> dict:
    columns = ["id", *FEATURES]
    return {"dataframe_split": {"columns": columns, "data": frame[columns].values.tolist()}}


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics: (name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == w for k, w in labels.items())
    )


# ----------------------------------------------------------------------------- one process


def test_metrics_count_requests_errors_predictions_and_the_log(
    registry_store: Registry, tmp_path: Path
) -> None:
    config = registry_store.config
    champion, canary = registry_store.versions
    set_aliases(config, champion=champion, canary=canary)
    frame = make_frame(600, seed=21)
    # Nothing is written before the test asks: pending rows must show.
    hold = LogSettings(directory=str(tmp_path / "log"), flush_rows=10**9, flush_seconds=3600)
    with run_service(config, tmp_path / "log", log_settings=hold) as svc:
        served: list[tuple[str, str]] = []
        for start in range(0, len(frame), 50):
            r = svc.client.post("/invocations", json=split_body(frame.iloc[start : start + 50]))
            assert r.status_code == 200, r.text
            served += list(zip(r.json()["aliases"], r.json()["versions"], strict=True))
        bad = svc.client.post("/invocations", json={"dataframe_records": [{"id": 1}]})
        assert bad.status_code == 422
        assert (
            svc.client.post(
                "/invocations", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        svc.client.get("/health")

        m = scrape(svc.client)
        ok = {"route": "/invocations", "status": "200"}
        assert total(m, "evergreen_serving_requests_total", **ok) == 12
        assert total(m, "evergreen_serving_requests_total", route="/invocations", status="422") == 1
        assert total(m, "evergreen_serving_requests_total", route="/health", status="200") == 1
        assert total(m, "evergreen_serving_request_errors_total", route="/invocations") == 2
        assert (
            total(
                m,
                "evergreen_serving_request_errors_total",
                status="422",
                error_code="INVALID_PARAMETER_VALUE",
            )  # fmt: skip
            == 1
        )
        assert total(m, "evergreen_serving_request_errors_total", error_code="BAD_REQUEST") == 1
        latency = "evergreen_serving_request_duration_seconds"
        assert total(m, f"{latency}_count", route="/invocations") == 14
        assert total(m, f"{latency}_bucket", route="/invocations", le="+Inf") == 14
        assert 0 < total(m, f"{latency}_sum", route="/invocations") < 14 * 5
        by_model = Counter(served)
        for (alias, version), n in by_model.items():
            got = total(m, "evergreen_serving_predictions_total", alias=alias, version=version)
            assert got == n, (alias, version)
        assert set(by_model) == {("champion", champion), ("canary", canary)}
        assert total(m, "evergreen_serving_prediction_log_rows_pending") == len(frame)
        assert total(m, "evergreen_serving_prediction_log_rows_written_total") == 0
        assert 0 <= total(m, "evergreen_serving_alias_refresh_age_seconds") < 60
        assert total(m, "evergreen_serving_alias_refresh_timestamp_seconds") > 1.7e9

        app_writer = svc.client.get("/models").json()["prediction_log"]
        assert app_writer["buffered_rows"] == len(frame)

    # The shutdown flush went through the writer's hook: the log holds every row once.
    log = read_prediction_log(str(tmp_path / "log"))
    assert len(log) == len(frame) and log["id"].is_unique


def test_metrics_can_be_switched_off(registry_store: Registry, tmp_path: Path) -> None:
    set_aliases(registry_store.config, champion=registry_store.versions[0], canary=None)
    with run_service(registry_store.config, tmp_path / "log", metrics=False) as svc:
        assert svc.client.get("/metrics").status_code == 404
        rows = make_frame(3, seed=4)
        assert svc.client.post("/invocations", json=split_body(rows)).status_code == 200


# ----------------------------------------------------------------------------- two workers


def test_two_workers_keep_the_split_and_the_log_exact(
    registry_store: Registry, tmp_path: Path
) -> None:
    """A real `evergreen serve --workers 2`: requests on fresh connections reach both
    processes; every row is routed as `route_many` says and logged exactly once, in part
    files of both workers, all written by the shutdown (SIGTERM) flush."""
    champion, canary = registry_store.versions
    set_aliases(registry_store.config, champion=champion, canary=canary)
    raw = registry_store.config.model_dump(mode="json")
    raw["data"]["root"] = str(tmp_path / "data")
    config = parse_config(raw)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    log_dir = Path(config.data.path("predictions_log"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        executable("evergreen"), "serve", "--config", str(config_path),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "--log-flush-seconds", "3600",  # nothing written before the shutdown
    ]  # fmt: skip
    server_log = tmp_path / "serve.log"
    with open(server_log, "ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=service_env(),
            start_new_session=True,
        )  # fmt: skip
    frame = make_frame(1200, seed=33)
    answers: dict[int, tuple[str, str]] = {}
    pids: set[int] = set()
    try:
        wait_http(f"{base}/ready", 180, proc, server_log)
        # Both workers ready: each answers /ready only once its models are loaded.
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client(base_url=base, timeout=30) as fresh:  # a new connection
                if fresh.get("/ready").status_code == 200:
                    pids.add(fresh.get("/models").json()["process"])
        assert len(pids) == 2, f"requests reached only processes {pids}"
        served_by: set[int] = set()
        for start in range(0, len(frame), 20):
            rows = frame.iloc[start : start + 20]
            with httpx.Client(base_url=base, timeout=30) as fresh:
                r = fresh.post("/invocations", json=split_body(rows))
                assert r.status_code == 200, r.text
                body = r.json()
                answers.update(
                    zip(
                        rows["id"], zip(body["aliases"], body["versions"], strict=True), strict=True
                    )
                )
                served_by.add(fresh.get("/models").json()["process"])
        with httpx.Client(base_url=base, timeout=30) as client:
            m = scrape(client)
        assert (
            total(m, "evergreen_serving_requests_total", route="/invocations", status="200") == 60
        )
        assert total(m, "evergreen_serving_predictions_total") == len(frame)
        assert total(m, "evergreen_serving_predictions_total", alias="canary") == sum(
            a == "canary" for a, _ in answers.values()
        )
        assert total(m, "evergreen_serving_prediction_log_rows_pending") == len(frame)
        assert total(m, "evergreen_serving_prediction_log_rows_written_total") == 0
        assert not list(log_dir.rglob("*.parquet"))
        assert len([s for (n, _), s in m.items() if n.endswith("refresh_timestamp_seconds")]) == 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, server_log.read_text()[-3000:]

    expected = route_many(
        frame["id"].tolist(), config.mlflow.model_name, config.canary.traffic_share, True
    )
    version = {"champion": champion, "canary": canary}
    assert [answers[i] for i in frame["id"]] == [(a, version[a]) for a in expected]
    log = read_prediction_log(str(log_dir))
    assert len(log) == len(frame)
    assert log["id"].is_unique and set(log["id"]) == set(frame["id"])
    logged = dict(zip(log["id"], zip(log["alias"], log["model_version"], strict=True), strict=True))
    assert logged == answers
    assert log.groupby("request_id")["id"].count().eq(20).all()
    writers = {p.name.split("-")[2] for p in log_dir.rglob("part-*.parquet")}
    assert len(writers) == 2 and writers == {f"p{pid}" for pid in pids} and served_by == pids
    np.testing.assert_array_equal(
        log.set_index("id").loc[frame["id"], "x1"].to_numpy(), frame["x1"].to_numpy()
    )
    assert "could not flush" not in server_log.read_text()
