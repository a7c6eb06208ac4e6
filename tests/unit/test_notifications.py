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


def test_automations_match_the_model_and_the_evergreen_tag() -> None:
    from uuid import uuid4

    on_model, on_failed = _automations("car-loan", uuid4())
    assert [on_model.name, on_failed.name] == automation_names("car-loan")
    assert on_model.trigger.match.model_dump() == {"prefect.resource.id": "evergreen.model.car-loan"}
    assert on_model.trigger.expect == {"evergreen.model.promoted", "evergreen.model.rolled_back"}
    assert "prefect.flow-run.GateFailed" in on_failed.trigger.expect
    assert on_failed.trigger.match_related.model_dump() == {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.evergreen"}
    assert all(a.type == "call-webhook" for a in on_model.actions + on_failed.actions)
