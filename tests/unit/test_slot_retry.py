"""A slot request the Prefect server could not answer (503 under a burst of runs: its
database busy) is asked again; a taken slot (423) and other errors are not retried."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import httpx
import pytest
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

from tasks import registry


def _refused(status: int) -> ConcurrencySlotAcquisitionError:
    request = httpx.Request("POST", "http://127.0.0.1/api/v2/concurrency_limits/increment-with-lease")
    cause = httpx.HTTPStatusError("refused", request=request, response=httpx.Response(status, request=request))
    try:
        raise ConcurrencySlotAcquisitionError(f"Unable to acquire concurrency slots: {status}") from cause
    except ConcurrencySlotAcquisitionError as exc:
        return exc


class Server:
    """Answers each slot request with the next status of `answers` (200: granted)."""

    def __init__(self, *answers: int) -> None:
        self.answers, self.asked, self.held = list(answers), 0, 0

    @contextmanager
    def slot(self):  # noqa: ANN201
        self.asked += 1
        status = self.answers.pop(0)
        if status != 200:
            raise _refused(status)
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    return slept


def test_a_busy_server_is_asked_again_until_it_grants_the_slot(waits: list[float]) -> None:
    server = Server(503, 503, 200)
    with ExitStack() as stack:
        registry.acquire_slot(stack, server.slot, "evergreen-retrain-m")
        assert server.held == 1
    assert server.held == 0 and server.asked == 3 and waits == [1.0, 2.0]


def test_a_taken_slot_and_other_errors_are_not_retried(waits: list[float]) -> None:
    for status in (423, 400, 500):
        server = Server(status)
        with pytest.raises(ConcurrencySlotAcquisitionError) as raised, ExitStack() as stack:
            registry.acquire_slot(stack, server.slot, "evergreen-retrain-m")
        assert registry.slot_error_status(raised.value) == status and server.asked == 1
    assert waits == []


def test_a_server_busy_for_every_attempt_fails_the_request(waits: list[float]) -> None:
    server = Server(*[503] * registry.ACQUIRE_ATTEMPTS)
    with pytest.raises(ConcurrencySlotAcquisitionError), ExitStack() as stack:
        registry.acquire_slot(stack, server.slot, "evergreen-retrain-m")
    assert server.asked == registry.ACQUIRE_ATTEMPTS and waits == [1.0, 2.0, 4.0, 8.0]
