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


def test_automations_match_the_model_and_its_runs_tag() -> None:
    """Both automations are the model's own: its events, and the failed runs tagged with it
    (every per-model flow tags its run `model:<block name>`), so each model's webhook hears
    of its model only and `evergreen unregister` removes them with it."""
    from uuid import uuid4

    on_model, on_failed = _automations("Car_Loan", uuid4())
    assert [on_model.name, on_failed.name] == automation_names("Car_Loan")
    assert on_model.trigger.match.model_dump() == {"prefect.resource.id": "evergreen.model.Car_Loan"}
    assert on_model.trigger.expect == {"evergreen.model.promoted", "evergreen.model.rolled_back"}
    assert "prefect.flow-run.GateFailed" in on_failed.trigger.expect
    assert on_failed.trigger.match_related.model_dump() == {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.model:car-loan"}
    assert all(a.type == "call-webhook" for a in on_model.actions + on_failed.actions)
    assert len(set(automation_names("a")) | set(automation_names("b"))) == 4, "no automation is shared by two models"
