"""Per-model concurrency (Prefect global concurrency limits keyed by model) and who acts:
the registry lock around the loop steps' registry writes, and each flow's single flight per
model, so one model's runs never block, cancel or delay another's."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from prefect.runtime import deployment, flow_run

from blocks.model_config import block_document_name
from evergreen.config import ModelConfig
from tasks.runs import model_tag

# The flows that run one at a time per model (each its own limit `evergreen-<flow>-<model>`).
FLIGHT_FLOWS = ("monitor", "retrain", "promote", "canary-review", "rollback")


def lock_name(config: ModelConfig) -> str:
    return registry_lock_name(config.name)


def registry_lock_name(model: str) -> str:
    return f"evergreen-registry-{model}"


def flight_name(flow: str, model: str) -> str:
    """The global concurrency limit that lets one `flow` run at a time for `model`."""
    return f"evergreen-{flow}-{model}"


def model_limit_names(model: str) -> list[str]:
    """Every per-model limit of `model` (its config's `name`): what `evergreen register`
    creates and `evergreen unregister` removes."""
    return [registry_lock_name(model), *(flight_name(f, model) for f in FLIGHT_FLOWS)]


def ensure_limits(names: list[str]) -> list[str]:
    """Create the global concurrency limits (limit 1) that do not exist yet; returns those
    created. A concurrent creator wins harmlessly."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_global_concurrency_limit_by_name(name)
                continue
            except ObjectNotFound:
                pass
            try:
                client.upsert_global_concurrency_limit_by_name(name, limit=1)
                created.append(name)
            except Exception:  # created meanwhile by another run: it must be readable now
                client.read_global_concurrency_limit_by_name(name)
    return created


# The shortest lease the Prefect server accepts. The holder renews it while it holds the lock;
# a holder that is killed (SIGKILL, lost machine) blocks the next registry write for at most
# this long plus the server's repossessor interval, not for Prefect's default of 300 s.
LOCK_LEASE_SECONDS = 60.0
# How long a run waits for a slot that no running run holds (a dead holder's lease lapsing:
# the lease, then up to two of the repossessor's 15-s loops, with room for a loaded server).
DEAD_HOLDER_WAIT_SECONDS = LOCK_LEASE_SECONDS + 60.0


# A slot request the server could not answer (its database busy under a burst of runs: Prefect
# answers 503, "retry"; or a proxy's 502/504) is asked again, this many times in all, waiting
# 1, 2, 4, 8 s between: a busy moment must not fail the run that asked.
ACQUIRE_ATTEMPTS = 5
TRANSIENT_STATUSES = (502, 503, 504)


def acquire_slot(stack: ExitStack, make_slot: Callable[[], Any], name: str) -> None:
    """Enter `make_slot()` (a Prefect `concurrency` context) on `stack`, asking again when
    the server answered a transient error (`TRANSIENT_STATUSES`); any other failure, and the
    last attempt's, is raised (423 Locked: the slot is taken, for the caller to handle)."""
    import logging
    import time

    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError  # not re-exported

    for attempt in range(ACQUIRE_ATTEMPTS):
        try:
            stack.enter_context(make_slot())
            return
        except ConcurrencySlotAcquisitionError as exc:
            if slot_error_status(exc) not in TRANSIENT_STATUSES or attempt == ACQUIRE_ATTEMPTS - 1:
                raise
            wait = 2.0**attempt
            logging.getLogger("evergreen.tasks.registry").warning(
                "the Prefect server could not hand out a slot of %s (%s); asking again in %.0f s", name, exc, wait
            )
            time.sleep(wait)


def slot_error_status(exc: BaseException) -> int | None:
    """The HTTP status behind a failed slot request (423: taken), None when there was none."""
    return getattr(getattr(exc.__cause__, "response", None), "status_code", None)


@contextmanager
def prefect_lock(config: ModelConfig, timeout_seconds: float = 600) -> Iterator[None]:
    """Serialize registry writes of one model with a Prefect global concurrency limit of 1
    (MLflow alias writes are last-writer-wins), created on first use."""
    from prefect.concurrency.sync import concurrency

    name = lock_name(config)
    ensure_limits([name])
    with ExitStack() as stack:
        acquire_slot(
            stack,
            lambda: concurrency(
                name, occupy=1, timeout_seconds=timeout_seconds, lease_duration=LOCK_LEASE_SECONDS, strict=True
            ),
            name,
        )
        yield


@dataclass(frozen=True)
class Flight:
    """Whether this run holds its model's slot for its flow; `reason` says who does when not."""

    held: bool
    reason: str | None = None


@contextmanager
def model_flight(flow: str, config: ModelConfig, wait: bool) -> Iterator[Flight]:
    """Hold the slot of `flow` for this model (`evergreen-<flow>-<model>`, limit 1, created on
    first use) for the block: another model's runs have their own slot, so they never wait on
    this one. With `wait`, queue for it (as a deployment limit would queue the run, but per
    model); without, yield `Flight(held=False, reason=...)` at once when another running run
    of the same model holds it: "another retrain of car-loan is running (flow run <id>)". A
    slot no running run holds belongs to a dead run (a killed worker): its lease lapses, and
    this run waits for it (up to `DEAD_HOLDER_WAIT_SECONDS`) instead of skipping.

    The slot is leased: a holder that dies frees it within `LOCK_LEASE_SECONDS` plus the
    server's repossessor interval. A failed lease renewal (an API blip) does not stop the run
    holding it; the registry lock still serializes its registry writes."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError  # not re-exported
    from prefect.concurrency.sync import concurrency

    name = flight_name(flow, config.name)
    ensure_limits([name])
    run_id = flow_run.id
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None

    def slot(timeout_seconds: float | None, max_retries: int | None):  # noqa: ANN202 - Prefect's context manager
        return concurrency(
            name, occupy=1, timeout_seconds=timeout_seconds, max_retries=max_retries,
            lease_duration=LOCK_LEASE_SECONDS, strict=True, holder=holder, raise_on_lease_renewal_failure=False,
        )

    with ExitStack() as stack:
        try:
            acquire_slot(stack, lambda: slot(None, None if wait else 0), name)
            flight = Flight(held=True)
        except ConcurrencySlotAcquisitionError as exc:
            if wait or slot_error_status(exc) != 423:
                raise
            other = running_flow_run(flow, model_tag(block_document_name(config.name)), exclude=run_id)
            if other is not None:
                flight = Flight(held=False, reason=f"another {flow} of {config.name} is running (flow run {other})")
            else:
                # No running run holds the slot: its holder died (a killed worker; the zombie
                # automation crashed it) and its lease lapses within LOCK_LEASE_SECONDS plus
                # the repossessor's loop. Wait for it rather than skip the work: this run is
                # often the crashed run's own rerun.
                acquire_slot(stack, lambda: slot(DEAD_HOLDER_WAIT_SECONDS, None), name)
                flight = Flight(held=True)
        yield flight


def running_flow_run(flow: str, tag: str, exclude: str | None = None) -> str | None:
    """The id of a Running flow run of `flow` with `tag` (other than `exclude`), if any."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[tag]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
            ),
            limit=5,
        )
    return next((str(r.id) for r in runs if str(r.id) != str(exclude)), None)


class PrefectLock:
    """The registry lock users run (`evergreen.adapters.ports.Lock`)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def __call__(self):  # noqa: ANN204
        return prefect_lock(self.config)


def actor() -> str:
    """Who moves aliases: the flow run (and deployment) doing it."""
    name = flow_run.get_flow_name() or "evergreen"
    dep = deployment_name()
    return f"{name}/{dep}" if dep else f"{name} (manual run)"


def deployment_name() -> str | None:
    """The name of the current flow run's deployment; None for a run started without one.

    `prefect.runtime.deployment.get_name` reads the flow run back from the API on every
    call, deployment or not (~80 ms each here, ~0.3 s the first time): the run context
    already holds its deployment id, and a deployment's name is read once per process."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return deployment.get_name()  # outside a flow run: Prefect's own lookup
    dep_id = ctx.flow_run.deployment_id
    return _deployment_name(str(dep_id)) if dep_id else None


@functools.cache
def _deployment_name(deployment_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment(deployment_id).name


def current_flow_run_id() -> str | None:
    return str(flow_run.id) if flow_run.id else None


def current_actor():  # noqa: ANN201
    """The loop steps' `Actor` for the current flow run."""
    from evergreen.loop.common import Actor

    return Actor(actor(), current_flow_run_id())
