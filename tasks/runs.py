"""Flow runs named and tagged by model, so the Prefect UI filters by model: names such as
`retrain/car-loan/event` or `monitor/car-loan/2019-01-13` (each flow's `flow_run_name`,
resolved by Prefect from the run's parameters when it starts), tags `evergreen` and
`model:car-loan` (added by the flow itself once its config is resolved: an automation's
run-deployment action cannot tag the run it creates)."""

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


def _name(flow: str, *detail: str | None) -> str:
    label = model_label(_parameters().get("config")) or "no-model"
    return "/".join([flow, label, *(d for d in detail if d)])


# Module-level functions (not closures): a served flow is pickled into its run's process.


def monitor_run_name() -> str:
    batch = _parameters().get("batch")
    return _name("monitor", Path(str(batch)).stem if batch else "pending")


def retrain_run_name() -> str:
    return _name("retrain", _parameters().get("trigger") or "manual")


def promote_run_name() -> str:
    version = _parameters().get("version")
    return _name("promote", f"v{version}" if version else "challenger")


def canary_review_run_name() -> str:
    return _name("canary-review")


def rollback_run_name() -> str:
    to = _parameters().get("to_version")
    return _name("rollback", f"to-v{to}" if to else "previous")


def bootstrap_run_name() -> str:
    return _name("bootstrap")


def fan_out_run_name() -> str:
    """`monitor-all/every-model` (or `.../<model>` when pinned to one)."""
    params = _parameters()
    flow = str(params.get("deployment") or "fan-out").split("/")[0]
    return f"{flow}-all/{model_label(params.get('config')) or 'every-model'}"


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
