"""`serve_project` outlives a Prefect API outage: when Prefect's runner gives up (three
failed polls in a row raise "Service exceeded error threshold"), it waits for the API and
serves again; any other failure, with the API up, is raised. The runner is replaced by a
recorder here (the e2e module restarts a real server under a real `serve-flows`)."""

from __future__ import annotations

import threading

import pytest

import flows.deployments as deployments


class _Runner:
    starts: list[str] = []
    outcomes: list[BaseException | None] = []
    webservers: list[bool] = []  # whether each start would have started its own webserver
    instances: list[_Runner] = []
    apply_errors: list[BaseException] = []  # raised by add_flow (applying a deployment), in order

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        self.flows: list[str] = []

    def add_flow(self, flow, **kwargs) -> None:  # noqa: ANN001, ANN003
        if _Runner.apply_errors:
            raise _Runner.apply_errors.pop(0)
        self.flows.append(kwargs["name"])

    async def start(self, webserver: bool | None = None) -> None:
        from prefect.settings import PREFECT_RUNNER_SERVER_ENABLE

        _Runner.starts.append(",".join(self.flows))
        _Runner.webservers.append(bool(webserver or PREFECT_RUNNER_SERVER_ENABLE.value()))
        _Runner.instances.append(self)
        outcome = _Runner.outcomes.pop(0)
        if outcome is not None:
            raise outcome


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> type[_Runner]:
    import prefect.runner

    _Runner.starts, _Runner.outcomes, _Runner.webservers, _Runner.instances = [], [], [], []
    _Runner.apply_errors = []
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


def test_one_runner_webserver_follows_the_runner_that_serves_now(runner: type[_Runner], monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's Runner starts its webserver in a thread that outlives it: serving again must
    not start a second one (the port is taken) nor leave /health asking the abandoned runner."""
    import prefect.runner.server
    from prefect.settings import PREFECT_RUNNER_SERVER_ENABLE, temporary_settings

    servers: list[object] = []
    started = threading.Event()  # the webserver runs in a thread: wait for it, don't race it

    def start_webserver(runner: object) -> None:
        servers.append(runner)
        started.set()

    monkeypatch.setattr(prefect.runner.server, "start_webserver", start_webserver)
    health = [ConnectionError("refused"), None]
    monkeypatch.setattr(deployments, "_api_error", lambda: health.pop(0))
    monkeypatch.setattr("time.sleep", lambda s: None)
    runner.outcomes = [RuntimeError("Service exceeded error threshold."), None]

    with temporary_settings({PREFECT_RUNNER_SERVER_ENABLE: True}):
        deployments.serve_project()

    assert started.wait(10), "the runner webserver was never started"
    first, second = runner.instances
    assert len(servers) == 1 and runner.webservers == [False, False]
    (server_view,) = servers
    assert server_view.flows is second.flows and server_view.runner is second  # /health reads the new runner
    assert first is not second


def test_no_runner_webserver_unless_asked(runner: type[_Runner], monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.runner.server
    from prefect.settings import PREFECT_RUNNER_SERVER_ENABLE, temporary_settings

    servers: list[object] = []
    monkeypatch.setattr(prefect.runner.server, "start_webserver", lambda runner: servers.append(runner))
    runner.outcomes = [None]
    with temporary_settings({PREFECT_RUNNER_SERVER_ENABLE: False}):
        deployments.serve_project()
    assert servers == [] and runner.webservers == [False]


def test_api_down_while_applying_deployments_waits_and_serves(runner: type[_Runner], monkeypatch: pytest.MonkeyPatch) -> None:
    health = [ConnectionError("refused"), None]
    monkeypatch.setattr(deployments, "_api_error", lambda: health.pop(0))
    monkeypatch.setattr("time.sleep", lambda s: None)
    runner.apply_errors = [ConnectionError("All connection attempts failed")]
    runner.outcomes = [None]

    deployments.serve_project()

    assert runner.starts == ["monitor"] and health == []
