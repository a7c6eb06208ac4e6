"""Local services on 127.0.0.1 for the demo, the tests and the benchmarks: a `prefect
server` on SQLite, the scoring service and the served deployments, each a child process
that is always stopped on exit. The one launcher of a Prefect server and the one
`free_port` of the project live here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from evergreen.telemetry import TELEMETRY_OFF


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if `proc` died."""
    # urllib rather than httpx: the benchmark harness waits with this and must stay small
    # (its children inherit its peak RSS); no proxy, the services are on 127.0.0.1.
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process for {url} exited with {proc.returncode}; see {log}:\n{tail}")
        try:
            with opener.open(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:  # refused, reset, timed out, or an HTTP error status
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s" + (f"; see {log}" if log else ""))


def executable(name: str) -> str:
    """A console script of this environment (next to the interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left. The group is signalled even
    when its leader already exited: the leader's children may not have."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def service_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **TELEMETRY_OFF, **(extra or {})}


@contextmanager
def child_service(command: list[str], env: dict[str, str], log: Path, ready_url: str, timeout: float) -> Iterator[None]:
    """Run `command` in its own process group (output appended to `log`) until the block
    ends; enter the block once `ready_url` answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(ready_url, timeout, proc, log)
        yield
    finally:
        stop(proc)


@dataclass
class PrefectServer:
    """A running `prefect server start` child (see `launch_prefect_server`)."""

    api_url: str
    home: Path
    process: subprocess.Popen
    log: Path
    timeout: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until `/api/health` answers 200; errors quote the log's tail if it died."""
        wait_http(f"{self.api_url}/health", self.timeout if timeout is None else timeout, self.process, self.log)


@contextmanager
def launch_prefect_server(
    home: Path,
    *,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    ui: bool = False,
    services: bool = True,
    wait: bool = True,
    timeout: float = 240,
    cwd: Path | None = None,
) -> Iterator[PrefectServer]:
    """`prefect server start` on 127.0.0.1 (a free port unless `port`), SQLite database and
    PREFECT_HOME in `home`, output appended to `home/server.log`, in its own process group,
    stopped (the whole group) when the block ends.

    `extra_env` is added to this process's environment with telemetry off; `services=False`
    runs the API alone (no scheduler, repossessor, triggers...); `ui` serves the web UI. The
    block is entered once `/api/health` answers, within `timeout` seconds (Prefect 3.9 takes
    20-40 s on a quiet machine, minutes on a loaded one); with `wait=False` it is entered at
    once and the caller calls `wait_healthy()`. `cwd` is where the server runs (a
    `prefect.toml` there applies to it)."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = service_env(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            **(extra_env or {}),
            # Its own URL: a PREFECT_API_URL inherited from the caller points elsewhere.
            "PREFECT_API_URL": url,
        }
    )
    command = [executable("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--ui" if ui else "--no-ui"] + ([] if services else ["--no-services"])
    log = home / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    server = PrefectServer(api_url=url, home=home, process=proc, log=log, timeout=timeout)
    try:
        if wait:
            server.wait_healthy()
        yield server
    finally:
        stop(proc, timeout=30)


@contextmanager
def prefect_server(home: Path, port: int | None = None, timeout: float = 180) -> Iterator[str]:
    """A `prefect server` with its UI (the demo, the end-to-end tests) under `home`; yields
    its API URL."""
    with launch_prefect_server(home, port=port, ui=True, timeout=timeout) as server:
        yield server.api_url


@contextmanager
def scoring_service(config_path: Path, log: Path, port: int | None = None, timeout: float = 120, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`evergreen serve` as a child process; yields its base URL once /ready answers 200."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    command = [executable("evergreen"), "serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)]
    with child_service(command, service_env(extra_env), log, f"{base}/ready", timeout):
        yield base


@contextmanager
def served_flows(
    log: Path,
    config: str | None = None,
    schedules: bool = False,
    only: list[str] | None = None,
    port: int | None = None,
    timeout: float = 180,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`evergreen serve-flows` (the deployments of prefect.yaml, served) as a child process
    polling for runs every second; yields the runner's health URL once it answers."""
    port = port or free_port()
    command = [executable("evergreen"), "serve-flows", "--schedules" if schedules else "--no-schedules"]
    if config:
        command += ["--config", config]
    for name in only or []:
        command += ["--only", name]
    env = service_env(
        {
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_RUNNER_SERVER_ENABLE": "true",
            "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
            "PREFECT_RUNNER_SERVER_PORT": str(port),
            **(extra_env or {}),
        }
    )
    health = f"http://127.0.0.1:{port}/health"
    with child_service(command, env, log, health, timeout):
        yield health
