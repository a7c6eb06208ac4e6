"""The fleet: the models registered on the Prefect server (saved `evergreen-model` blocks) and
the runs a schedule starts for each of them (`flows/fan_out.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.model_config import model_label
from tasks.runner import transient
from tasks.runs import MODEL_TAG_PREFIX, model_tag

MODEL_BLOCK_TYPE = "evergreen-model"
PAGE = 200


@dataclass
class FanOutPlan:
    """Which models get a run now, and why the others do not."""

    start: list[str] = field(default_factory=list)  # `config` values (block names or YAML paths)
    skip: dict[str, str] = field(default_factory=dict)  # model -> why


@dataclass
class FanOutResult:
    """What a fan-out run did: the runs it started (model -> flow run name), the models it
    left out and the starts that failed (model -> why)."""

    deployment: str
    started: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        flow = self.deployment.split("/")[0]
        parts = [f"started {flow} for {len(self.started)} model(s)" + (f": {', '.join(sorted(self.started))}" if self.started else "")]
        if self.skipped:
            parts.append("skipped " + "; ".join(f"{m}: {why}" for m, why in sorted(self.skipped.items())))
        if self.failed:
            parts.append("could not start " + "; ".join(f"{m}: {why}" for m, why in sorted(self.failed.items())))
        return "; ".join(parts)


def plan_fan_out(models: list[str], unfinished: dict[str, str], flow: str) -> FanOutPlan:
    """One run per model, except for a model whose previous run of the deployment has not
    finished (`unfinished`: model label -> that run's id): scheduled runs never pile up."""
    plan = FanOutPlan()
    for model in models:
        label = model_label(model) or model
        if label in unfinished:
            plan.skip[label] = f"its previous {flow} run has not finished (flow run {unfinished[label]})"
        else:
            plan.start.append(model)
    return plan


@task(name="list-registered-models", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=1, retry_condition_fn=transient)
def list_registered_models() -> list[str]:
    """The names of the saved `evergreen-model` blocks, sorted."""
    from prefect.client.orchestration import get_client

    names: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_block_documents_by_type(MODEL_BLOCK_TYPE, offset=len(names), limit=PAGE, include_secrets=False)
            names += [d.name for d in page if d.name and not d.is_anonymous]
            if len(page) < PAGE:
                break
    return sorted(set(names))


@task(name="find-unfinished-runs", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=1, retry_condition_fn=transient)
def find_unfinished_runs(deployment: str) -> dict[str, str]:
    """Model label -> id of a run of `deployment` (flow/deployment name) that is scheduled,
    pending or running (its model read from its `config` parameter, else its `model:` tag)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    found: dict[str, str] = {}
    states = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        offset = 0
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))),
                offset=offset, limit=PAGE,
            )
            for run in runs:
                # by its `config` (a run an automation created is tagged only once it starts)
                label = model_label((run.parameters or {}).get("config"))
                if label is None:
                    label = next((t.removeprefix(MODEL_TAG_PREFIX) for t in run.tags or [] if t.startswith(MODEL_TAG_PREFIX)), None)
                if label is not None:
                    found.setdefault(label, str(run.id))
            if len(runs) < PAGE:
                break
            offset += PAGE
    return found


@task(name="start-model-run", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=1, retry_condition_fn=transient)
def start_model_run(deployment: str, model: str, parameters: dict[str, Any], key: str) -> str:
    """Start a run of `deployment` for `model` (its own flow run, tagged with the model, not
    waited for); returns its name. `key` makes a retried start return the same run."""
    from prefect.deployments import run_deployment

    label = model_label(model) or model
    run = run_deployment(
        deployment, parameters={**parameters, "config": model}, timeout=0, as_subflow=False,
        tags=[model_tag(label)], idempotency_key=f"{key}:{label}",
    )
    return f"{run.name} ({run.id})"
