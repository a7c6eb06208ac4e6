"""Every prefect.yaml deployment points at a real flow that accepts the parameters the
deployment, its schedules and its triggers pass."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


def _flow(entrypoint: str):  # noqa: ANN202
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def _passed(deployment: dict) -> set[str]:
    names = set(deployment.get("parameters", {}))
    for schedule in deployment.get("schedules", []):
        names |= set(schedule.get("parameters", {}))
    for trigger in deployment.get("triggers", []):
        names |= set(trigger.get("parameters", {}))
    return names


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_is_a_flow_taking_the_deployment_parameters(name: str) -> None:
    from prefect import Flow

    deployment = DEPLOYMENTS[name]
    flow = _flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    assert flow.name == name
    accepted = set(inspect.signature(flow.fn).parameters)
    assert _passed(deployment) <= accepted, _passed(deployment) - accepted


def test_every_flow_has_a_deployment() -> None:
    assert set(DEPLOYMENTS) == {"monitor", "retrain", "promote", "canary-review", "rollback"}


def test_retrain_is_single_flight_and_triggered_by_the_episodes_request() -> None:
    retrain = DEPLOYMENTS["retrain"]
    assert retrain["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    (trigger,) = retrain["triggers"]
    assert trigger["expect"] == ["evergreen.retrain.requested"]
    assert trigger["match"]["prefect.resource.id"].startswith("evergreen.model.")
    assert {"event_id", "reason", "metric"} <= set(trigger["parameters"])


def test_canary_window_is_the_configs_not_a_trigger_delay() -> None:
    """The review waits `canary.window_hours` itself (the flow checks it, per model): the
    trigger must not hold a second, hard-coded copy of the window."""
    (trigger,) = DEPLOYMENTS["canary-review"]["triggers"]
    assert trigger["expect"] == ["evergreen.canary.started"]
    assert "schedule_after" not in trigger


def test_no_secret_in_prefect_yaml() -> None:
    text = (ROOT / "prefect.yaml").read_text().lower()
    for word in ("password", "token", "secret", "webhook_url", "https://"):
        assert word not in text


def _templated(deployment: dict) -> list[dict]:
    return [t["parameters"] for t in deployment.get("triggers", []) if "parameters" in t]


@pytest.mark.parametrize("name", sorted(n for n, d in DEPLOYMENTS.items() if _templated(d)))
def test_trigger_parameters_render_with_prefects_own_templating(name: str) -> None:
    """The server renders trigger parameters when an automation fires; a template that fails
    there (e.g. a UUID through `tojson`) creates no run at all, silently. Render each one
    the way the server's run-deployment action does, against a real event."""
    import copy
    from uuid import uuid4

    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.types._datetime import now
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    payload = {"reason": "2 of 7 features drifted", "metric": "drifted_feature_share", "value": 0.4, "threshold": 0.25, "version": "3"}
    event = ReceivedEvent(
        occurred=now("UTC"), event="evergreen.drift.detected", resource={"prefect.resource.id": "evergreen.model.car-loan"},
        payload=payload, id=uuid4(),
    )
    for parameters in _templated(DEPLOYMENTS[name]):
        params = copy.deepcopy(parameters)
        RunDeployment._upgrade_v1_templates(params)
        rendered = hydrate(params, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event}))
        for key, value in rendered.items():
            assert not type(value).__name__.startswith(("Invalid", "Hydration")), f"{name}: parameter {key!r} failed to render: {value}"
        if "event_id" in rendered:
            assert rendered["event_id"] == str(event.id)
        for key in ("reason", "metric", "version"):
            if key in parameters and "{{" in str(parameters[key]):
                assert rendered[key] == payload[key]
