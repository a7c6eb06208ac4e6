"""The Prefect objects of a model in the fleet, on the test-harness server: what `evergreen
register` creates and `evergreen unregister` removes (both idempotent), the per-model single
flight of the retrain (another model is never held; the same model's second retrain ends
`Skipped` naming the run that holds it) and flow runs named and tagged by model."""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client

from blocks.notifications import LEGACY_AUTOMATIONS, automation_names, webhook_block_name
from evergreen.apps.registration import register_model, unregister_model
from evergreen.config import ModelConfig
from flows.retrain import retrain
from tasks.registry import model_flight, model_limit_names
from tasks.runs import tag_run
from tests.flows.conftest import model_for

HOOK = "http://127.0.0.1:9/evergreen-hook"  # never called: nothing emits the events here


def _with_webhook(cfg: ModelConfig) -> ModelConfig:
    from pydantic import SecretStr

    return cfg.model_copy(update={"notifications": cfg.notifications.model_copy(update={"webhook_url": SecretStr(HOOK)})})


def _objects(model: str) -> dict[str, Any]:
    """The model's objects on the server: block id, limit ids, webhook block id, automation ids."""
    from prefect.exceptions import ObjectNotFound

    def read(fn, *args):  # noqa: ANN001, ANN202
        try:
            return str(fn(*args).id)
        except ObjectNotFound:
            return None

    with get_client(sync_client=True) as client:
        return {
            "block": read(client.read_block_document_by_name, model, "evergreen-model"),
            "limits": {n: read(client.read_global_concurrency_limit_by_name, n) for n in model_limit_names(model)},
            "webhook": read(client.read_block_document_by_name, webhook_block_name(model), "webhook"),
            "automations": {n: sorted(str(a.id) for a in client.read_automations_by_name(n)) for n in automation_names(model)},
        }


def test_register_creates_the_models_objects_and_unregister_removes_them(demo_config: ModelConfig, tmp_path) -> None:  # noqa: ANN001
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    a = _with_webhook(model_for(demo_config, "fleet-reg-a", str(tmp_path / "a")))
    b = _with_webhook(model_for(demo_config, "fleet-reg-b", str(tmp_path / "b")))
    with get_client(sync_client=True) as client:  # the single-model design's global automation
        client.create_automation(AutomationCore(name=LEGACY_AUTOMATIONS[0], trigger=EventTrigger(expect={"x"}, posture=Posture.Reactive, threshold=1), actions=[]))

    first = register_model(a)
    assert first.block == "fleet-reg-a" and set(first.created_limits) == set(model_limit_names("fleet-reg-a"))
    assert first.automations == automation_names("fleet-reg-a") and first.webhook_block == webhook_block_name("fleet-reg-a")
    objects = _objects("fleet-reg-a")
    assert objects["block"] and objects["webhook"] and all(objects["limits"].values())
    assert all(len(ids) == 1 for ids in objects["automations"].values()), objects["automations"]
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(LEGACY_AUTOMATIONS[0]) == []
        (failed,) = client.read_automations_by_name("evergreen fleet-reg-a: flow run failed")
    assert "retrain · fleet-reg-a · *" in failed.trigger.match.model_dump()["prefect.resource.name"]

    again = register_model(a)  # idempotent: the same objects, updated in place
    assert again.created_limits == [] and _objects("fleet-reg-a") == objects
    register_model(b)

    removal = unregister_model("fleet-reg-a")
    assert removal.model == "fleet-reg-a" and removal.registry == a.mlflow.model_name
    assert removal.block == "fleet-reg-a" and set(removal.limits) == set(model_limit_names("fleet-reg-a"))
    assert set(removal.notifications) == {f"webhook/{webhook_block_name('fleet-reg-a')}", *automation_names("fleet-reg-a")}
    gone = _objects("fleet-reg-a")
    assert gone["block"] is None and gone["webhook"] is None
    assert not any(gone["limits"].values()) and not any(gone["automations"].values())
    assert unregister_model("fleet-reg-a").removed == []  # idempotent
    kept = _objects("fleet-reg-b")  # the other model keeps everything
    assert kept["block"] and kept["webhook"] and all(kept["limits"].values()) and all(kept["automations"].values())
    unregister_model("fleet-reg-b")


