"""Flow runs named and tagged by model, so the Prefect UI filters by model: names such as
`retrain/car-loan/event` or `monitor/car-loan/2019-01-13` (each flow's `flow_run_name`,
resolved by Prefect from the run's parameters when it starts), tags `evergreen` and
`model:car-loan` (added by the flow itself once its config is resolved: an automation's
run-deployment action cannot tag the run it creates).

Automations about a model's runs match their *name* (`run_name_patterns`), not the tag: the
Prefect server caches a flow run's related resources (its tags among them) from its first
state change for `PREFECT_SERVER_EVENTS_RELATED_RESOURCE_CACHE_TTL`, so a tag the run adds
when it starts is missing from the state events that follow; the event's resource name is
always the run's current name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blocks.model_config import block_document_name, model_label
from evergreen.config import ModelConfig

TAG = "evergreen"
MODEL_TAG_PREFIX = "model:"


def model_tag(label: str) -> str:
    """The tag of a model's flow runs: `model:<block name>`."""
    return f"{MODEL_TAG_PREFIX}{label}"


def _parameters() -> dict[str, Any]:
    from prefect.runtime import flow_run

    return flow_run.parameters or {}


# The flows whose runs are named `<flow>/<model>[/<detail>]`.
MODEL_FLOWS = ("monitor", "retrain", "promote", "canary-review", "rollback", "bootstrap")


def run_name_patterns(label: str) -> list[str]:
    """Resource-name patterns (Prefect's trailing `*` wildcard) that match the names of the
    model's flow runs and no other model's: `retrain/car-loan`, `retrain/car-loan/*`, ..."""
    return [p for flow in MODEL_FLOWS for p in (f"{flow}/{label}", f"{flow}/{label}/*")]


def run_name(flow: str, parameters: dict[str, Any]) -> str:
    """The name of a run of `flow` with `parameters`: `<flow>/<model>[/<detail>]`, the detail
    being the batch (or `pending`), the trigger, the version, the rollback target."""
    if flow == "fan-out":
        target = str(parameters.get("deployment") or "fan-out").split("/")[0]
        return f"{target}-all/{model_label(parameters.get('config')) or 'every-model'}"
    detail: str | None = None
    if flow == "monitor":
        batch = parameters.get("batch")
        detail = Path(str(batch)).stem if batch else "pending"
    elif flow == "retrain":
        detail = parameters.get("trigger") or "manual"
    elif flow == "promote":
        version = parameters.get("version")
        detail = f"v{version}" if version else "challenger"
    elif flow == "rollback":
        to = parameters.get("to_version")
        detail = f"to-v{to}" if to else "previous"
    label = model_label(parameters.get("config")) or "no-model"
    return "/".join([flow, label, *([detail] if detail else [])])


# The flows' `flow_run_name`s: module-level functions (not closures), since a served flow is
# pickled into its run's process; Prefect calls them with no argument when the run starts.


def monitor_run_name() -> str:
    return run_name("monitor", _parameters())


def retrain_run_name() -> str:
    return run_name("retrain", _parameters())


def promote_run_name() -> str:
    return run_name("promote", _parameters())


def canary_review_run_name() -> str:
    return run_name("canary-review", _parameters())


def rollback_run_name() -> str:
    return run_name("rollback", _parameters())


def bootstrap_run_name() -> str:
    return run_name("bootstrap", _parameters())


def fan_out_run_name() -> str:
    """`monitor-all/every-model` (or `.../<model>` when pinned to one)."""
    return run_name("fan-out", _parameters())


def tag_run(config: ModelConfig) -> None:
    """Add `evergreen` and `model:<block name>` to the current flow run's tags (no-op
    outside a flow run, or when it has them)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    tags = set(ctx.flow_run.tags or [])
    wanted = {TAG, model_tag(block_document_name(config.name))}
    if wanted <= tags:
        return
    from prefect.client.orchestration import get_client

    new = sorted(tags | wanted)
    with get_client(sync_client=True) as client:
        client.update_flow_run(ctx.flow_run.id, tags=new)
    ctx.flow_run.tags = new
