"""`tracking.connect` with a username and password: MLflow's requests carry them as a
basic-auth header, and the password is in neither the process environment nor the URI."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import threading
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from evergreen.adapters import tracking
from evergreen.config import MlflowConfig

PASSWORD = "s3cr3t-evergreen-test-password"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every MLflow REST call with an empty JSON message and records its headers."""

    seen: list[tuple[str, str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:  # no request lines on stderr
        pass


@pytest.fixture
def stub_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def mlflow_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No credentials from the environment, no retries; MLflow's URIs and the header put back."""
    import mlflow

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracking_uri, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield
    finally:
        tracking._AUTH.header = None
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri)


def _config(uri: str, **credentials: object) -> MlflowConfig:
    return MlflowConfig(tracking_uri=uri, model_name="m", **credentials)  # type: ignore[arg-type]


def test_credentials_go_in_a_header_not_the_environment(
    stub_server: str, mlflow_state: None, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow
    from mlflow import MlflowClient

    caplog.set_level(logging.DEBUG)
    uri = tracking.connect(_config(stub_server, username="ops", password=SecretStr(PASSWORD)))

    assert uri == stub_server
    assert not any(PASSWORD in value for value in os.environ.values())
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    assert mlflow.search_experiments() == []  # the fluent API
    assert MlflowClient().search_registered_models() == []  # a client
    assert MlflowClient(uri, uri).search_registered_models() == []  # one given the URI

    expected = "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    assert len(_Recorder.seen) == 3
    assert [auth for _, auth in _Recorder.seen] == [expected] * 3, _Recorder.seen
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(tracking._AUTH)


def test_connecting_without_credentials_sends_none(stub_server: str, mlflow_state: None) -> None:
    from mlflow import MlflowClient

    tracking.connect(_config(stub_server, username="ops", password=SecretStr(PASSWORD)))
    tracking.connect(_config(stub_server))  # e.g. the next model's config, without a login

    assert MlflowClient().search_registered_models() == []
    assert _Recorder.seen and all(auth is None for _, auth in _Recorder.seen), _Recorder.seen
