"""`serve_project` outlives a Prefect API outage: when Prefect's runner gives up (three
failed polls in a row raise "Service exceeded error threshold"), it waits for the API and
serves again; any other failure, with the API up, is raised. The runner is replaced by a
recorder here (the e2e module restarts a real server under a real `serve-flows`)."""

from __future__ import annotations

import pytest

import flows.deployments as deployments


class _Runner:
    starts: list[str] = []
    outcomes: list[BaseException | None] = []

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        self.flows: list[str] = []

    def add_flow(self, flow, **kwargs) -> None:  # noqa: ANN001, ANN003
        self.flows.append(kwargs["name"])

    async def start(self) -> None:
        _Runner.starts.append(",".join(self.flows))
        outcome = _Runner.outcomes.pop(0)
        if outcome is not None:
            raise outcome


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> type[_Runner]:
    import prefect.runner

    _Runner.starts, _Runner.outcomes = [], []
    monkeypatch.setenv("EVERGREEN_RUN_START", "spawn")  # no fork server in the test process
    monkeypatch.setattr(prefect.runner, "Runner", _Runner)
    monkeypatch.setattr(deployments, "deployment_arguments", lambda *a, **k: [(type("F", (), {"name": "monitor"})(), {"name": "monitor"})])
    return _Runner


def test_serves_again_once_the_api_is_back(runner: type[_Runner], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    health = [ConnectionError("refused"), ConnectionError("refused"), ConnectionError("refused"), None]
    monkeypatch.setattr(deployments, "_api_error", lambda: health.pop(0))
    monkeypatch.setattr("time.sleep", lambda s: None)
    runner.outcomes = [RuntimeError("Service exceeded error threshold."), None]

    deployments.serve_project()

    assert runner.starts == ["monitor", "monitor"]  # a new runner with the same deployments
    assert health == []  # polled until it answered
    out = capsys.readouterr().out
    assert "Prefect API is unreachable" in out and "answers again" in out


def test_other_failures_with_the_api_up_are_raised(runner: type[_Runner], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployments, "_api_error", lambda: None)
    runner.outcomes = [ValueError("a bug")]
    with pytest.raises(ValueError, match="a bug"):
        deployments.serve_project()
    assert runner.starts == ["monitor"]
