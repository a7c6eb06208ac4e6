"""Every prefect.yaml deployment points at a real flow that accepts the parameters the
deployment, its schedules and its triggers pass; one set of deployments serves every model:
triggers match any model's events and pass that model on, schedules fan out to every model,
no concurrency limit is global across models."""

from __future__ import annotations

import copy
import importlib
import inspect
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
PER_MODEL = {"monitor", "retrain", "promote", "canary-review", "rollback"}
FAN_OUTS = {"monitor-all", "retrain-all", "canary-review-all"}


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
    assert flow.name == (name if name in PER_MODEL else "fan-out")
    accepted = set(inspect.signature(flow.fn).parameters)
    assert _passed(deployment) <= accepted, _passed(deployment) - accepted
    required = {p.name for p in inspect.signature(flow.fn).parameters.values() if p.default is inspect.Parameter.empty}
    assert required <= set(deployment.get("parameters", {})), f"{name} must pass {required}"


def test_every_flow_has_a_deployment() -> None:
    assert set(DEPLOYMENTS) == PER_MODEL | FAN_OUTS


@pytest.mark.parametrize("name", sorted(PER_MODEL))
def test_per_model_deployments_name_no_model(name: str) -> None:
    """No deployment, schedule or flow default is a specific model: the model comes from the
    event or the fan-out, and a run without one says which parameter to pass."""
    from blocks.model_config import NO_MODEL, resolve_config
    from evergreen.config import ConfigError

    deployment = DEPLOYMENTS[name]
    assert "config" not in deployment.get("parameters", {})
    assert not deployment.get("schedules"), "schedules run the fan-outs, once per model"
    flow = _flow(deployment["entrypoint"])
    assert inspect.signature(flow.fn).parameters["config"].default is None
    with pytest.raises(ConfigError, match="`config` parameter") as raised:
        resolve_config(None)
    assert str(raised.value) == NO_MODEL and "evergreen register" in NO_MODEL


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_no_concurrency_limit_is_global_across_models(name: str) -> None:
    """A deployment's concurrency limit counts every model's runs: one model's retrain would
    cancel or queue another's. Concurrency is per model, in the flows (tasks/registry.py)."""
    assert "concurrency_limit" not in DEPLOYMENTS[name]


def test_fan_outs_start_existing_per_model_deployments_on_the_old_cadences() -> None:
    crons = {}
    for name in FAN_OUTS:
        deployment = DEPLOYMENTS[name]
        target = deployment["parameters"]["deployment"]
        flow, _, dep = target.partition("/")
        assert flow == dep and dep in PER_MODEL, target
        (schedule,) = deployment["schedules"]
        crons[dep] = schedule["cron"]
    assert crons == {"monitor": "0 * * * *", "retrain": "0 3 * * 1", "canary-review": "30 * * * *"}
    assert DEPLOYMENTS["retrain-all"]["parameters"]["parameters"] == {"trigger": "schedule"}
    # The weekly refresh regardless of alerts is there to resume, paused: the default policy
    # retrains on an episode's evidence (zero retrains on a stream without change).
    active = {name: DEPLOYMENTS[name]["schedules"][0].get("active", True) for name in FAN_OUTS}
    assert active == {"monitor-all": True, "retrain-all": False, "canary-review-all": True}


def _triggers() -> list[tuple[str, dict]]:
    return [(name, t) for name, d in DEPLOYMENTS.items() for t in d.get("triggers", [])]


@pytest.mark.parametrize("name,trigger", _triggers(), ids=[n for n, _ in _triggers()])
def test_triggers_match_every_model_and_pass_its_block(name: str, trigger: dict) -> None:
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    from tasks.events import BLOCK_LABEL

    assert trigger["match"] == {"prefect.resource.id": "evergreen.model.*"}
    assert trigger["for_each"] == ["prefect.resource.id"], "each model's events counted apart"
    assert f"event.resource.get('{BLOCK_LABEL}')" in trigger["parameters"]["config"]
    # what `prefect deploy` makes of it
    built = TypeAdapter(DeploymentTriggerTypes).validate_python({**trigger, "name": "x"})
    assert built.for_each == {"prefect.resource.id"}


def test_retrain_is_triggered_by_the_episodes_request_and_passes_the_event() -> None:
    (trigger,) = DEPLOYMENTS["retrain"]["triggers"]
    assert trigger["expect"] == ["evergreen.retrain.requested"]
    assert {"event_id", "reason", "metric", "trigger"} <= set(trigger["parameters"])


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


# ----------------------------------------------------------------- the server's own evaluation


def _event(name: str, model: str, seconds: float = 0.0, block: str | None = "") -> Any:
    from datetime import timedelta

    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.types._datetime import now

    from tasks.events import BLOCK_LABEL

    resource = {"prefect.resource.id": f"evergreen.model.{model}", "evergreen.model": model}
    if block is not None:
        resource[BLOCK_LABEL] = block or model
    payload = {"reason": "2 of 7 features drifted", "metric": "drifted_feature_share", "value": 0.4, "threshold": 0.25, "version": "3"}
    return ReceivedEvent(occurred=now("UTC") + timedelta(seconds=seconds), event=name, resource=resource, payload=payload, id=uuid4())


