"""The retrain start check: cooldown on the data clock, no retrain during a canary review."""

from __future__ import annotations

import pytest

from evergreen.loop.retraining import decide_retrain_start


def test_manual_retrain_always_goes() -> None:
    start = decide_retrain_start("manual", "2019-01-10", "2019-01-10", 72, canary_version="3")
    assert start.go


@pytest.mark.parametrize("trigger", ["event", "schedule"])
def test_no_retrain_while_a_canary_is_reviewed(trigger: str) -> None:
    start = decide_retrain_start(trigger, "2019-01-20", "2019-01-10", 72, canary_version="3")
    assert not start.go and "canary v3" in start.reason


@pytest.mark.parametrize(
    ("now", "go"),
    [("2019-01-10", False), ("2019-01-12", False), ("2019-01-12T23:00", False), ("2019-01-13", True), ("2019-01-20", True)],
)
def test_event_retrain_waits_for_the_cooldown_on_the_data_clock(now: str, go: bool) -> None:
    start = decide_retrain_start("event", now, "2019-01-10", 72, canary_version=None)
    assert start.go is go
    if not go:
        assert "cooldown" in start.reason and "2019-01-13" in start.reason


def test_schedule_ignores_the_cooldown_and_first_retrain_goes() -> None:
    assert decide_retrain_start("schedule", "2019-01-10", "2019-01-10", 72, None).go
    assert decide_retrain_start("event", "2019-01-10", None, 72, None).go
    assert decide_retrain_start("event", None, "2019-01-10", 72, None).go


def test_zero_cooldown_lets_every_event_retrain() -> None:
    assert decide_retrain_start("event", "2019-01-10", "2019-01-10", 0, None).go
