"""Which failures are retried (evergreen/errors.py), how the CLI words a failure (one line,
exit 2 for usage and config errors), and what a one-off command passes to a served
deployment as its config (evergreen/apps/runs.py)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from evergreen.adapters.io import DataReadError
from evergreen.apps.cli import app
from evergreen.apps.runs import config_parameter, with_absolute_paths
from evergreen.config import ConfigError, parse_config
from evergreen.decisions.window import WindowError
from evergreen.engines.monitoring import MonitorInputError
from evergreen.errors import describe, http_status, is_transient, one_line

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class _HTTPError(OSError):
    """Like requests.HTTPError: an OSError carrying the response."""

    def __init__(self, status: int) -> None:
        super().__init__(f"{status} error")
        self.response = _Response(status)


class _MlflowLike(Exception):
    """Like mlflow.exceptions.MlflowException: the HTTP status from its error code."""

    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status

    def get_http_status_code(self) -> int:
        return self.status


class TransportError(Exception):
    """Named like httpx's base class of connect/read/timeout errors (not an OSError)."""


class ConnectError(TransportError):
    pass


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("monitor reference /x/monitor_reference.parquet not found"),
        PermissionError("denied"),
        IsADirectoryError("a folder"),
        ConfigError("invalid Evergreen config: columns.target: Field required"),
        DataReadError("batch /x/b.parquet is not a Parquet file"),
        MonitorInputError("column car_value is missing"),
        WindowError("no labelled rows in the window"),
        KeyError("car_value"),
        TypeError("bad call"),
        RuntimeError("model m has no champion to roll back"),
        _HTTPError(404),
        _MlflowLike(400),
        _MlflowLike(404),
    ],
    ids=lambda e: type(e).__name__,
)
def test_deterministic_failures_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset by peer"),
        TimeoutError("timed out"),
        OSError(errno.EIO, "I/O error on the object store"),
        _HTTPError(503),
        _HTTPError(429),
        _MlflowLike(500),
        _MlflowLike(503),
        ConnectError("All connection attempts failed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


def test_a_wrapped_transient_cause_counts() -> None:
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise RuntimeError("registry call failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    assert http_status(_MlflowLike(503)) == 503


def test_real_http_client_errors_are_classified() -> None:
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("GET", "http://127.0.0.1:9/x")
    assert is_transient(httpx.ConnectError("refused", request=request))
    assert is_transient(httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request)))
    assert not is_transient(httpx.HTTPStatusError("404", request=request, response=httpx.Response(404, request=request)))
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        RESOURCE_DOES_NOT_EXIST,
        TEMPORARILY_UNAVAILABLE,
    )

    assert not is_transient(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not is_transient(MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE))
    assert is_transient(MlflowException("try later", error_code=TEMPORARILY_UNAVAILABLE))


def test_messages_become_one_line() -> None:
    assert one_line("invalid Evergreen config:\n  a: x\n  b: y\n") == "invalid Evergreen config: a: x; b: y"
    assert one_line("one\ntwo") == "one; two"
    assert describe(KeyError("car_value")) == "KeyError: 'car_value'"
    assert describe(FileNotFoundError("batch b.parquet not found")) == "batch b.parquet not found"


# ----------------------------------------------------------------------------- the CLI


def _invoke(*args: str):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(app, list(args))


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_missing_batch_file_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "batches" / "2019-01-01.parquet"
    result = _invoke("monitor", "--config", str(DEMO), "--batch", str(missing))
    assert result.exit_code == 2, result.output
    assert _error_lines(result.stderr) == [f"error: Invalid value for --batch: batch file {missing} not found (see `evergreen monitor --help`)"]
    assert "Traceback" not in result.output


def test_missing_config_file_is_one_line_exit_2(tmp_path: Path) -> None:
    result = _invoke("retrain", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "nope.yaml" in line and "--config" in line


def test_bad_config_is_one_line_naming_the_fields_exit_2(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    raw["monitoring"]["drifted_feature_share"] = 1.5
    raw["canary"]["traffic_share"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    for command in (["monitor"], ["promote"], ["rollback", "--reason", "x"]):
        result = _invoke(*command, "--config", str(bad))
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: invalid Evergreen config: ")
        assert "monitoring.drifted_feature_share" in line and "canary.traffic_share" in line


def test_verbose_adds_the_traceback(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    raw["metric"] = "mae"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    quiet = _invoke("monitor", "--config", str(bad))
    loud = _invoke("--verbose", "monitor", "--config", str(bad))
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert _error_lines(loud.stderr) == _error_lines(quiet.stderr) and len(_error_lines(quiet.stderr)) == 1


def test_an_unexpected_error_is_one_line_with_its_type_and_the_verbose_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import evergreen.apps.cli as cli

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("car_value")

    monkeypatch.setattr(cli, "_load", broken)
    result = _invoke("promote", "--config", str(DEMO))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: KeyError: 'car_value' (`evergreen --verbose ...` prints the traceback)"


def test_server_status_without_a_server_says_how_to_start_it(tmp_path: Path) -> None:
    result = _invoke("server", "status", "--dir", str(tmp_path / "server"))
    assert result.exit_code == 1
    assert "evergreen server start" in result.stdout


# ----------------------------------------------------------------------------- the config passed


def _relative_demo(tmp_path: Path, secret: bool = False) -> tuple:
    raw = yaml.safe_load(DEMO.read_text())  # relative data.root, tracking URI and artifact root
    if secret:
        raw["mlflow"]["password"] = "pw"
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(raw))
    return parse_config(raw), path


def test_config_is_passed_as_its_path_when_the_runner_reads_it_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, path = _relative_demo(tmp_path)
    assert config_parameter(cfg, path, overridden=False, runner_cwd=str(tmp_path.resolve())) == (str(path.resolve()), None)
    absolute = with_absolute_paths(cfg)
    assert absolute.data.root == str(tmp_path.resolve() / ".evergreen" / "data")
    assert absolute.mlflow.tracking_uri == f"sqlite:///{tmp_path.resolve() / '.evergreen' / 'mlflow.db'}"
    assert absolute.mlflow.artifact_root == str(tmp_path.resolve() / ".evergreen" / "mlartifacts")
    # A runner working elsewhere, or a command-line override: the config itself, paths absolute.
    for kwargs in ({"overridden": False, "runner_cwd": "/elsewhere"}, {"overridden": True, "runner_cwd": str(tmp_path)}):
        value, why = config_parameter(cfg, path, **kwargs)
        assert why is None and value == absolute.model_dump(mode="json")
        assert parse_config(value) == absolute


def test_a_config_with_secrets_is_never_sent_as_a_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, path = _relative_demo(tmp_path, secret=True)
    value, why = config_parameter(cfg, path, overridden=True, runner_cwd=str(tmp_path))
    assert value is None and "secrets" in why
    # Its path is fine: the runner reads the secret from the file.
    assert config_parameter(cfg, path, overridden=False, runner_cwd=str(tmp_path.resolve()))[0] == str(path.resolve())


def test_every_deployment_flow_is_named_as_its_deployment() -> None:
    from flows.deployments import load_deployment_flow, read_deployment_specs

    # The per-model deployments (a command hands its run to `<name>/<name>`); the schedules'
    # fan-outs (`monitor-all`, ...) share the `fan-out` flow.
    for spec in read_deployment_specs():
        expected = "fan-out" if spec["entrypoint"] == "flows/fan_out.py:fan_out" else spec["name"]
        assert load_deployment_flow(spec["name"]).name == expected
    with pytest.raises(ValueError, match="no deployment named 'nope'"):
        load_deployment_flow("nope")

