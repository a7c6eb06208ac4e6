"""The closed loop on a real Prefect server: prefect.yaml deployed with the `prefect` CLI,
served by `evergreen serve-flows`, driven only by events. Assertions read Prefect's own
records (flow runs, states, parameters, automations, events) and the MLflow registry."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evergreen.adapters import registry, tracking
from tests.e2e.conftest import (
    PrefectServer,
    Project,
    Webhook,
    copy_days,
    served_log_tail,
    server_state,
    state_diff,
    wait_runs,
    wait_until_served,
)
from tests.e2e.conftest import alias_version as _alias
from tests.e2e.conftest import registered_versions as _versions
from tests.support import read_model_events, register_challenger, scrambled, serve_history

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DEPLOYMENTS = {"monitor", "retrain", "promote", "canary-review", "rollback", "monitor-all", "retrain-all", "canary-review-all"}


def test_deploy_creates_everything_and_twice_changes_nothing(project: Project) -> None:
    first, second = project.deploy_outputs
    assert set(first["deployments"]) == DEPLOYMENTS
    assert first == second
    deps = first["deployments"]
    # The schedules are the fan-outs' (one run per registered model); no deployment names a
    # model or has a concurrency limit (it would be global across models).
    assert {n for n, d in deps.items() if d["schedules"]} == {"monitor-all", "retrain-all", "canary-review-all"}
    assert all(d["concurrency"] is None and "config" not in d["parameters"] for d in deps.values())
    names = [a[0] for a in first["automations"]]
    # One trigger each on retrain, promote, canary-review, rollback + the model's two notification automations.
    assert len(names) == 6, names
    assert {"evergreen car-loan: promoted or rolled back", "evergreen car-loan: flow run failed"} <= set(names)


def test_drift_starts_one_retrain_with_the_event_parameters_then_promote(project: Project) -> None:
    """The monitor detects injected drift: an alert episode opens (its events go out) and its
    retrain is deferred until labelled rows from after the change exist. Their labels land;
    the next batch's monitor finds the evidence and emits `evergreen.retrain.requested`. That
    request delivered twice and 8 more within a minute: one retrain trains, the rest end
    Skipped (while it runs, by the model's single flight, naming it; after, by the start
    rule), none is Cancelled; then promote starts itself."""
    from prefect.events import emit_event

    from flows.monitor import monitor

    cfg, staging = project.cfg, project.staging
    days = sorted(p.stem for p in (staging / "batches").glob("*.parquet"))
    copy_days(staging, Path(cfg.data.root), days[10:14])
    before = len(_versions(project))
    since = datetime.now(UTC) - timedelta(seconds=1)
    opened = monitor(config=cfg, batch=f"{cfg.data.root}/batches/{days[12]}.parquet", return_state=True).result()[0]
    assert opened.drift_detected and "evergreen.drift.detected" in opened.events, opened.message
    assert opened.episode["transition"] == "opened" and opened.decision == "deferred", (opened.episode, opened.decision)
    assert "evergreen.retrain.requested" not in opened.events
    assert not wait_runs("retrain", since, count=0, settle=10), "an alert without its evidence started a retrain"

    # The labels of batches days[12] and days[13] land (3 days late): post-change evidence.
    labels = Path(cfg.data.root) / "labels"
    for day in days[15:17]:
        shutil.copy(staging / "labels" / f"{day}.parquet", labels / f"{day}.parquet")
    since = datetime.now(UTC) - timedelta(seconds=1)
    result = monitor(config=cfg, batch=f"{cfg.data.root}/batches/{days[13]}.parquet", return_state=True).result()[0]
    assert "evergreen.retrain.requested" in result.events, (result.decision, result.policy)
    assert "evergreen.drift.detected" not in result.events, "one alert event per episode, not per batch"

    names = ["evergreen.retrain.requested"]
    emitted = {str(e.id): e for e in read_model_events(cfg.name, names, since, expect=1) if str(e.id) in result.event_ids}
    event = emitted[result.event_ids[result.events.index("evergreen.retrain.requested")]]
    emit_event(event.event, resource=dict(event.resource), payload=event.payload, id=event.id)  # duplicate delivery
    for _ in range(8):
        extra = emit_event(event.event, resource=dict(event.resource), payload=event.payload)
        emitted[str(extra.id)] = extra

    runs = wait_runs("retrain", since, count=1, settle=15)
    trained = [r for r in runs if r.state.name == "Completed"]
    assert len(trained) == 1, f"{[(r.name, r.state.name, r.state.message) for r in runs]}\n{served_log_tail()}"
    for run in runs:
        assert run.name.startswith("retrain · car-loan · ") and "model:car-loan" in run.tags, (run.name, run.tags)
        if run in trained:  # named by the version it registered
            assert re.fullmatch(r"retrain · car-loan · v\d+", run.name), run.name
        if run not in trained:
            assert run.state.name == "Skipped", (run.name, run.state.name, run.state.message)
            assert run.name.startswith(("retrain · car-loan · skipped (", "retrain · car-loan · deferred")), run.name
            # held by the running one (the one that trains, or one the policy is skipping), or
            # by the start rule once the trained version exists
            held_by = {f"retrain skipped: in_flight: another retrain of car-loan is running (flow run {r.id})" for r in runs if r is not run}
            assert run.state.message in held_by or not run.state.message.startswith("retrain skipped: in_flight"), run.state.message
    # The monitor's request plus the burst: whichever reached the runner first trained, with
    # that event's own id, reason and metric.
    params = trained[0].parameters
    assert params["trigger"] == "event" and params["event_id"] in emitted
    source = emitted[params["event_id"]]
    assert params["reason"] == source.payload["reason"] and params["metric"] == source.payload["metric"]
    event_id = params["event_id"]
    versions = _versions(project)
    assert len(versions) == before + 1
    new = versions[-1]
    assert new.tags["evergreen.trigger.event_id"] == event_id and new.tags["evergreen.prefect.deployment"] == "retrain"

    (promote_run,) = wait_runs("promote", since, count=1)
    assert promote_run.parameters["version"] == new.version
    assert promote_run.state.name in ("Completed", "GateFailed")
    status = registry.get_version(cfg.mlflow.model_name, new.version).status
    assert status == ("canary" if promote_run.state.name == "Completed" else "rejected")
    assert _alias(project, "champion") == "1"


def test_failed_gate_leaves_the_champion_and_notifies(project: Project, webhook: Webhook) -> None:
    from prefect.events import emit_event

    cfg = project.cfg
    champion = _alias(project, "champion")
    bad = register_challenger(cfg, scrambled(cfg, seed=3), {})
    since = datetime.now(UTC) - timedelta(seconds=1)
    emit_event("evergreen.model.registered", resource={"prefect.resource.id": f"evergreen.model.{cfg.name}"}, payload={"version": bad})
    (run,) = wait_runs("promote", since, count=1)
    assert run.state.name == "GateFailed" and f"v{bad} rejected" in run.state.message
    assert _alias(project, "champion") == champion and _alias(project, "challenger") is None
    assert registry.get_version(cfg.mlflow.model_name, bad).status == "rejected"
    call = webhook.wait_for(lambda b: b.get("event") == "prefect.flow-run.GateFailed" and b.get("flow_run_id", "").endswith(str(run.id)))
    assert call["state"] == "GateFailed"


def test_bad_canary_is_rolled_back_by_the_canary_review(project: Project, webhook: Webhook) -> None:
    from prefect.deployments import run_deployment

    cfg = project.cfg
    champion = _alias(project, "champion")
    bad = register_challenger(cfg, scrambled(cfg, seed=4), {})
    tracking.connect(cfg.mlflow)
    registry.start_canary(cfg.mlflow.model_name, bad, {"passed": True}, "e2e test", None)  # as if the gate had passed
    days = sorted(p.stem for p in (project.staging / "batches").glob("*.parquet"))
    serve_history(cfg, days[10:14])
    run = run_deployment("canary-review/canary-review", parameters={"config": "car-loan"}, timeout=240)
    assert run.state.is_completed(), run.state
    assert _alias(project, "canary") is None and _alias(project, "champion") == champion
    assert registry.get_version(cfg.mlflow.model_name, bad).status == "rejected"
    call = webhook.wait_for(lambda b: b.get("event") == "evergreen.model.rolled_back" and b["payload"].get("from_version") == bad)
    assert call["payload"]["to_version"] == champion


GAVE_UP = "the Prefect API is unreachable"


def test_prefect_server_restart_loses_nothing_and_the_loop_carries_on(project: Project, prefect_api: PrefectServer) -> None:
    """Stop the Prefect server, keep it down until the running `serve-flows` has given up
    polling (its runner's retries exhausted: the worst case of a restart), and start it
    again on the same database: deployments, schedules, concurrency limits and automations
    are all there, MLflow's alias history is untouched, `serve-flows` serves again by itself
    (its /health says so) and an event sent after the restart starts its run through the
    automation."""
    import httpx
    from prefect.events import emit_event

    cfg = project.cfg
    before = server_state()
    tracking.connect(cfg.mlflow)
    history = registry.alias_history(cfg.mlflow.model_name)
    champion = _alias(project, "champion")
    log = Path(os.environ["EVERGREEN_E2E_SERVE_LOG"])
    gave_up = log.read_text(errors="replace").count(GAVE_UP)

    def runner_gave_up() -> bool:
        return log.read_text(errors="replace").count(GAVE_UP) > gave_up

    assert prefect_api.restart(down_until=runner_gave_up, timeout=300) == project.api_url
    wait_until_served(datetime.now(UTC))
    assert httpx.get(project.served_health, timeout=10).status_code == 200
    after = server_state()
    assert after == before, f"{state_diff(before, after)}\n{served_log_tail()}"
    assert registry.alias_history(cfg.mlflow.model_name) == history

    bad = register_challenger(cfg, scrambled(cfg, seed=5), {})
    since = datetime.now(UTC) - timedelta(seconds=1)
    emit_event("evergreen.model.registered", resource={"prefect.resource.id": f"evergreen.model.{cfg.name}"}, payload={"version": bad})
    runs = wait_runs("promote", since, count=1, timeout=300, settle=5)
    # Prefect's events client delivers at least once: on reconnecting after the restart it
    # resends what the old server had not confirmed, so an earlier `registered` event may
    # start its promote again. Such a replay must change nothing.
    (run,) = [r for r in runs if r.parameters.get("version") == bad]
    for replay in (r for r in runs if r is not run):
        assert replay.state.is_completed() and "no challenger to gate" in replay.state.message, replay.state
    assert run.state.name == "GateFailed", f"{run.state}\n{served_log_tail()}"
    assert run.parameters["version"] == bad
    assert _alias(project, "champion") == champion
    after = server_state()  # serving again re-applied the same deployments, if it had to
    assert after == before, f"{state_diff(before, after)}\n{served_log_tail()}"
