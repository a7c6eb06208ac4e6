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
from tasks.registry import current_actor, model_flight
from tasks.runner import PREFECT, outcome_state
from tasks.runs import promote_run_name, rename_run, tag_run
from tasks.status import explain_run, outcome_page
from tasks.wiring import production_ports


@flow(name="promote", flow_run_name=promote_run_name, log_prints=True)
def promote(config: str | ModelConfig | None = None, version: str | None = None) -> State:
    """Gate the `challenger` (or the registered `version` the event names) against `champion`
    (one promote per model at a time)."""
    disable_telemetry()
    cfg = resolve_config(config)
    tag_run(cfg)
    ports = production_ports(cfg)
    with model_flight("promote", cfg, wait=True):
        outcome = step.promote(ports, cfg, version, run=PREFECT, actor=current_actor())
    rename_run("promote", outcome.result)
    explain_run(cfg, ports, outcome.message, outcome_page("gate", outcome))
    return outcome_state(outcome)
