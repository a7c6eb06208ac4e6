"""The bad-input catalogue (`bad_inputs.CATALOGUE`) through the real flows.

One stream for the module: the demo data, a champion registered by the retrain flow and a
prediction log written by the scoring service's log writer. Each bad batch lands in the
stream's batch folder and goes through `monitor(config, batch=path)`; each bad labels file
goes through `retrain(config)`. For a rejection the test checks the Failed state's name and
message (file, column, expectation), the `evergreen.data.rejected` event read back from the
Prefect API, the batch ledger, and that the registry (versions, tags, aliases, alias
history), the snapshot store and the prediction log are byte-for-byte unchanged. The last
test sends a good batch and a good window through after all of them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from evergreen import events
from evergreen.adapters import io, registry
from evergreen.adapters.ledger import read_ledger
from evergreen.adapters.predlog import PredictionLogWriter
from evergreen.config import ColumnLimits, ModelConfig, load_config
from evergreen.simulation.stream import write_demo_stream
from flows.monitor import monitor
from flows.retrain import retrain
from tests.flows.conftest import ROOT
from tests.reliability.bad_inputs import (
    CATALOGUE,
    COLUMNS_MATCH,
    BadInput,
    write_bad_input,
)
from tests.support import read_model_events

# The session's Prefect test harness (tests/conftest.py): flows run in this process.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

REJECTED = events.DATA_REJECTED
BATCH_CASES = [c for c in CATALOGUE if c.kind == "batch"]
LABEL_CASES = [c for c in CATALOGUE if c.kind == "labels"]
FRESH_IDS = 1_000_000  # ids no label names: accepted batches must not join labels


@pytest.fixture(autouse=True)
def no_outbound_connections():
    """Non-loopback connections are refused and counted; none may be attempted."""
    from tests.egress import refuse_outbound

    with refuse_outbound() as attempts:
        yield
    assert attempts == [], f"outbound connection attempts: {attempts}"


@dataclass(frozen=True)
class Stream:
    cfg: ModelConfig
    labelled: pd.DataFrame  # a good batch whose ids have labels
    fresh: pd.DataFrame  # the same rows under ids no label names
    champion: str


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    tmp = tmp_path_factory.mktemp("bad-input")
    base = load_config(ROOT / "configs" / "demo.yaml")
    name = "loan-bad-input"
    cfg = base.model_copy(
        update={
            "name": name,
            "data": base.data.model_copy(update={"root": str(tmp / "data"), "max_batch_rows": 10_000}),
            # A small, quick model: these tests are about the data, not the model's quality.
            "training": base.training.model_copy(update={"num_boost_round": 40, "early_stopping_rounds": 5}),
            "retrain": base.retrain.model_copy(update={"window_days": 7}),
            # A user's rule: a car has no negative value (`impossible_value` breaks it).
            "validation": base.validation.model_copy(update={"limits": {"car_value": ColumnLimits(min=0)}}),
            "mlflow": base.mlflow.model_copy(
                update={
                    "model_name": name,
                    "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                    "artifact_root": str(tmp / "mlartifacts"),
                }
            ),
        }
    )
    from tests.egress import refuse_outbound

    with refuse_outbound() as attempts:
        write_demo_stream(cfg, cfg.data.root, drift="none")
        boot = retrain(config=cfg, return_state=True)
        assert boot.is_completed(), boot.message
        batches = io.list_batches(cfg.data.path("batches"))
        _log_predictions(cfg, io.read_table(batches[2].path))
    assert attempts == [], f"outbound connection attempts: {attempts}"
    labelled = io.read_table(batches[3].path)
    fresh = labelled.assign(**{cfg.columns.id: labelled[cfg.columns.id] + FRESH_IDS})
    return Stream(cfg, labelled, fresh, boot.result().version)


def _log_predictions(cfg: ModelConfig, batch: pd.DataFrame) -> None:
    """What the scoring service writes: served rows with alias, request time and id."""
    writer = PredictionLogWriter(cfg.data.path("predictions_log"), timestamp_column=cfg.columns.timestamp)
    writer.append(batch.assign(alias="champion", served_at=pd.Timestamp.now(tz="UTC"), request_id="r-1"))
    writer.close()
    assert writer.rows_written == len(batch)


def _files(directory: str) -> dict[str, str]:
    root = Path(directory)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _protected_state(cfg: ModelConfig) -> dict:
    """Everything bad input must leave alone: the registry (versions, their tags, aliases,
    the alias history kept as registered-model tags), the snapshots, the prediction log."""
    import mlflow

    client = mlflow.MlflowClient(cfg.mlflow.resolved_tracking_uri(), cfg.mlflow.resolved_tracking_uri())
    name = cfg.mlflow.model_name
    model = client.get_registered_model(name)
    versions = {
        v.version: (v.status, v.source, dict(v.tags))
        for v in client.search_model_versions(f"name = '{name}'")
    }
    state = {
        "aliases": dict(model.aliases),
        "model_tags": dict(model.tags),
        "versions": versions,
        "snapshots": _files(cfg.data.path("dataset_store")),
        "prediction_log": _files(cfg.data.path("predictions_log")),
    }
    assert state["versions"] and state["snapshots"] and state["prediction_log"]
    return state


def _rejected_event(cfg: ModelConfig, since: datetime, match, timeout: float = 30.0):  # noqa: ANN001
    """The one `evergreen.data.rejected` event of this model whose payload matches."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in read_model_events(cfg.name, [REJECTED], since) if match(e.payload)]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"expected one {REJECTED} event, got {len(found)}"
            return found[0]
        time.sleep(0.5)


