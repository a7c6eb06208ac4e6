"""The loop steps' parts as Prefect tasks (`evergreen.loop.runner.Runner`).

Each part becomes a task named as the step names it; a port call (`io=True`) is retried
twice when its failure is transient (`evergreen.errors.is_transient`: the network, a remote
store or MLflow answering 5xx), never when it is deterministic (a missing or bad file, a wrong
config, data that breaks a rule); a decision or a computation is never retried. The parts'
results are not persisted (they are frames and fitted models, used once inside the run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from evergreen.errors import is_transient

T = TypeVar("T")

_TASKS: dict[tuple[Callable[..., Any], str, bool], Task] = {}


def transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's `retry_condition_fn` signature
    """Retry a failed port call only when its error is transient; an input that is simply
    missing or bad fails the same way every time."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def as_task(name: str, fn: Callable[..., T], io: bool) -> Task:
    """The Prefect task for one part (made once per function, name and kind)."""
    key = (fn, name, io)
    if key not in _TASKS:
        # persist_result=False: a served flow persists its own result (for the CLI that
        # handed it the run), and its tasks would inherit that setting.
        options: dict[str, Any] = {"name": name, "cache_policy": NO_CACHE, "persist_result": False}
        if io:
            options |= {"retries": 2, "retry_delay_seconds": 1, "retry_condition_fn": transient}
        _TASKS[key] = task(fn, **options)
    return _TASKS[key]


class PrefectRunner:
    """Runs a step's parts as Prefect tasks of the current flow run."""

    def part(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False, **kwargs: Any) -> T:
        return as_task(name, fn, io)(*args, **kwargs)

    def submit(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False, **kwargs: Any) -> Any:
        return as_task(name, fn, io).submit(*args, **kwargs)

    def log(self, message: str, *args: Any, level: str = "info") -> None:
        import logging

        from prefect import get_run_logger

        get_run_logger().log(getattr(logging, level.upper()), message, *args)


PREFECT = PrefectRunner()


def outcome_state(outcome: Any) -> Any:
    """A promotion step's `Outcome` as the flow run's final state."""
    from prefect.states import Completed, Failed

    make = Failed if outcome.failed else Completed
    kwargs = {"name": outcome.state} if outcome.state else {}
    return make(message=outcome.message, data=outcome.result, **kwargs)
