"""The monitor flow end to end on the Prefect test harness and a temporary MLflow store.

Events are read back from the Prefect API; MLflow runs from the tracking store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evergreen import events
from evergreen.adapters import io
from evergreen.config import ModelConfig
from evergreen.simulation.stream import write_demo_stream
from flows.monitor import monitor
from tests.flows.conftest import model_for
from tests.support import read_model_events

pytestmark = pytest.mark.slow

DRIFT, DEGRADED, REJECTED = events.DRIFT_DETECTED, events.PERFORMANCE_DEGRADED, events.DATA_REJECTED



def _batch(cfg: ModelConfig, day: int) -> str:
    return io.list_batches(cfg.data.path("batches"))[day].path


def _run(cfg: ModelConfig, batch: str):
    state = monitor(config=cfg, batch=batch, return_state=True)
    results = state.result(raise_on_failure=False)
    assert not isinstance(results, BaseException), results
    return state, results[0]


@pytest.fixture(scope="module")
def clean(demo_config: ModelConfig, tmp_path_factory) -> ModelConfig:
    cfg = model_for(demo_config, "loan-clean", str(tmp_path_factory.mktemp("clean")))
    write_demo_stream(cfg, cfg.data.root, drift="none")
    return cfg


@pytest.fixture(scope="module")
def covariate(demo_config: ModelConfig, tmp_path_factory) -> tuple[ModelConfig, list[str]]:
    cfg = model_for(demo_config, "loan-covariate", str(tmp_path_factory.mktemp("covariate")))
    info = write_demo_stream(cfg, cfg.data.root, drift="covariate", drift_start=4)
    return cfg, info.features_shifted


@pytest.fixture(scope="module")
def concept(demo_config: ModelConfig, tmp_path_factory) -> ModelConfig:
    # Labels arrive the same day, so the monitor sees the realized metric of the batch itself.
    cfg = model_for(demo_config, "loan-concept", str(tmp_path_factory.mktemp("concept")), label_delay=0)
    write_demo_stream(cfg, cfg.data.root, drift="concept", drift_start=4)
    return cfg


def test_clean_batch_emits_no_drift_event(clean: ModelConfig) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    state, result = _run(clean, _batch(clean, 2))
    assert state.is_completed()
    assert result.valid and not result.drift_detected and not result.performance_degraded
    assert result.estimated_metric is not None and result.estimated_metric > 0.9
    events = read_model_events(clean.name, [DRIFT, DEGRADED, REJECTED], since, timeout=5)
    assert events == []
    # The batch is recorded in MLflow with its metrics.
    import mlflow

    run = mlflow.MlflowClient(clean.mlflow.resolved_tracking_uri()).get_run(result.mlflow_run_id)
    assert run.data.tags["evergreen.batch"] == result.batch_id
    assert run.data.metrics["estimated.roc_auc"] == pytest.approx(result.estimated_metric)
    assert any(k.startswith("drift.") for k in run.data.metrics)
    # A quiet batch gets the summary page (monitoring.plots: on_alert, the default).
    page = _plots_page(run)
    assert "Univariate drift per feature" in page
    assert 0 < page.count('class="plotly-graph-div"') < len(clean.columns.features)
    # plotly.js is loaded from the model's history run, which also holds the batch at its step.
    assert len(page.encode()) <= 500_000 and "Plotly.newPlot" in page
    history = run.data.tags["evergreen.monitoring_history_run_id"]
    client = mlflow.MlflowClient(clean.mlflow.resolved_tracking_uri())
    steps = [m.step for m in client.get_metric_history(history, "estimated.roc_auc")]
    assert client.get_metric_history(run.info.run_id, "rows")[0].step in steps
    assert run.info.run_name == f"monitor · {clean.name} · {result.batch_id}"


def _plots_page(run) -> str:  # noqa: ANN001
    import mlflow

    return mlflow.artifacts.load_text(f"{run.info.artifact_uri}/plots/monitor.html")


def test_covariate_shift_emits_drift_event_naming_the_features(covariate) -> None:
    cfg, shifted = covariate
    since = datetime.now(UTC) - timedelta(seconds=5)
    state, result = _run(cfg, _batch(cfg, 6))
    assert state.is_completed(), "drift is not a failure: the run completes"
    assert result.drift_detected
    events = read_model_events(cfg.name, [DRIFT], since, expect=1)
    assert len(events) == 1
    event = events[0]
    assert event.resource.id == f"evergreen.model.{cfg.name}"
    drifted = event.payload["drifted_features"]
    assert set(shifted) <= set(drifted), (shifted, drifted)
    assert event.payload["value"] >= event.payload["threshold"]
    assert event.payload["chunk"] == result.batch_id
    assert result.event_ids and str(event.id) in result.event_ids
    # An alerting batch gets every NannyML plot, one per feature among them.
    import mlflow

    run = mlflow.MlflowClient(cfg.mlflow.resolved_tracking_uri()).get_run(result.mlflow_run_id)
    assert _plots_page(run).count('class="plotly-graph-div"') > len(cfg.columns.features)


def test_concept_drift_shows_realized_metric_falling(concept: ModelConfig) -> None:
    _, before = _run(concept, _batch(concept, 1))
    _, after = _run(concept, _batch(concept, 7))
    assert before.realized_metric is not None and after.realized_metric is not None
    assert after.realized_metric < before.realized_metric - 0.05, (before.realized_metric, after.realized_metric)
    assert after.performance_degraded
    assert DEGRADED in after.events


def test_corrupted_batch_is_rejected_naming_column_and_expectation(clean: ModelConfig, tmp_path) -> None:
    good = io.read_table(_batch(clean, 3))
    bad = good.copy()
    bad["car_value"] = bad["car_value"].astype(str)  # numbers as strings
    path = f"{clean.data.path('batches')}/2019-02-01.parquet"
    io.write_table(bad, path)
    since = datetime.now(UTC) - timedelta(seconds=5)
    state = monitor(config=clean, batch=path, return_state=True)
    assert state.is_failed()
    assert state.name == "DataRejected"
    assert "car_value" in state.message and "expect_column_values_to_be_in_type_list" in state.message
    events = read_model_events(clean.name, [REJECTED], since, expect=1)
    assert len(events) == 1
    assert events[0].payload["batch_id"] == "2019-02-01"
    assert any(f["column"] == "car_value" for f in events[0].payload["failures"])
    # Nothing of the bad batch reaches drift estimation.
    result = state.result(raise_on_failure=False)[0]
    assert result.features == {} and result.estimated_metric is None


def test_pending_batches_are_monitored_once(clean: ModelConfig) -> None:
    """Without --batch the flow processes every batch not yet monitored, and only those."""
    from evergreen.adapters.ledger import read_ledger

    seen_before = set(read_ledger(clean.data.path("state")).batches)
    state = monitor(config=clean, return_state=True)
    results = state.result(raise_on_failure=False)
    days = {r.batch_id for r in results}
    all_days = {b.day for b in io.list_batches(clean.data.path("batches"))}
    assert days == all_days - seen_before
    again = monitor(config=clean, return_state=True)
    assert again.is_completed() and again.result() == []
    # Each run, started as `monitor · <model> · pending`, ends named by what it went through.
    ordered = sorted(days)
    went = ordered[0] if len(ordered) == 1 else f"{ordered[0]} to {ordered[-1]}"
    assert _run_name(state) == f"monitor · {clean.name} · {went}"
    assert _run_name(again) == f"monitor · {clean.name} · nothing new"


def _run_name(state) -> str:  # noqa: ANN001 - a Prefect State
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name