def _assert_not_rejected(cfg: ModelConfig, since: datetime, day: str) -> None:
    time.sleep(1)  # events travel asynchronously: give a wrong one time to arrive
    events = read_model_events(cfg.name, [REJECTED], since)
    assert [e.payload for e in events if e.payload.get("batch_id") == day] == []


def _assert_names(message: str, path: str, case: BadInput) -> None:
    """The run's message names the file, the column(s) and the expectation(s)."""
    assert path in message, message
    for column in case.columns or ("(table)",):
        assert column in message, (column, message)
    for expectation in case.expectations:
        assert expectation in message, (expectation, message)


def _day(case: BadInput) -> str:
    return f"2019-03-{BATCH_CASES.index(case) + 1:02d}"


def _drift_figures(result) -> dict:  # noqa: ANN001
    return {
        "estimated": result.estimated_metric,
        "multivariate": (result.multivariate or {}).get("value"),
        **{f"drift.{k}": v.get("value") for k, v in result.features.items()},
    }


@pytest.fixture(scope="module")
def ordered(stream: Stream):
    """The monitor's result on the good rows, in time order (what shuffled rows must match)."""
    cfg = stream.cfg
    path = f"{cfg.data.path('batches')}/2019-02-28.parquet"
    io.write_table(stream.fresh, path)
    state = monitor(config=cfg, batch=path, return_state=True)
    assert state.is_completed(), state.message
    return state.result()[0]


@pytest.mark.parametrize("case", BATCH_CASES, ids=lambda c: c.name)
def test_bad_batch(stream: Stream, case: BadInput, request: pytest.FixtureRequest) -> None:
    cfg = stream.cfg
    before = _protected_state(cfg)
    day = _day(case)
    good = stream.labelled if case.outcome == "rejected" else stream.fresh
    path = write_bad_input(case, good, f"{cfg.data.path('batches')}/{day}{case.suffix}", cfg)
    since = datetime.now(UTC) - timedelta(seconds=1)

    state = monitor(config=cfg, batch=path, return_state=True)
    [result] = state.result(raise_on_failure=False)
    record = read_ledger(cfg.data.path("state")).batches[day]

    if case.outcome == "rejected":
        assert state.is_failed() and state.name == "DataRejected", state.message
        _assert_names(state.message, path, case)
        event = _rejected_event(cfg, since, lambda p: p.get("batch_id") == day)
        assert event.payload["path"] == path
        failures = event.payload["failures"]
        assert set(case.expectations) <= {f["expectation_type"] for f in failures}, failures
        assert all(f["message"] for f in failures)
        if case.columns:
            assert case.columns[0] in {f["column"] for f in failures}, failures
        assert str(event.id) in result.event_ids
        assert not result.valid and result.features == {} and result.estimated_metric is None
        assert not record.valid and record.message == result.message
    else:
        assert state.is_completed(), state.message
        assert result.valid and record.valid and REJECTED not in result.events
        assert result.estimated_metric is not None
        _assert_not_rejected(cfg, since, day)
        if case.name == "extra_column":
            [warning] = result.warnings
            assert warning["column"] == "promo_code" and warning["expectation_type"] == COLUMNS_MATCH
            assert "promo_code" in result.message
        if case.finding:
            # Values the reference never had: reported per column and counted as drift.
            [finding] = result.distribution_findings
            assert (finding.column, finding.check) == (case.columns[0], case.finding)
            assert finding.expectation_type in case.expectations
            assert case.columns[0] in result.message and result.drift_detected
            assert case.columns[0] in result.reasons[0]
        if case.name == "timestamps_out_of_order":
            expected = request.getfixturevalue("ordered")
            assert _drift_figures(result) == pytest.approx(_drift_figures(expected), rel=1e-9)
    assert _protected_state(cfg) == before