def _flow_run(state: Any) -> Any:  # noqa: ANN401
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def test_a_second_retrain_of_the_same_model_is_skipped_and_another_model_is_never_held(demo_config: ModelConfig, tmp_path) -> None:  # noqa: ANN001
    """The first retrain holds model A's slot (here: a flow run named `retrain`, tagged with
    A, holding it): A's second retrain ends `Skipped` at once naming that run; model B's slot
    is free all along."""
    a = model_for(demo_config, "fleet-flight-a", str(tmp_path / "a"))
    b = model_for(demo_config, "fleet-flight-b", str(tmp_path / "b"))

    @flow(name="retrain")
    def first_retrain_of_a() -> dict[str, Any]:
        from prefect.runtime import flow_run

        tag_run(a)
        with model_flight("retrain", a, wait=False) as held:
            assert held.held
            with model_flight("retrain", b, wait=False) as other:
                other_held = other.held
            second = retrain(config=a, trigger="event", return_state=True)
        return {"id": str(flow_run.id), "second": second, "other_held": other_held}

    out = first_retrain_of_a()
    second = out["second"]
    assert out["other_held"], "model B's retrain slot was held by model A's retrain"
    assert second.is_completed() and second.name == "Skipped", second
    assert second.message == f"retrain skipped: in_flight: another retrain of fleet-flight-a is running (flow run {out['id']})"
    result = second.result()
    assert result.status == "skipped" and result.blocked_by == "in_flight" and result.trigger["kind"] == "event"
    run = _flow_run(second)
    assert run.name == "retrain · fleet-flight-a · skipped (in flight)"
    assert {"evergreen", "model:fleet-flight-a"} <= set(run.tags)

    with model_flight("retrain", a, wait=False) as free:  # released when the first one ended
        assert free.held


def _retrain_behind_a_held_slot(config: ModelConfig, trigger: str) -> tuple[Any, float]:
    """A retrain of `config` started while its model's retrain slot is held by a holder that
    is not a flow run and lets go after about 3 s: the retrain's state and how long it took
    (it has no data, so it fails once it got the slot)."""
    import threading
    import time

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with model_flight("retrain", config, wait=False) as flight:
            assert flight.held
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(60)
    threading.Timer(3.0, release.set).start()
    began = time.monotonic()
    state = retrain(config=config, trigger=trigger, return_state=True)
    waited = time.monotonic() - began
    holder.join(30)
    return state, waited


def test_a_manual_retrain_waits_for_its_turn(demo_config: ModelConfig, tmp_path) -> None:  # noqa: ANN001
    """A person's `evergreen retrain` is not skipped: it waits until the model's running
    retrain releases its slot (here: a holder that lets go after a few seconds)."""
    a = model_for(demo_config, "fleet-wait-a", str(tmp_path / "a"))
    state, waited = _retrain_behind_a_held_slot(a, "manual")
    assert state.name != "Skipped" and "in_flight" not in (state.message or ""), state
    assert waited >= 2.5, f"the manual retrain did not wait for the running one ({waited:.1f} s)"


def test_a_run_without_a_model_says_which_parameter_to_pass() -> None:
    state = retrain(return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"no model given: pass the flow's `config` parameter"):
        state.result()
    assert _flow_run(state).name == "retrain · no-model · manual"


def test_an_event_retrain_waits_for_a_slot_no_running_run_holds(demo_config: ModelConfig, tmp_path) -> None:  # noqa: ANN001
    """A slot held by no running retrain belongs to a dead run (its worker was killed; the
    zombie automation crashed it; its lease has not lapsed yet): the crashed retrain's rerun,
    an event retrain, waits for the slot instead of ending `Skipped` (here: the holder is not
    a flow run and lets go after a few seconds)."""
    a = model_for(demo_config, "fleet-dead-a", str(tmp_path / "a"))
    state, waited = _retrain_behind_a_held_slot(a, "event")
    assert state.name != "Skipped" and "in_flight" not in (state.message or ""), state
    assert waited >= 2.5, f"the event retrain did not wait for the dead holder's slot ({waited:.1f} s)"
