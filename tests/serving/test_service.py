"""The scoring service end to end: a real uvicorn server on 127.0.0.1 and a temporary MLflow
registry (see conftest.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_support import FEATURES, Registry, make_frame, run_service, set_aliases

from evergreen.adapters.predlog import read_prediction_log
from evergreen.apps.serving.app import LogSettings
from evergreen.apps.serving.schema import RequestLimits

pytestmark = pytest.mark.slow


def split_body(frame: pd.DataFrame, columns: list[str] | None = None) -> dict:
    columns = columns or ["id", *FEATURES]
    data = frame[columns].astype(object).where(frame[columns].notna(), None).values.tolist()
    return {"dataframe_split": {"columns": columns, "data": data}}


def records(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict]:
    columns = columns or ["id", *FEATURES]
    return json.loads(frame[columns].to_json(orient="records"))


# ------------------------------------------------------------------------------ import cost


def test_service_imports_no_heavy_library(registry_store: Registry) -> None:
    code = f"""
import json, sys
from evergreen.config import parse_config
from evergreen.apps.serving.app import create_app
config = parse_config(json.loads({json.dumps(registry_store.config.model_dump(mode="json"))!r}))
create_app(config)
heavy = [m for m in ("mlflow", "nannyml", "great_expectations", "prefect") if m in sys.modules]
print(",".join(heavy))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------- split + log


def test_split_predictions_and_log(registry_store: Registry, tmp_path: Path) -> None:
    config, models = registry_store.config, registry_store.models
    champion, canary = registry_store.versions
    set_aliases(config, champion=champion, canary=canary)
    share = config.canary.traffic_share
    frame = make_frame(4000, seed=7)
    by_id = frame.set_index("id")
    served: dict[int, tuple[str, str]] = {}
    with run_service(config, tmp_path / "log") as svc:
        described = svc.client.get("/models").json()
        assert described["champion"]["version"] == champion
        assert described["canary"]["version"] == canary
        assert described["canary_share"] == share

        for start in range(0, len(frame), 100):
            rows = frame.iloc[start : start + 100]
            response = svc.client.post("/invocations", json=split_body(rows))
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body["predictions"]) == len(rows)
            for alias in ("champion", "canary"):
                mask = np.array(body["aliases"]) == alias
                if not mask.any():
                    continue
                version = champion if alias == "champion" else canary
                assert set(np.array(body["versions"])[mask]) == {version}
                expected = models[version].predict(rows.loc[mask]).probability
                np.testing.assert_array_equal(np.array(body["predictions"])[mask], expected)
            served.update(
                zip(
                    rows["id"].tolist(),
                    zip(body["aliases"], body["versions"], strict=True),
                    strict=True,
                )
            )

        n_canary = sum(a == "canary" for a, _ in served.values())
        sigma = math.sqrt(share * (1 - share) / len(served))
        assert abs(n_canary / len(served) - share) < 4 * sigma

        # The same ids again, shuffled and as records: every id keeps its alias.
        again = frame.sample(frac=1.0, random_state=3).head(1500)
        response = svc.client.post("/invocations", json={"dataframe_records": records(again)})
        assert response.status_code == 200
        body = response.json()
        assert [served[i] for i in again["id"]] == list(
            zip(body["aliases"], body["versions"], strict=True)
        )

    log = read_prediction_log(str(tmp_path / "log"))
    assert len(log) == len(frame) + len(again)
    counts = log["id"].value_counts()
    assert set(counts[counts.index.isin(again["id"])]) == {2}
    assert set(counts[~counts.index.isin(again["id"])]) == {1}
    assert log.groupby(["request_id", "id"]).size().max() == 1
    assert {
        i: (a, v) for i, a, v in zip(log["id"], log["alias"], log["model_version"], strict=True)
    } == served
    # Logged class and probability are the serving model's, at its threshold.
    for version, rows in log.groupby("model_version"):
        truth = models[version].predict(by_id.loc[rows["id"]].reset_index())
        np.testing.assert_array_equal(rows["y_pred_proba"].to_numpy(), truth.probability)
        np.testing.assert_array_equal(rows["y_pred"].to_numpy(), truth.prediction)
    np.testing.assert_allclose(
        log.set_index("id").loc[frame["id"].head(50), "x1"].groupby(level=0).first(),
        by_id.loc[frame["id"].head(50), "x1"],
    )


# ---------------------------------------------------------------------------- alias moves