@pytest.mark.parametrize("case", LABEL_CASES, ids=lambda c: c.name)
def test_bad_labels_register_nothing(stream: Stream, case: BadInput) -> None:
    cfg = stream.cfg
    before = _protected_state(cfg)
    labels_dir = cfg.data.path("labels")
    good_path = io.list_batches(labels_dir)[8].path
    good = io.read_table(good_path)
    path = good_path if case.in_place else f"{labels_dir}/2019-03-{28 + LABEL_CASES.index(case)}.parquet"
    original = Path(good_path).read_bytes()
    write_bad_input(case, good, path, cfg)
    try:
        since = datetime.now(UTC) - timedelta(seconds=1)
        state = retrain(config=cfg, return_state=True)
        assert state.is_failed() and state.name == "TrainingDataRejected", state.message
        _assert_names(state.message, path, case)
        event = _rejected_event(cfg, since, lambda p: path in p.get("files", []))
        failures = [f for f in event.payload["failures"] if f["file"] == path]
        assert set(case.expectations) <= {f["expectation_type"] for f in failures}, failures
        if case.columns:
            assert case.columns[0] in {f["column"] for f in failures}, failures
        result = state.result(raise_on_failure=False)
        assert result.status == "rejected" and result.version is None
        assert _protected_state(cfg) == before
    finally:  # the operator fixes the labels: the next test starts from good labels
        if case.in_place:
            Path(good_path).write_bytes(original)
        else:
            Path(path).unlink()


def test_next_good_batch_and_window_are_processed_normally(stream: Stream) -> None:
    """After every bad case: a good batch is monitored (its realized metric comes from the
    newest labelled batch the monitor accepted, not from a rejected one), and a retrain
    trains on the good batches only and registers a challenger next to the champion."""
    cfg = stream.cfg
    rejected = read_ledger(cfg.data.path("state")).rejected()
    assert {_day(c) for c in BATCH_CASES if c.outcome == "rejected"} <= set(rejected)

    batches = io.list_batches(cfg.data.path("batches"))
    last_stream_day = [b for b in batches if b.day < "2019-02"][-1]
    good = io.read_table(last_stream_day.path)
    path = f"{cfg.data.path('batches')}/2019-04-01.parquet"
    io.write_table(good.assign(**{cfg.columns.id: good[cfg.columns.id] + 2 * FRESH_IDS}), path)
    since = datetime.now(UTC) - timedelta(seconds=1)
    state = monitor(config=cfg, batch=path, return_state=True)
    assert state.is_completed(), state.message
    [result] = state.result()
    assert result.valid and result.estimated_metric > 0.9
    assert result.realized_on is not None and result.realized_on < "2019-02"
    _assert_not_rejected(cfg, since, "2019-04-01")

    # Its labels arrive: the window holds data no version was trained on (without new data
    # the retrain would skip as same_data: the bootstrap trained on the same good batches).
    known = io.read_labels(cfg.data.path("labels")).drop_duplicates(cfg.columns.id).set_index(cfg.columns.id)[cfg.columns.target]
    labels = pd.DataFrame({cfg.columns.id: good[cfg.columns.id] + 2 * FRESH_IDS, cfg.columns.target: good[cfg.columns.id].map(known)})
    io.write_table(labels.dropna(), f"{cfg.data.path('labels')}/2019-04-02.parquet")
    trained = retrain(config=cfg, return_state=True)
    assert trained.is_completed(), trained.message
    out = trained.result()
    assert out.status == "registered" and out.aliases == ["challenger"], out.message
    assert set(rejected) <= set(out.excluded), out.excluded
    assert "2019-04-01" in out.sources and not set(rejected) & set(out.sources), out.sources
    name = cfg.mlflow.model_name
    assert registry.version_by_alias(name, registry.CHAMPION).version == stream.champion
