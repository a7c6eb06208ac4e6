"""The retrain flow on the Prefect test harness and a temporary MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from evergreen.adapters import io, registry
from evergreen.config import ModelConfig, ValidationConfig
from evergreen.simulation.stream import write_demo_stream
from flows.retrain import retrain
from tests.flows.conftest import model_for
from tests.support import read_model_events

pytestmark = pytest.mark.slow

LINEAGE_TAGS = (
    "evergreen.dataset_digest",
    "evergreen.dataset_uri",
    "evergreen.prefect.flow_run_id",
    "evergreen.prefect.deployment",
    "evergreen.trigger",
    "evergreen.code_version",
    "evergreen.status",
)



@pytest.fixture(scope="module")
def stream_cfg(demo_config: ModelConfig, tmp_path_factory) -> ModelConfig:
    cfg = model_for(demo_config, "loan-retrain", str(tmp_path_factory.mktemp("retrain")))
    write_demo_stream(cfg, cfg.data.root, drift="none")
    return cfg


FIRST_RUN: dict[str, object] = {}


def _run_name(state_or_id) -> str:  # noqa: ANN001 - a State or a flow run id
    """The flow run's name as the Prefect API has it now (after the run renamed itself)."""
    from prefect.client.orchestration import get_client

    run_id = getattr(getattr(state_or_id, "state_details", None), "flow_run_id", state_or_id)
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).name


