"""Evergreen's event names (DESIGN.md "Events", a contract): one definition for the flows, the
loop steps, the backtest's replayed automations and the tests."""

from __future__ import annotations

DATA_REJECTED = "evergreen.data.rejected"
DRIFT_DETECTED = "evergreen.drift.detected"
PERFORMANCE_DEGRADED = "evergreen.performance.degraded"
MODEL_REGISTERED = "evergreen.model.registered"
GATE_PASSED = "evergreen.gate.passed"
GATE_FAILED = "evergreen.gate.failed"
CANARY_STARTED = "evergreen.canary.started"
MODEL_PROMOTED = "evergreen.model.promoted"
MODEL_ROLLED_BACK = "evergreen.model.rolled_back"
EPISODE_CLOSED = "evergreen.episode.closed"
RETRAIN_REQUESTED = "evergreen.retrain.requested"

ALERT_EVENTS = (DRIFT_DETECTED, PERFORMANCE_DEGRADED)


def resource_id(model: str) -> str:
    """The events' resource: `evergreen.model.<model name>`."""
    return f"evergreen.model.{model}"
