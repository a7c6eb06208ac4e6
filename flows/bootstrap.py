"""The `bootstrap` flow: a first champion for a model with none, trained on the user's labelled
reference or taken in from the user's own XGBoost model (`evergreen.loop.bootstrap.bootstrap`,
each part a Prefect task). `evergreen bootstrap --config FILE [--model PATH|URI]` runs it."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, State

from blocks.model_config import resolve_config
from evergreen.config import ModelConfig
from evergreen.loop import bootstrap as step
from evergreen.telemetry import disable_telemetry
from tasks.registry import current_actor
from tasks.runner import PREFECT
from tasks.runs import bootstrap_run_name, rename_run, tag_run
from tasks.wiring import production_ports


@flow(name="bootstrap", flow_run_name=bootstrap_run_name, log_prints=True)
def bootstrap(config: str | ModelConfig | None = None, model: str | None = None) -> State:
    """Register the first `champion`: trained on the reference, or `model` (a native XGBoost
    model file or an MLflow model URI) taken in."""
    disable_telemetry()
    cfg = resolve_config(config)
    tag_run(cfg)
    lineage = {"evergreen.prefect.flow_run_id": str(flow_run.id or "")}
    result = step.bootstrap(production_ports(cfg), cfg, model_source=model, run=PREFECT, actor=current_actor(), lineage=lineage)
    rename_run("bootstrap", result)
    if result.status == "skipped":
        return Completed(name="Skipped", message=result.message, data=result)
    return Completed(message=result.message, data=result)
