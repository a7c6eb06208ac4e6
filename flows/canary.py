"""The `canary-review` flow: canary vs champion on the traffic each served; promote, roll
back, or wait for more evidence (`evergreen.loop.promote.review_canary`)."""

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
from tasks.runs import canary_review_run_name, rename_run, tag_run
from tasks.status import explain_run, outcome_page
from tasks.wiring import production_ports


@flow(name="canary-review", flow_run_name=canary_review_run_name, log_prints=True)
def canary_review(config: str | ModelConfig | None = None) -> State:
    """Review the model's canary (one review per model at a time)."""
    disable_telemetry()
    cfg = resolve_config(config)
    tag_run(cfg)
    ports = production_ports(cfg)
    with model_flight("canary-review", cfg, wait=True):
        outcome = step.review_canary(ports, cfg, run=PREFECT, actor=current_actor())
    rename_run("canary-review", outcome.result)
    explain_run(cfg, ports, outcome.message, outcome_page("canary-review", outcome))
    return outcome_state(outcome)
