"""Flow runs named and tagged by model, so the Prefect UI filters by model: names
`<flow> · <model> · <subject>` such as `monitor · car-loan · 2019-01-13` or
`retrain · car-loan · v3`, tags `evergreen` and `model:car-loan` (added by the flow itself
once its config is resolved: an automation's run-deployment action cannot tag the run it
creates).

A run is named twice: when it starts, from its parameters (each flow's `flow_run_name`:
the batch, the trigger, the version asked for), and when it knows what it did
(`rename_run`, just before it returns its final state: the version a retrain registered,
or `deferred` / `skipped (cooldown)` / `data rejected` when it registered nothing). One
pure function, `run_name`, makes both.

Automations about a model's runs match their *name* (`run_name_patterns`), not the tag: the
Prefect server caches a flow run's related resources (its tags among them) from its first
state change for `PREFECT_SERVER_EVENTS_RELATED_RESOURCE_CACHE_TTL`, so a tag the run adds
when it starts is missing from the state events that follow; the event's resource name is
always the run's current name (a run renames itself before its final state is set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blocks.model_config import block_document_name, model_label
from evergreen.config import ModelConfig
from evergreen.reports import MonitorResult, PromotionResult, RetrainResult

Outcome = RetrainResult | PromotionResult | list[MonitorResult]

TAG = "evergreen"
MODEL_TAG_PREFIX = "model:"
SEP = " · "


def model_tag(label: str) -> str:
    """The tag of a model's flow runs: `model:<block name>`."""
    return f"{MODEL_TAG_PREFIX}{label}"


def _parameters() -> dict[str, Any]:
    from prefect.runtime import flow_run

    return flow_run.parameters or {}


# The flows whose runs are named `<flow> · <model> · <subject>` after one model.
MODEL_FLOWS = ("monitor", "retrain", "promote", "canary-review", "rollback", "bootstrap")


def run_name_patterns(label: str) -> list[str]:
    """Resource-name patterns (Prefect's trailing `*` wildcard) that match the names of the
    model's flow runs and no other model's: `retrain · car-loan · *`, ... (a block name has
    no spaces, so `car-loan` never matches `car-loan-2`'s runs)."""
    return [f"{flow}{SEP}{label}{SEP}*" for flow in MODEL_FLOWS]


def run_name(flow: str, parameters: dict[str, Any], result: Outcome | None = None) -> str:
    """The name of a run of `flow` with `parameters`: `<flow> · <model> · <subject>`.

    Without `result` (the run starts) the subject comes from the parameters: the batch (or
    `pending`: every batch not monitored yet), the trigger, the version to gate (or
    `challenger`), `canary`, the rollback target (or `previous`). With the run's result it
    says what the run did: the batches a `pending` monitor went through (`2019-01-11 to
    2019-01-13`, or `nothing new`), the version a retrain or bootstrap registered (`v3`), `deferred`,
    `skipped (<blocker>)` or `data rejected` when it registered none; the version a promote
    gated or a canary review judged; the champion a rollback restored (`to v2`) or
    `unchanged`. A fan-out is `fan-out · every-model · <flow it starts>`."""
    if flow == "fan-out":
        target = str(parameters.get("deployment") or "fan-out").split("/")[0]
        return SEP.join(["fan-out", model_label(parameters.get("config")) or "every-model", target])
    label = model_label(parameters.get("config")) or "no-model"
    subject = (_result_subject(flow, result) if result is not None else None) or _start_subject(flow, parameters)
    return SEP.join([flow, label, subject])


def _start_subject(flow: str, parameters: dict[str, Any]) -> str:
    if flow == "monitor":
        batch = parameters.get("batch")
        return Path(str(batch)).stem if batch else "pending"
    if flow == "retrain":
        return str(parameters.get("trigger") or "manual")
    if flow == "promote":
        version = parameters.get("version")
        return f"v{version}" if version else "challenger"
    if flow == "rollback":
        to = parameters.get("to_version")
        return f"to v{to}" if to else "previous"
    if flow == "bootstrap":
        return "import" if parameters.get("model") else "first champion"
    return "canary" if flow == "canary-review" else flow


def _result_subject(flow: str, result: Outcome) -> str | None:
    if isinstance(result, list):
        if flow != "monitor":
            return None
        days = [r.batch_id for r in result]
        return "nothing new" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    if isinstance(result, RetrainResult):
        if flow not in ("retrain", "bootstrap"):
            return None
        if result.status == "registered" and result.version:
            return f"v{result.version}"
        if result.status == "rejected":
            return "data rejected"
        if result.blocked_by == "deferred":
            return "deferred"
        return f"skipped ({result.blocked_by.replace('_', ' ')})" if result.blocked_by else "skipped"
    checks = result.checks or {}
    if flow == "promote":
        version = result.challenger or checks.get("challenger_version")
    elif flow == "canary-review":
        version = checks.get("canary_version") or result.canary
        if not version and result.decision == "skipped":
            return "no canary"
    elif flow == "rollback":
        return f"to v{result.champion}" if result.decision == "rolled_back" and result.champion else "unchanged"
    else:
        return None
    return f"v{version}" if version else result.decision.replace("_", " ")


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
    """`fan-out · every-model · monitor` (or `· <model> ·` when pinned to one)."""
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


def rename_run(flow: str, result: Outcome) -> str | None:
    """Rename the current flow run after what it did (`run_name` with its result) and
    return the name; a no-op outside a flow run. Called before the flow returns its final
    state, so that state's event (and any automation matching the run's name) carries it.
    An API error only logs a warning (the run keeps its start name and its outcome)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    name = run_name(flow, _parameters(), result)
    if name == ctx.flow_run.name:
        return name
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, name=name)
    except Exception as exc:  # noqa: BLE001 - the name is cosmetic: never fail a run that did its work
        from prefect import get_run_logger

        get_run_logger().warning("could not rename this flow run to %r: %s", name, exc)
        return None
    ctx.flow_run.name = name
    return name
