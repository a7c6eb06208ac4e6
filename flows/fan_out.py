"""The `fan-out` flow: a schedule's run for every model. It lists the registered models (the
saved `evergreen-model` blocks) and starts one run of a per-model deployment for each, not
waited for: each is its own flow run, named and tagged by its model, with its own retries,
state, logs and per-model concurrency; one model's failure or slowness touches no other.
prefect.yaml's `monitor-all`, `retrain-all` and `canary-review-all` deployments run it."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from blocks.model_config import model_label
from tasks.fleet import (
    FanOutResult,
    find_unfinished_runs,
    list_registered_models,
    plan_fan_out,
    start_model_run,
)
from tasks.runs import fan_out_run_name


@flow(name="fan-out", flow_run_name=fan_out_run_name, log_prints=True)
def fan_out(deployment: str, parameters: dict[str, Any] | None = None, config: str | None = None) -> State:
    """Start `deployment` (`flow/deployment`, e.g. `monitor/monitor`) with `parameters` once
    per registered model, or for `config` alone (a block name or YAML path). A model whose
    previous run of that deployment has not finished gets none this time."""
    models = [config] if config else list_registered_models()
    flow_name = deployment.split("/")[0]
    plan = plan_fan_out(models, find_unfinished_runs(deployment), flow_name)
    result = FanOutResult(deployment, skipped=plan.skip)
    futures = {m: start_model_run.submit(deployment, m, parameters or {}, str(flow_run.id or "")) for m in plan.start}
    for model, future in futures.items():
        future.wait()
        label = model_label(model) or model
        if future.state.is_completed():
            result.started[label] = future.result()
        else:
            result.failed[label] = str(future.state.message or future.state.name)
    if not models:
        return Completed(message="no registered models (save one with `evergreen register --config FILE`)", data=result)
    if result.failed:
        return Failed(message=result.message, data=result)
    return Completed(message=result.message, data=result)
