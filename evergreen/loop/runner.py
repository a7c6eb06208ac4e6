"""How a loop step runs its parts.

A step (`evergreen.loop.monitor`, `retrain`, `promote`, `review`, `rollback`) is written once,
top to bottom, and runs each of its parts through a `Runner`: `run.part(name, fn, *args)`.
The flows pass Prefect's runner (`tasks.runner.PrefectRunner`: every part a Prefect task
named `name`, retried only when it is a port call, `io=True`); the backtest and the tests
pass `DirectRunner` (plain calls). The step's logic is the same code either way.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class PartFuture(Protocol[T]):  # type: ignore[misc]
    def result(self) -> T: ...


class Runner(Protocol):
    """Runs one part of a step; `io=True` marks a port call (the only kind retried)."""

    def part(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False, **kwargs: Any) -> T: ...

    def submit(
        self, name: str, fn: Callable[..., T], *args: Any, io: bool = False, **kwargs: Any
    ) -> PartFuture[T]:
        """Start a part beside the caller's next ones; `.result()` waits for it."""
        ...

    def log(self, message: str, *args: Any, level: str = "info") -> None:
        """A line in the run's log (the flow run's log under Prefect)."""
        ...


class DirectRunner:
    """Every part a plain call, in this process (submitted parts in a thread)."""

    def __init__(self, logger: Callable[[str], None] | None = None) -> None:
        self._logger = logger
        self._pool: ThreadPoolExecutor | None = None

    def part(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    def submit(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False, **kwargs: Any) -> Future[T]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="evergreen-part")
        return self._pool.submit(fn, *args, **kwargs)

    def log(self, message: str, *args: Any, level: str = "info") -> None:
        if self._logger is not None:
            self._logger(message % args if args else message)


DIRECT = DirectRunner()
