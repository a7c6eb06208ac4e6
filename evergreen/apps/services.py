"""Local services on 127.0.0.1 for the demo, the end-to-end tests and the benchmarks:
a `prefect server` on SQLite and the scoring service, each a child process that is always
stopped on exit."""

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
from pathlib import Path

from evergreen.telemetry import TELEMETRY_OFF


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if `proc` died."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process for {url} exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def executable(name: str) -> str:
    """A console script of this environment (next to the interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
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


@contextmanager
def prefect_server(home: Path, port: int | None = None, timeout: float = 180) -> Iterator[str]:
    """A `prefect server` on SQLite under `home`, on 127.0.0.1; yields its API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = home / "server.log"
    env = service_env(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true",
        }
    )
    env.pop("PREFECT_API_URL", None)
    url = f"http://127.0.0.1:{port}/api"
    command = [executable("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with child_service(command, env, log, f"{url}/health", timeout):
        yield url


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
