"""Helpers of the fault tests: a real `mlflow server` that can be killed, frozen and restarted,
an HTTP proxy in front of it that stops the server at an exact request, and a reader of the
registry state that works while the server is down (it reads the server's SQLite store).
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from evergreen.adapters import registry
from evergreen.apps.services import (
    executable,
    free_port,
    launch_prefect_server,
    service_env,
    stop,
    wait_http,
)

ALIASES = (registry.CHAMPION, registry.CANARY, registry.CHALLENGER)


# ------------------------------------------------------------------------------ servers


@contextmanager
def prefect_server(home: Path, extra_env: dict[str, str], timeout: float = 240) -> Iterator[str]:
    """A real `prefect server start` (SQLite, 127.0.0.1) whose services run (the test harness
    runs none): the repossessor frees the concurrency lease of a killed holder. Checks for
    expired leases every second instead of every 15 s."""
    env = {"PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1", **extra_env}
    with launch_prefect_server(home, extra_env=env, timeout=timeout) as server:
        yield server.api_url


_SHARED: dict[str, object] = {}


def shared_prefect_server(home: Path, extra_env: dict[str, str]) -> str:
    """One such server for the fault and security modules of a session: started by the first
    that asks (with its environment), stopped when the interpreter exits."""
    if "url" not in _SHARED:
        server = prefect_server(home, extra_env)
        _SHARED["url"] = server.__enter__()
        _SHARED["home"] = home
        _SHARED["guard"] = extra_env.get("EVERGREEN_TEST_EGRESS_LOG", "")
        atexit.register(server.__exit__, None, None, None)
    return str(_SHARED["url"])


def shared_prefect_home() -> Path:
    return Path(str(_SHARED["home"]))


def shared_prefect_guard() -> Path | None:
    """Where the shared server's egress guard records (None: started unguarded)."""
    return Path(str(_SHARED["guard"])) if _SHARED.get("guard") else None


@dataclass
class MlflowServer:
    """`mlflow server` on SQLite with a local artifact root, on a fixed port so a restart
    comes back where clients (and the proxy) expect it."""

    root: Path
    extra_env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: list[float] = field(default_factory=list)  # seconds each start took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    def start(self, timeout: float = 300) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            executable("mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--default-artifact-root", (self.root / "artifacts").as_uri(),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = self.root / "server.log"
        began = time.monotonic()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=service_env(self.extra_env), start_new_session=True
            )
        wait_http(f"{self.url}/health", timeout, self.proc, log)
        self.starts.append(time.monotonic() - began)

    def kill(self) -> None:
        """SIGKILL the server and its workers: a crash, nothing flushed, nothing answered."""
        assert self.proc is not None
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the server hangs (a stalled host or network); requests time out."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
            stop(self.proc)
            self.proc = None


# -------------------------------------------------------------------------------- proxy


def registry_write(method: str, path: str) -> bool:
    """A request that changes the model registry (versions, aliases, tags)."""
    return method != "GET" and ("/registered-models/" in path or "/model-versions/" in path)


def alias_write(method: str, path: str) -> bool:
    return method in ("POST", "DELETE") and path.split("?")[0].endswith("/registered-models/alias")


@dataclass
class Cut:
    """Where the proxy plays the server going away: at the `at`-th request matching `match`,
    either before forwarding it (`before`: the write is lost) or after the server answered
    (`after`: the write is applied, the client never hears so)."""

    at: int
    mode: str = "before"
    match: Callable[[str, str], bool] = registry_write
    on_cut: Callable[[], None] | None = None  # e.g. kill or freeze the real server
    seen: int = 0
    fired: bool = False
    request: str = ""


