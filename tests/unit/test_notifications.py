"""The failed-run notification covers every failed state the flows can end in."""

from __future__ import annotations

import re
from pathlib import Path

from blocks.notifications import FAILED_STATE_NAMES, _automations, automation_names

ROOT = Path(__file__).resolve().parents[2]


def test_every_named_failure_of_the_flows_is_notified() -> None:
    named = set()
    for path in (ROOT / "flows").glob("*.py"):
        named |= set(re.findall(r'Failed\(\s*name="([A-Za-z]+)"', path.read_text(encoding="utf-8")))
    assert named, "no named failed states found in flows/ (pattern changed?)"
    assert named <= set(FAILED_STATE_NAMES), f"add {sorted(named - set(FAILED_STATE_NAMES))} to FAILED_STATE_NAMES"


def test_automations_match_the_model_and_its_runs() -> None:
    """Both automations are the model's own: its events, and its failed runs (named
    `<flow>/<block name>/...` by every per-model flow), so each model's webhook hears of its
    model only and `evergreen unregister` removes them with it."""
    from uuid import uuid4

    from prefect.events.schemas.events import Resource

    on_model, on_failed = _automations("Car_Loan", uuid4())
    assert [on_model.name, on_failed.name] == automation_names("Car_Loan")
    assert on_model.trigger.match.model_dump() == {"prefect.resource.id": "evergreen.model.Car_Loan"}
    assert on_model.trigger.expect == {"evergreen.model.promoted", "evergreen.model.rolled_back"}
    assert "prefect.flow-run.GateFailed" in on_failed.trigger.expect
    def failed_run(name: str) -> Resource:
        return Resource({"prefect.resource.id": "prefect.flow-run.1", "prefect.resource.name": name})

    match = on_failed.trigger.match
    for name in ("retrain · car-loan · event", "retrain · car-loan · data rejected", "monitor · car-loan · 2019-01-13",
                 "canary-review · car-loan · canary", "rollback · car-loan · previous", "bootstrap · car-loan · first champion"):
        assert match.matches(failed_run(name)), name
    for name in ("retrain · car-loan-b · event", "canary-review · car-loan-b · v2", "proud-lemur", "fan-out · every-model · monitor",
                 "retrain/car-loan/event"):
        assert not match.matches(failed_run(name)), name
    assert all(a.type == "call-webhook" for a in on_model.actions + on_failed.actions)
    assert len(set(automation_names("a")) | set(automation_names("b"))) == 4, "no automation is shared by two models"