def test_alias_move_during_traffic_fails_no_request(
    registry_store: Registry, tmp_path: Path
) -> None:
    config = registry_store.config
    old, new = registry_store.versions
    set_aliases(config, champion=old, canary=None)
    results: list[tuple[int, list[str], list[int]]] = []
    errors: list[str] = []
    stop = threading.Event()
    frame = make_frame(20_000, seed=11)

    def client_loop(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for k in range(10_000):
                if stop.is_set():
                    return
                rows = frame.iloc[(k * 20) % 19_980 :][:20]
                try:
                    r = client.post("/invocations", json=split_body(rows))
                    body = r.json()
                    results.append((r.status_code, body.get("versions", []), rows["id"].tolist()))
                except Exception as exc:  # a dropped connection is a failure too
                    errors.append(repr(exc))

    # Nothing is flushed before shutdown: the log below proves the lifespan flush.
    never = LogSettings(directory=str(tmp_path / "log"), flush_rows=10**9, flush_seconds=3600)
    with run_service(config, tmp_path / "log", refresh_seconds=0.2, log_settings=never) as svc:
        worker = threading.Thread(target=client_loop, args=(svc.url,))
        worker.start()
        try:
            _wait(lambda: len(results) >= 20, 30, "20 requests before the move")
            set_aliases(config, champion=new, canary=None)
            _wait(
                lambda: any(new in v for _, v, _ in results), 30, "a response from the new version"
            )
            seen = len(results)
            _wait(lambda: len(results) >= seen + 20, 30, "20 requests after the move")
        finally:
            stop.set()
            worker.join(30)
        described = svc.client.get("/models").json()
        assert described["champion"]["version"] == new
        assert described["prediction_log"]["rows_written"] == 0
        assert not list((tmp_path / "log").rglob("*.parquet"))

    assert errors == []
    assert {status for status, _, _ in results} == {200}
    versions = [set(v) for _, v, _ in results]
    assert all(len(v) == 1 for v in versions)  # one snapshot per request
    order = [v.pop() for v in versions]
    switch = order.index(new)
    assert switch >= 20 and set(order[:switch]) == {old} and set(order[switch:]) == {new}

    log = read_prediction_log(str(tmp_path / "log"))
    assert len(log) == sum(len(ids) for _, _, ids in results)
    assert log.groupby(["request_id", "id"]).size().max() == 1
    logged = log.groupby("request_id")["model_version"].agg(lambda s: set(s))
    assert sorted(len(s) for s in logged) == [1] * len(results)
    assert sorted(s.pop() for s in logged) == sorted(order)


def test_not_ready_without_champion_then_ready_once_set(
    registry_store: Registry, tmp_path: Path
) -> None:
    config = registry_store.config
    set_aliases(config, champion=None, canary=None)
    rows = make_frame(3, seed=5)
    with run_service(config, tmp_path / "log", refresh_seconds=0.2, wait_ready=False) as svc:
        assert svc.client.get("/health").status_code == 200
        # Until the first refresh has asked the registry (a moment on a busy machine).
        _wait(
            lambda: "loading" not in svc.client.get("/ready").json()["reason"], 30, "a refresh"
        )
        ready = svc.client.get("/ready")
        assert ready.status_code == 503 and "champion" in ready.json()["reason"]
        response = svc.client.post("/invocations", json=split_body(rows))
        assert response.status_code == 503 and "champion" in response.json()["message"]
        set_aliases(config, champion=registry_store.versions[0], canary=None)
        _wait(lambda: svc.client.get("/ready").status_code == 200, 30, "ready after the move")
        assert svc.client.post("/invocations", json=split_body(rows)).status_code == 200


# ------------------------------------------------------------------- formats and bad input


@pytest.fixture(scope="module")
def service(registry_store: Registry, tmp_path_factory: pytest.TempPathFactory):
    set_aliases(registry_store.config, champion=registry_store.versions[0], canary=None)
    limits = RequestLimits(max_body_bytes=20_000, max_rows=50)
    with run_service(registry_store.config, tmp_path_factory.mktemp("log"), limits=limits) as svc:
        yield svc


ROWS = make_frame(4, seed=9)
RECORDS = records(ROWS)
SPLIT = split_body(ROWS)


def _columnar() -> dict:
    return {c: [r[c] for r in RECORDS] for c in RECORDS[0]}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (SPLIT, None),
        ({"dataframe_records": RECORDS}, None),
        ({"instances": RECORDS}, None),
        ({"inputs": RECORDS}, None),
        ({"inputs": _columnar()}, None),
        ({**SPLIT, "params": {"ignored": 1}}, None),
        (ROWS[["id", *FEATURES]].to_csv(index=False), "text/csv"),
        # Extra columns are ignored; the order of columns does not matter.
        ({"dataframe_records": [{**r, "extra": "x"} for r in RECORDS][::-1]}, "reverse"),
    ],
    ids=[
        "split",
        "records",
        "instances",
        "inputs-records",
        "inputs-columns",
        "params",
        "csv",
        "extra",
    ],
)
def test_every_body_format_gives_the_same_answer(
    service, registry_store, body, content_type
) -> None:
    if content_type == "text/csv":
        r = service.client.post("/invocations", content=body, headers={"content-type": "text/csv"})
    else:
        r = service.client.post("/invocations", json=body)
    assert r.status_code == 200, r.text
    expected = registry_store.models[registry_store.versions[0]].predict(ROWS).probability.tolist()
    if content_type == "reverse":
        expected = expected[::-1]
    assert r.json()["predictions"] == expected
    assert r.json()["aliases"] == ["champion"] * 4


