"""The retrain policy's start rule in a real served loop: the `car-loan` block edited on the
Prefect server (as in the UI), a retrain request sent the way the monitor sends it, the retrain
deployment started by its automation and served by `evergreen serve-flows`. Assertions read
the flow runs' states from the Prefect API and the versions from the MLflow registry.

A blocked retrain ends in a Completed state named "Skipped" whose message is
`retrain skipped: <blocker>: <reason>` (flows/retrain.py, evergreen/decisions/policy.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project, copy_days, served_log_tail
from tests.e2e.conftest import alias_version as _alias
from tests.e2e.conftest import registered_versions as _versions

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RUN_TIMEOUT = 240  # seconds for one event-started run to reach a final state


def _edit_block(project: Project, **sections: dict[str, Any]) -> None:
    """Change sections of the saved `car-loan` block (what a user does in the Prefect UI);
    every served run reads the block when it starts."""
    from blocks.model_config import EvergreenModel, block_document_name

    name = block_document_name(project.cfg.name)
    cfg = EvergreenModel.load(name).to_config()
    cfg = cfg.model_copy(update={s: getattr(cfg, s).model_copy(update=u) for s, u in sections.items()})
    EvergreenModel.from_config(cfg).save(name, overwrite=True)
    saved = EvergreenModel.load(name).to_config()
    for section, update in sections.items():
        assert getattr(saved, section).model_dump(include=set(update)) == update, f"block {section} not saved"


def _emit(project: Project, event: str, payload: dict[str, Any]) -> str:
    """Send a model event as the monitor / retrain flows do; returns its id."""
    from prefect.events import emit_event

    sent = emit_event(event, resource={"prefect.resource.id": f"evergreen.model.{project.cfg.name}"}, payload=payload)
    assert sent is not None, f"{event} was not emitted"
    return str(sent.id)


def _drift(project: Project, why: str) -> str:
    """The request that starts the retrain deployment (what the monitor sends once an alert
    episode's evidence is there; no episode is open here, so the start rule is the plain one)."""
    return _emit(project, "evergreen.retrain.requested", {"reason": why, "metric": project.cfg.metric})


def _wait_run(deployment: str, since: datetime, match: dict[str, Any], timeout: float = RUN_TIMEOUT):  # noqa: ANN202
    """The flow run of `deployment` created after `since` whose parameters include `match`,
    once it is in a final state. Other runs (an hourly schedule firing meanwhile) are ignored."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    deadline = time.monotonic() + timeout
    seen: list = []
    while True:
        with get_client(sync_client=True) as client:
            seen = list(
                client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                    flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
                )
            )
        mine = [r for r in seen if all(r.parameters.get(k) == v for k, v in match.items())]
        assert len(mine) <= 1, f"{deployment}: {len(mine)} runs for {match}: {[(r.name, r.state_name) for r in mine]}"
        if mine and mine[0].state is not None and mine[0].state.is_final():
            return mine[0]
        if time.monotonic() > deadline:
            states = [(r.name, r.parameters, r.state and r.state.name) for r in seen]
            raise AssertionError(
                f"{deployment}: no finished run with parameters {match} within {timeout} s; runs since {since}: {states}\n"
                f"{served_log_tail()}"
            )
        time.sleep(1)


def _describe(run) -> str:  # noqa: ANN001
    return f"{run.name}: {run.state.type.value} {run.state.name!r} {run.state.message!r}\n{served_log_tail()}"


@pytest.fixture(scope="module")
def loop(project: Project) -> Iterator[Project]:
    """The e2e project after its bootstrap's `evergreen.model.registered` reached promote.

    The project fixture bootstraps v1 before anything is deployed, so v1 is both `champion`
    and `challenger`, and the start rule sees "challenger v1 awaits its gate" (blocker
    candidate_pending). In a live loop the registration event starts promote, which drops
    that alias (already champion, nothing to gate): send that event here too."""
    assert _alias(project, "champion") == "1"
    if _alias(project, "challenger") is not None:
        since = datetime.now(UTC) - timedelta(seconds=1)
        _emit(project, "evergreen.model.registered", {"version": "1", "bootstrap": True})
        run = _wait_run("promote", since, {"version": "1"})
        assert run.state.is_completed() and "already champion" in (run.state.message or ""), _describe(run)
    assert _alias(project, "challenger") is None and _alias(project, "canary") is None
    # Days 10-12 arrive, with the labels of batches 7-9: labelled rows newer than v1's
    # window, so the start rule gets past `no_new_data` to the blocker each test sets up.
    days = sorted(p.stem for p in (project.staging / "batches").glob("*.parquet"))
    copy_days(project.staging, Path(project.cfg.data.root), days[10:13])
    yield project


def test_a_drift_retrain_without_enough_new_labelled_rows_is_skipped(loop: Project) -> None:
    """min_new_rows above the labelled rows delivered: the event-started retrain ends
    Skipped naming min_new_rows, and nothing is trained or registered."""
    need = 1_000_000  # the e2e stream delivers 10 days of 2,500 rows
    _edit_block(loop, retrain={"cooldown_hours": 0.0, "min_new_rows": need, "max_retrains_per_period": 4})
    before = _versions(loop)
    since = datetime.now(UTC) - timedelta(seconds=1)
    event_id = _drift(loop, "e2e: drift with too few new labels")

    run = _wait_run("retrain", since, {"event_id": event_id})
    assert run.parameters["trigger"] == "event", run.parameters
    assert run.state.is_completed() and run.state.name == "Skipped", _describe(run)
    message = run.state.message or ""
    assert message.startswith("retrain skipped: min_new_rows: "), _describe(run)
    assert f"retrain.min_new_rows={need}" in message, _describe(run)
    assert [v.version for v in _versions(loop)] == [v.version for v in before], "a skipped retrain registered a version"


def test_the_budget_skips_the_retrain_after_the_periods_last_one(loop: Project) -> None:
    """max_retrains_per_period 1: the bootstrap does not count, so the first drift retrain
    registers v2; after its gate (made to fail, so no candidate is left under review) the
    next drift retrain ends Skipped naming the budget, and nothing more is registered."""
    _edit_block(
        loop,
        retrain={"cooldown_hours": 0.0, "min_new_rows": 0, "max_retrains_per_period": 1},
        # An unreachable floor: the gate rejects v2 and drops `challenger`, so the next
        # start check gets past candidate_pending to the budget.
        gate={"metric_floor": 2.0, "min_rows": 10},
    )
    before = _versions(loop)
    assert [v.tags.get("evergreen.bootstrap") for v in before] == ["true"], [v.tags for v in before]

    since = datetime.now(UTC) - timedelta(seconds=1)
    first = _drift(loop, "e2e: drift, the period's one retrain")
    run = _wait_run("retrain", since, {"event_id": first})
    assert run.state.is_completed() and run.state.name == "Completed", _describe(run)
    versions = _versions(loop)
    assert len(versions) == len(before) + 1, _describe(run)
    new = versions[-1]
    assert new.tags["evergreen.bootstrap"] == "false" and new.tags["evergreen.trigger.event_id"] == first, new.tags
    gate = _wait_run("promote", since, {"version": new.version})
    assert gate.state.name == "GateFailed", _describe(gate)
    assert _alias(loop, "challenger") is None and _alias(loop, "canary") is None

    since = datetime.now(UTC) - timedelta(seconds=1)
    second = _drift(loop, "e2e: drift after the budget is spent")
    run = _wait_run("retrain", since, {"event_id": second})
    assert run.state.is_completed() and run.state.name == "Skipped", _describe(run)
    message = run.state.message or ""
    assert message.startswith("retrain skipped: budget: 1 retrains in the last "), _describe(run)
    assert "retrain.max_retrains_per_period=1" in message, _describe(run)
    assert len(_versions(loop)) == len(versions), "a skipped retrain registered a version"