def _server_trigger(trigger: dict) -> Any:
    """The trigger as the Prefect server evaluates it."""
    from prefect.server.events.schemas.automations import EventTrigger

    fields = {k: v for k, v in trigger.items() if k not in ("parameters", "enabled", "type")}
    return EventTrigger(**{"posture": "Reactive", **fields})


@pytest.mark.parametrize("name,trigger", _triggers(), ids=[n for n, _ in _triggers()])
def test_trigger_covers_any_models_events_and_keys_them_by_model(name: str, trigger: dict) -> None:
    server = _server_trigger(trigger)
    wanted = trigger["expect"][0]
    for model in ("car-loan", "churn", "fraud-v2"):
        event = _event(wanted, model)
        assert server.covers(event), (name, model)
        assert server.bucketing_key(event) == (f"evergreen.model.{model}",)
    other = _event(wanted, "car-loan")
    other.resource.root["prefect.resource.id"] = "prefect.flow-run.123"
    assert not server.covers(other)


def test_rollback_trigger_is_per_model_degradation_after_promotion() -> None:
    """A degradation within a day *after the same model's* promotion: `after` opens the
    window in the bucket of the promoted model (`for_each`), so model A's promotion and model
    B's degradation never combine. Not a `sequence` trigger: Prefect keeps a compound
    trigger's child firings per child trigger, across all resources."""
    (trigger,) = DEPLOYMENTS["rollback"]["triggers"]
    assert trigger["type"] == "event"
    assert trigger["after"] == ["evergreen.model.promoted"] and trigger["expect"] == ["evergreen.performance.degraded"]
    assert trigger["within"] == 86400 and trigger["threshold"] == 1 and trigger["posture"] == "Reactive"
    assert trigger["parameters"]["verify"] is True
    server = _server_trigger(trigger)
    promoted_a, degraded_b = _event("evergreen.model.promoted", "a"), _event("evergreen.performance.degraded", "b")
    assert server.starts_after(promoted_a.event) and server.expects(degraded_b.event)
    assert server.bucketing_key(promoted_a) != server.bucketing_key(degraded_b)


@pytest.mark.parametrize("name", sorted(n for n, d in DEPLOYMENTS.items() if d.get("triggers")))
def test_trigger_parameters_render_with_prefects_own_templating(name: str) -> None:
    """The server renders trigger parameters when an automation fires; a template that fails
    there (e.g. a UUID through `tojson`) creates no run at all, silently. Render each one
    the way the server's run-deployment action does, against a real event of another model
    than the demo's: the run gets that model's block, as a string."""
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    def render(parameters: dict, event: Any) -> dict:  # noqa: ANN401
        params = copy.deepcopy(parameters)
        RunDeployment._upgrade_v1_templates(params)
        rendered = hydrate(params, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event}))
        for key, value in rendered.items():
            assert not type(value).__name__.startswith(("Invalid", "Hydration")), f"{name}: parameter {key!r} failed to render: {value}"
        return rendered

    event = _event("evergreen.drift.detected", "Churn_V2", block="churn-v2")
    for trigger in DEPLOYMENTS[name]["triggers"]:
        parameters = trigger["parameters"]
        rendered = render(parameters, event)
        assert rendered["config"] == "churn-v2"
        # an event sent by hand with the resource id alone: the model name from the id
        assert render(parameters, _event("evergreen.drift.detected", "fraud", block=None))["config"] == "fraud"
        if "event_id" in rendered:
            assert rendered["event_id"] == str(event.id)
        for key in ("reason", "metric", "version"):
            if key in parameters and "{{" in str(parameters[key]):
                assert rendered[key] == event.payload[key]
        if "verify" in parameters:
            assert rendered["verify"] is True  # JSON types kept


def test_a_config_override_pins_every_deployment_to_one_model() -> None:
    """`serve-flows --config X`: every deployment defaults to X, the fan-outs start X alone and
    the triggers match X's events only (and pass X)."""
    from flows.deployments import deployment_arguments

    built = {kwargs["name"]: kwargs for _, kwargs in deployment_arguments(parameters={"config": "churn"}, schedules=False)}
    assert set(built) == set(DEPLOYMENTS)
    for name, kwargs in built.items():
        assert kwargs["parameters"]["config"] == "churn", name
        assert kwargs["schedules"] is None
        for trigger in kwargs["triggers"]:
            assert trigger.match.model_dump() == {"prefect.resource.id": "evergreen.model.*", "evergreen.block": "churn"}
            assert trigger.parameters["config"] == "churn"
    plain = {kwargs["name"]: kwargs for _, kwargs in deployment_arguments(schedules=True)}
    assert all("config" not in kwargs["parameters"] for kwargs in plain.values())
    assert {n for n, k in plain.items() if k["schedules"]} == FAN_OUTS