def test_nulls_and_row_timestamps_are_accepted_and_logged(service) -> None:
    body = {
        "dataframe_records": [
            {"id": "a-1", "x1": None, "x2": 0.5, "color": None, "flag": None},
            {
                "id": "a-2",
                "x1": 1,
                "x2": -1.5,
                "color": "purple",
                "flag": "true",
                "timestamp": "2024-05-01T10:00:00+02:00",
            },
        ]  # fmt: skip
    }
    r = service.client.post("/invocations", json=body)
    assert r.status_code == 200, r.text
    assert all(0.0 <= p <= 1.0 for p in r.json()["predictions"])
    _wait(lambda: len(read_prediction_log(service.log_dir, "2024-05-01")) == 1, 10, "log flush")
    row = read_prediction_log(service.log_dir, "2024-05-01").iloc[0]
    assert row["id"] == "a-2" and row["flag"] == True  # noqa: E712 (numpy/pandas bool)
    assert row["timestamp"] == pd.Timestamp("2024-05-01 08:00:00")


def _split_with(column: str, value: object, row: int = 1) -> dict:
    body = json.loads(json.dumps(SPLIT))
    idx = body["dataframe_split"]["columns"].index(column)
    body["dataframe_split"]["data"][row][idx] = value
    return body


BAD_REQUESTS = {
    "missing-feature": (split_body(ROWS, ["id", "x1", "color", "flag"]), 422, "x2"),
    "missing-id": (split_body(ROWS, FEATURES), 422, "id"),
    "null-id": (_split_with("id", None), 422, "id"),
    "numeric-as-text": (_split_with("x1", "abc"), 422, "x1"),
    "numeric-as-bool": (_split_with("x2", True), 422, "x2"),
    "numeric-beyond-float32": (_split_with("x2", 1e39), 422, "x2"),
    "categorical-as-number": (_split_with("color", 3), 422, "color"),
    "categorical-as-list": (_split_with("color", ["red"]), 422, "color"),
    "bool-as-text": (_split_with("flag", "maybe"), 422, "flag"),
    "bad-timestamp": (
        {"dataframe_records": [{**RECORDS[0], "timestamp": "yesterday"}]},
        422,
        "timestamp",
    ),
    "malformed-json": (b'{"dataframe_split": {"columns": ["id"', 400, "not valid JSON"),
    "not-an-object": (b"[1, 2, 3]", 400, "JSON object"),
    "unknown-format": ({"data": RECORDS}, 400, "dataframe_split"),
    "two-formats": ({"dataframe_records": RECORDS, "instances": RECORDS}, 400, "exactly one"),
    "empty-records": ({"dataframe_records": []}, 400, "empty"),
    "empty-split": ({"dataframe_split": {"columns": ["id", *FEATURES], "data": []}}, 400, "empty"),
    "short-row": (
        {"dataframe_split": {"columns": ["id", *FEATURES], "data": [[1, 0.5]]}},
        400,
        "row 0",
    ),
    "record-not-object": ({"dataframe_records": [RECORDS[0], 5]}, 400, "row 1"),
    "split-not-object": ({"dataframe_split": [[1, 2]]}, 400, "dataframe_split"),
    "columns-not-strings": (
        {"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}},
        400,
        "columns",
    ),
    "empty-body": (b"", 400, "empty"),
    "too-many-rows": ({"dataframe_records": RECORDS * 13}, 413, "limit is 50 rows"),
    "too-many-bytes": ({"dataframe_records": [{**RECORDS[0], "pad": "x" * 30_000}]}, 413, "bytes"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_naming_the_problem(service, case: str) -> None:
    body, status, needle = BAD_REQUESTS[case]
    if isinstance(body, bytes):
        r = service.client.post(
            "/invocations", content=body, headers={"content-type": "application/json"}
        )
    else:
        r = service.client.post("/invocations", json=body)
    assert r.status_code == status, r.text
    error = r.json()
    assert needle in error["message"] or needle == error.get("field"), error
    if status == 422:
        assert error["field"] == needle


def test_unsupported_content_type_is_415(service) -> None:
    r = service.client.post("/invocations", content=b"x1=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "Content-Type" in r.json()["message"]


def test_health_ready_models(service, registry_store: Registry) -> None:
    assert service.client.get("/health").json() == {"status": "ok"}
    assert service.client.get("/ping").status_code == 200
    ready = service.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    models = service.client.get("/models").json()
    assert models["champion"]["version"] == registry_store.versions[0]
    assert models["canary"] is None and models["effective_canary_share"] == 0.0
    assert models["champion"]["features"] == FEATURES


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
