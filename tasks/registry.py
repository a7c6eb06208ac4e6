"""The registry lock (a Prefect global concurrency limit per model) and who acts: the
Prefect side of the loop steps' registry writes."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.runtime import deployment, flow_run

from evergreen.config import ModelConfig


def lock_name(config: ModelConfig) -> str:
    return f"evergreen-registry-{config.name}"


# The shortest lease the Prefect server accepts. The holder renews it while it holds the lock;
# a holder that is killed (SIGKILL, lost machine) blocks the next registry write for at most
# this long plus the server's repossessor interval, not for Prefect's default of 300 s.
LOCK_LEASE_SECONDS = 60.0


@contextmanager
def prefect_lock(config: ModelConfig, timeout_seconds: float = 600) -> Iterator[None]:
    """Serialize registry writes of one model with a Prefect global concurrency limit of 1
    (MLflow alias writes are last-writer-wins), created on first use."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    name = lock_name(config)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except Exception:  # missing: create it (a concurrent creator wins harmlessly)
            try:
                client.upsert_global_concurrency_limit_by_name(name, limit=1)
            except Exception:
                client.read_global_concurrency_limit_by_name(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, lease_duration=LOCK_LEASE_SECONDS, strict=True):
        yield


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
