"""The `promote` flow: gate the challenger against the champion on the freshest labelled
data; pass -> canary, fail -> rejected (`evergreen.loop.promote.promote`)."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.states import State

from blocks.model_config import resolve_config
from evergreen.config import ModelConfig
from evergreen.loop import promote as step
from evergreen.telemetry import disable_telemetry
from tasks.registry import current_actor
from tasks.runner import PREFECT, outcome_state
from tasks.wiring import production_ports


@flow(name="promote", log_prints=True)
def promote(config: str | ModelConfig = "car-loan", version: str | None = None) -> State:
    """Gate the `challenger` (or the registered `version` the event names) against `champion`."""
    disable_telemetry()
    cfg = resolve_config(config)
    return outcome_state(step.promote(production_ports(cfg), cfg, version, run=PREFECT, actor=current_actor()))
