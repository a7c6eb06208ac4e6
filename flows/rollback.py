"""The `rollback` flow: `champion` back to the previous champion (or a named version)
(`evergreen.loop.promote.rollback`)."""

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
from tasks.runs import rename_run, rollback_run_name, tag_run
from tasks.status import explain_run, outcome_page
from tasks.wiring import production_ports


@flow(name="rollback", flow_run_name=rollback_run_name, log_prints=True)
def rollback(
    config: str | ModelConfig | None = None,
    to_version: str | None = None,
    from_version: str | None = None,
    reason: str = "manual rollback",
    verify: bool = False,
) -> State:
    """Idempotent: with `from_version`, nothing happens once the champion is no longer it.
    With `verify` (the automation sets it), roll back only when the previous champion does
    better than the champion on the freshest labelled rows."""
    disable_telemetry()
    cfg = resolve_config(config)
    tag_run(cfg)
    ports = production_ports(cfg)
    with model_flight("rollback", cfg, wait=True):
        outcome = step.rollback(ports, cfg, to_version, from_version, reason, verify, run=PREFECT, actor=current_actor())
    rename_run("rollback", outcome.result)
    explain_run(cfg, ports, outcome.message, outcome_page("rollback", outcome))
    return outcome_state(outcome)
