"""Retries apply to transient failures of port calls only (tasks/runner.py with
evergreen/errors.py): a missing file, a bad config or bad data fail at once, a refused
connection is tried again; a computation is never retried. Real Prefect tasks on the
session's test-harness server."""

from __future__ import annotations

import pytest

from evergreen.adapters.io import DataReadError
from evergreen.config import ConfigError

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _calls_of(error: BaseException, io: bool) -> tuple[int, object]:
    """How many times a part raising `error` ran inside a flow, and the flow's final state."""
    from prefect import flow

    from tasks.runner import PREFECT

    calls: list[int] = []

    def read_something() -> None:
        calls.append(1)
        raise error

    @flow(name="retry-probe")
    def probe() -> None:
        PREFECT.part("read-something", read_something, io=io)

    state = probe(return_state=True)
    return len(calls), state


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError("monitor reference /x/monitor_reference.parquet not found"),
        ConfigError("invalid Evergreen config: columns.target: Field required"),
        DataReadError("batch /x/2019-01-01.parquet is not a Parquet file"),
        PermissionError("/x/labels is not readable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_deterministic_port_failure_runs_once(error: BaseException) -> None:
    calls, state = _calls_of(error, io=True)
    assert calls == 1
    assert state.is_failed() and isinstance(state.result(raise_on_failure=False), type(error))


@pytest.mark.slow
def test_a_transient_port_failure_is_tried_three_times() -> None:
    calls, state = _calls_of(ConnectionRefusedError("object store refused the connection"), io=True)
    assert calls == 3  # the first try and two retries, 1 s apart
    assert state.is_failed()


def test_a_computation_is_never_retried() -> None:
    calls, _ = _calls_of(ConnectionResetError("reset"), io=False)
    assert calls == 1
