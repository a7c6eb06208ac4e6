"""The `retrain` flow: may it start -> versioned window -> validate -> XGBoost -> evaluate ->
MLflow registry (`evergreen.loop.retrain.retrain`, each part a Prefect task)."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from blocks.model_config import resolve_config
from evergreen.config import ModelConfig
from evergreen.lineage import Trigger
from evergreen.loop import retrain as step
from evergreen.loop.status import retrain_markdown
from evergreen.reports import RetrainResult
from evergreen.telemetry import disable_telemetry
from tasks.registry import current_actor, deployment_name, model_flight
from tasks.runner import PREFECT
from tasks.runs import rename_run, retrain_run_name, tag_run
from tasks.status import explain_run
from tasks.wiring import production_ports


@flow(name="retrain", flow_run_name=retrain_run_name, log_prints=True)
def retrain(
    config: str | ModelConfig | None = None,
    trigger: str | None = None,
    event_id: str | None = None,
    reason: str | None = None,
    metric: str | None = None,
) -> State:
    """Train a candidate on the current window and register it as `challenger`.

    `trigger` is schedule / event / manual; the drift automation passes the triggering
    event's id, reason and metric, which are recorded on the run and the version.

    Single flight per model: while another retrain of the same model runs, an event or
    schedule retrain ends `Skipped` at once, saying which run holds it (a burst of drift
    events trains once); a manual one waits for its turn. Other models' retrains are never
    held."""
    disable_telemetry()
    cfg = resolve_config(config)
    tag_run(cfg)
    why = Trigger.of(trigger, event_id, reason, metric)
    ports = production_ports(cfg)
    with model_flight("retrain", cfg, wait=why.kind == "manual") as flight:
        if not flight.held:
            result = in_flight(cfg, why, flight.reason or "another retrain is running")
        else:
            lineage = {
                "evergreen.prefect.flow_run_id": str(flow_run.id or ""),
                "evergreen.prefect.deployment": deployment_name() or "",
            }
            result = step.retrain(ports, cfg, why, run=PREFECT, actor=current_actor(), lineage=lineage)
    rename_run("retrain", result)  # `retrain · <model> · v3`, or what it did instead
    final = retrain_state(result)
    explain_run(cfg, ports, final.message or final.name, ("retrain", retrain_markdown(result)))
    return final


def in_flight(config: ModelConfig, trigger: Trigger, reason: str) -> RetrainResult:
    """The result of a retrain that did not start because another of its model runs."""
    return RetrainResult(
        model_name=config.mlflow.model_name, status="skipped", blocked_by="in_flight",
        message=f"in_flight: {reason}", trigger=trigger.__dict__,
    )


def retrain_state(result: RetrainResult) -> State:
    """The run's final state: `Skipped` (which blocker held it), `TrainingDataRejected`
    (Failed) or Completed with the registered version."""
    if result.status == "skipped":
        return Completed(name="Skipped", message=f"retrain skipped: {result.message}", data=result)
    if result.status == "rejected":
        return Failed(name="TrainingDataRejected", message=result.message, data=result)
    return Completed(message=result.message, data=result)