class FaultProxy:
    """Forwards HTTP/1.1 requests to `upstream` unchanged. With a `Cut` armed it goes down at
    that request: every request from then on gets its connection closed without an answer
    (unless `passthrough_when_down`, used when `on_cut` stops the real server, so clients see
    the real outage), until `restore()`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.cut: Cut | None = None
        self.down = False
        self.passthrough_when_down = False
        self.requests = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                decision = proxy._decide(self.command, self.path)
                if decision == "drop":
                    self.close_connection = True
                    return
                try:
                    status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                except OSError:
                    self.close_connection = True  # upstream gone: so is the answer
                    return
                if decision == "forward-then-cut":
                    proxy._fire()
                    self.close_connection = True
                    return
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle  # noqa: N815

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:  # noqa: ANN001
                pass  # clients killed mid-request (on purpose) reset their connections

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def _decide(self, method: str, path: str) -> str:
        with self._lock:
            self.requests += 1
            if self.down:
                return "forward" if self.passthrough_when_down else "drop"
            cut = self.cut
            if cut is None or cut.fired or not cut.match(method, path):
                return "forward"
            cut.seen += 1
            if cut.seen < cut.at:
                return "forward"
            cut.request = f"{method} {path}"
            if cut.mode == "before":
                self._fire_locked()
                return "forward" if self.passthrough_when_down else "drop"
            return "forward-then-cut"

    def _fire(self) -> None:
        with self._lock:
            self._fire_locked()

    def _fire_locked(self) -> None:
        assert self.cut is not None
        self.cut.fired, self.down = True, True
        if self.cut.on_cut is not None:
            self.cut.on_cut()

    def _forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:  # noqa: ANN001
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(method, path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def arm(self, cut: Cut, passthrough_when_down: bool = False) -> Cut:
        with self._lock:
            self.cut, self.down, self.passthrough_when_down = cut, False, passthrough_when_down
        return cut

    def restore(self) -> None:
        with self._lock:
            self.cut, self.down, self.passthrough_when_down = None, False, False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------ registry state


@dataclass(frozen=True)
class RegistryState:
    """Aliases, status tags and unsettled history records of one registered model."""

    aliases: dict[str, str | None]
    status: dict[str, str | None]
    unsettled: list[str]
    incomplete: dict[str, str]  # aliased version -> what it lacks

    @property
    def serving(self) -> tuple[str | None, str | None]:
        """What the scoring service serves: the champion, and the canary unless it is the
        champion itself (then every row gets that one version)."""
        champion, canary = self.aliases[registry.CHAMPION], self.aliases[registry.CANARY]
        return champion, canary if canary != champion else None

    def view(self) -> dict:
        return {"aliases": self.aliases, "status": self.status}


def read_state(tracking_uri: str, name: str, required_tags: tuple[str, ...] = ()) -> RegistryState:
    """The registry state of `name` through an explicit client (pass the SQLite URI of the
    server's store to read it while the server is down). An aliased version is complete when
    its model files are on disk and it carries its status tag and `required_tags`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    aliases: dict[str, str | None] = {}
    for alias in ALIASES:
        try:
            aliases[alias] = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            aliases[alias] = None
    versions = client.search_model_versions(f"name = '{name}'")
    status = {str(v.version): (v.tags or {}).get(registry.STATUS_TAG) for v in versions}
    incomplete: dict[str, str] = {}
    for v in versions:
        if str(v.version) not in aliases.values():
            continue
        lacks = [t for t in (registry.STATUS_TAG, *required_tags) if t not in (v.tags or {})]
        local = client.get_model_version_download_uri(name, str(v.version))
        folder = Path(urlsplit(local).path) if local.startswith("file:") else Path(local)
        lacks += [f"file {f}" for f in ("MLmodel", "model.ubj") if not (folder / f).is_file()]
        if lacks:
            incomplete[str(v.version)] = ", ".join(lacks)
    tags = client.get_registered_model(name).tags or {}
    unsettled = [
        f"{k}: {json.loads(v).get('state')}"
        for k, v in sorted(tags.items())
        if k.startswith(registry.HISTORY_PREFIX) and json.loads(v).get("state", registry.DONE) == registry.PENDING
    ]
    return RegistryState(aliases, status, unsettled, incomplete)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------ a registry store that dies

REGISTRY_WRITES = (
    "create_registered_model", "update_registered_model", "delete_registered_model",
    "set_registered_model_tag", "delete_registered_model_tag", "create_model_version",
    "update_model_version", "delete_model_version", "set_model_version_tag",
    "delete_model_version_tag", "set_registered_model_alias", "delete_registered_model_alias",
)  # fmt: skip
REGISTRY_READS = (
    "get_registered_model", "search_registered_models", "get_latest_versions", "get_model_version",
    "get_model_version_download_uri", "search_model_versions", "get_model_version_by_alias",
)  # fmt: skip


@contextmanager
def registry_outage(at: int) -> Iterator[Cut]:
    """The model registry goes away just before its `at`-th write: that write and every
    registry call after it fail (MlflowException, as from a dead tracking server) and change
    nothing. The store underneath is MLflow's real SQLAlchemy store; only the outage is
    injected. `cut.seen` counts the writes let through."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    cut = Cut(at=at)
    originals = {name: getattr(SqlAlchemyStore, name) for name in (*REGISTRY_WRITES, *REGISTRY_READS)}

    def wrap(name: str, real: Callable) -> Callable:
        def call(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if not cut.fired and name in REGISTRY_WRITES:
                if cut.seen + 1 >= cut.at:
                    cut.fired, cut.request = True, name
                else:
                    cut.seen += 1
            if cut.fired:
                raise MlflowException(f"model registry unreachable (went away before write {cut.at}, {cut.request})")
            return real(self, *args, **kwargs)

        return call

    for name, real in originals.items():
        setattr(SqlAlchemyStore, name, wrap(name, real))
    try:
        yield cut
    finally:
        for name, real in originals.items():
            setattr(SqlAlchemyStore, name, real)