def _run_events(state, name: str, timeout: float = 30.0) -> list:  # noqa: ANN001 - a State
    """The events `name` of the state's flow run, read back from the API (written async)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(
        event=EventNameFilter(name=[name]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{state.state_details.flow_run_id}"]),
    )
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=flt, limit=10).events
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


@pytest.fixture(scope="module")
def first(stream_cfg: ModelConfig):
    since = datetime.now(UTC) - timedelta(seconds=5)
    state = retrain(config=stream_cfg, trigger="event", event_id="evt-123", reason="drift on loan_length", metric="jensen_shannon", return_state=True)
    assert state.is_completed(), state.message
    FIRST_RUN["id"] = state.state_details.flow_run_id
    return state.result(), since


def _client(cfg: ModelConfig) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(cfg.mlflow.resolved_tracking_uri(), cfg.mlflow.resolved_tracking_uri())


def test_retrain_registers_challenger_with_lineage(stream_cfg: ModelConfig, first) -> None:
    result, since = first
    mv = _client(stream_cfg).get_model_version(stream_cfg.mlflow.model_name, result.version)
    for tag in LINEAGE_TAGS:
        assert tag in mv.tags, tag
    assert mv.tags["evergreen.dataset_digest"] == result.dataset_digest
    assert mv.tags["evergreen.trigger"] == "event"
    assert mv.tags["evergreen.trigger.event_id"] == "evt-123"
    assert mv.tags["evergreen.trigger.reason"] == "drift on loan_length"
    assert "challenger" in mv.aliases
    # The run logged the dataset with its digest, the model and the NannyML reference.
    run = _client(stream_cfg).get_run(result.run_id)
    inputs = run.inputs.dataset_inputs
    assert inputs and any(t.key == "evergreen.sha256" and t.value == result.dataset_digest for t in inputs[0].tags)
    assert run.data.metrics["roc_auc"] > 0.85
    assert "brier" in run.data.metrics
    artifacts = {a.path for a in _client(stream_cfg).list_artifacts(result.run_id)}
    assert {"reference", "plots", "evaluation.json"} <= artifacts
    pngs = {a.path: a.file_size for a in _client(stream_cfg).list_artifacts(result.run_id, "plots")}
    assert set(pngs) == {"plots/feature_importance.png", "plots/calibration.png"}, pngs
    assert all(size > 1000 for size in pngs.values()), pngs  # drawn, not empty
    events = read_model_events(stream_cfg.name, ["evergreen.model.registered"], since, expect=1)
    assert len(events) == 1
    assert events[0].payload["version"] == result.version
    assert events[0].payload["dataset_digest"] == result.dataset_digest
    assert events[0].payload["run_id"] == result.run_id


def test_first_retrain_bootstraps_champion(stream_cfg: ModelConfig, first) -> None:
    result, _ = first
    assert result.bootstrap
    assert set(result.aliases) == {"champion", "challenger"}
    champion = registry.version_by_alias(stream_cfg.mlflow.model_name, "champion")
    assert champion is not None and champion.version == result.version
    assert champion.tags["evergreen.status"] == "champion"
    history = registry.alias_history(stream_cfg.mlflow.model_name)
    # champion first: the scoring service gets a model even if the second move is lost
    assert [(m.alias, m.to_version) for m in history] == [("champion", result.version), ("challenger", result.version)]


def test_model_loads_in_fresh_process_and_predicts_the_same(stream_cfg: ModelConfig, first, tmp_path) -> None:
    result, _ = first
    reference = Path(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id, artifact_path="reference/monitor_reference.parquet", dst_path=str(tmp_path),
            tracking_uri=stream_cfg.mlflow.resolved_tracking_uri(),
        )
    )
    script = (
        "import sys, mlflow, pandas as pd\n"
        "from evergreen.adapters.registry import load_model_uri\n"
        "mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])\n"
        "model = load_model_uri(f'models:/{sys.argv[2]}@challenger')\n"
        "frame = pd.read_parquet(sys.argv[3])\n"
        "pd.DataFrame({'p': model.held_out().predict(frame).probability, 'served': model.predict(frame).probability,\n"
        "              'probe': model.probe is not None}).to_parquet(sys.argv[4])\n"
    )
    out = tmp_path / "pred.parquet"
    subprocess.run(
        [sys.executable, "-c", script, stream_cfg.mlflow.resolved_tracking_uri(), stream_cfg.mlflow.model_name, str(reference), str(out)],
        check=True, timeout=300,
    )
    logged = pd.read_parquet(reference)[stream_cfg.columns.probability].to_numpy()
    scored = pd.read_parquet(out)
    fresh = scored["p"].to_numpy()
    assert len(fresh) == len(logged) > 100
    # the reference is the hold-out scored by the model that never saw it: the probe (the
    # registered model was refit on the hold-out as well, `training.refit_on_holdout`)
    assert (abs(fresh - logged) < 1e-7).all()
    assert scored["probe"].all()
    assert not (abs(scored["served"].to_numpy() - logged) < 1e-7).all()


def test_a_retrain_run_ends_named_by_the_version_it_registered(stream_cfg: ModelConfig, first) -> None:
    """It starts as `retrain · <model> · event` (its trigger: the version is not known yet)
    and renames itself once it registered one, before its final state is set."""
    result, _ = first
    assert _run_name(FIRST_RUN["id"]) == f"retrain · loan-retrain · v{result.version}"


def test_identical_data_registers_no_second_version(stream_cfg: ModelConfig, first) -> None:
    """Changed on purpose (issue 16): a second retrain on identical data used to register a
    second version; it now shares the snapshot and is skipped, naming the version it repeats."""
    result, _ = first
    state = retrain(config=stream_cfg, return_state=True)
    assert state.is_completed() and state.name == "Skipped", state.message
    assert state.message.startswith("retrain skipped: same_data: ")
    second = state.result()
    assert second.status == "skipped" and second.blocked_by == "same_data"
    assert f"v{result.version}" in second.message
    assert second.dataset_digest == result.dataset_digest
    assert second.dataset_reused
    assert _run_name(state) == "retrain · loan-retrain · skipped (same data)"
    store = Path(stream_cfg.data.path("dataset_store"))
    assert len(list(store.glob("*/*/meta.json"))) == 1
    assert [v.version for v in registry.list_versions(stream_cfg.mlflow.model_name)] == [result.version]
    assert registry.version_by_alias(stream_cfg.mlflow.model_name, "champion").version == result.version
    # A schedule on the same stream is held before it reads anything: nothing is newer.
    held = retrain(config=stream_cfg, trigger="schedule", return_state=True)
    assert held.name == "Skipped" and held.message.startswith("retrain skipped: no_new_data: "), held.message
    assert _run_name(held) == "retrain · loan-retrain · skipped (no new data)"


def test_corrupted_window_registers_nothing(demo_config: ModelConfig, tmp_path) -> None:
    # Impossible values are the user's to declare (values beyond the old range are kept).
    declared = demo_config.model_copy(update={"validation": ValidationConfig(limits={"car_value": {"min": 0}})})
    cfg = model_for(declared, "loan-corrupt", str(tmp_path / "data"))
    write_demo_stream(cfg, cfg.data.root, drift="none")
    batch = io.list_batches(cfg.data.path("batches"))[-2]  # inside the sliding window
    frame = io.read_table(batch.path)
    frame.loc[: len(frame) // 2, "car_value"] = -1e12  # impossible values in half the batch
    io.write_table(frame, batch.path)
    since = datetime.now(UTC) - timedelta(seconds=5)
    state = retrain(config=cfg, return_state=True)
    assert state.is_failed() and state.name == "TrainingDataRejected"
    assert "car_value" in state.message and "validation.limits.car_value" in state.message
    assert _run_name(state) == "retrain · loan-corrupt · data rejected"
    # Renamed before its final state was set: the state's event (what the failed-run
    # automation matches on, by name) carries the new name.
    (failed,) = _run_events(state, "prefect.flow-run.TrainingDataRejected")
    assert failed.resource.get("prefect.resource.name") == "retrain · loan-corrupt · data rejected"
    assert registry.list_versions(cfg.mlflow.model_name) == []
    # The window was staged for the store while it was validated: nothing of it is left.
    store = Path(cfg.data.path("dataset_store"))
    assert not store.exists() or [p for p in store.rglob("*") if p.is_file()] == []
    events = read_model_events(cfg.name, ["evergreen.data.rejected"], since, expect=1)
    assert len(events) == 1
    assert json.dumps(events[0].payload)  # plain JSON
