"""Local services on 127.0.0.1 for the demo, the tests and the benchmarks: a `prefect
server` on SQLite, the scoring service and the served deployments, each a child process
that is always stopped on exit; and the same two kept up in the background for a project
(`evergreen server start|stop|status`, recorded in `.evergreen/server/state.json`). The one
launcher of a Prefect server and the one `free_port` of the project live here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


def start_prefect_server(
    home: Path,
    *,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    ui: bool = False,
    services: bool = True,
    timeout: float = 240,
    cwd: Path | None = None,
) -> PrefectServer:
    """Start `prefect server start` on 127.0.0.1 (a free port unless `port`), SQLite database
    and PREFECT_HOME in `home`, output appended to `home/server.log`, in its own process
    group (stdin closed: it may outlive the caller). Returns at once; `wait_healthy()` waits
    for it. The caller stops it (`stop`); see `launch_prefect_server` for the options."""
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
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )
    return PrefectServer(api_url=url, home=home, process=proc, log=log, timeout=timeout)


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
    server = start_prefect_server(
        home, port=port, extra_env=extra_env, ui=ui, services=services, timeout=timeout, cwd=cwd
    )
    try:
        if wait:
            server.wait_healthy()
        yield server
    finally:
        stop(server.process, timeout=30)


def ui_env(port: int) -> dict[str, str]:
    """What the Prefect UI served on `port` needs to reach its API: without
    PREFECT_UI_API_URL it calls http://127.0.0.1:4200/api ("Can't connect to Server API")."""
    ui_url = f"http://127.0.0.1:{port}"
    return {"PREFECT_UI_API_URL": f"{ui_url}/api", "PREFECT_UI_URL": ui_url}


@contextmanager
def prefect_server(home: Path, port: int | None = None, timeout: float = 180) -> Iterator[str]:
    """A `prefect server` with its UI (the demo, the end-to-end tests) under `home`; yields
    its API URL."""
    port = port or free_port()
    with launch_prefect_server(home, port=port, ui=True, extra_env=ui_env(port), timeout=timeout) as server:
        yield server.api_url


def start_kept_prefect_server(home: Path, port: int | None = None, timeout: float = 180) -> PrefectServer:
    """A `prefect server` with its UI under `home`, detached: in its own session, stdin
    closed, never stopped by this process, so it keeps answering after the caller returns
    or exits (`evergreen demo --keep-server`). Returns once `/api/health` answers (stops it
    and raises if it does not). Stop it with `stop_kept_server_hint`'s command."""
    port = port or free_port()
    server = start_prefect_server(home, port=port, ui=True, extra_env=ui_env(port), timeout=timeout)
    try:
        server.wait_healthy()
    except BaseException:
        stop(server.process, timeout=30)
        raise
    return server


def stop_kept_server_hint(pid: int) -> str:
    """The command that stops a kept server: its whole process group (the API runs in a
    child of `prefect server start`)."""
    return f"kill -TERM -- -{pid}"


@contextmanager
def scoring_service(config_path: Path, log: Path, port: int | None = None, timeout: float = 120, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`evergreen serve` as a child process; yields its base URL once /ready answers 200."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    command = [executable("evergreen"), "serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)]
    with child_service(command, service_env(extra_env), log, f"{base}/ready", timeout):
        yield base


def start_served_flows(
    log: Path,
    config: str | None = None,
    schedules: bool = False,
    only: list[str] | None = None,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start `evergreen serve-flows` (the deployments of prefect.yaml, served) in its own
    process group, polling for runs every second, its output appended to `log`; returns the
    process and the runner's health URL (it answers once the deployments are served)."""
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
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}/health"


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
    proc, health = start_served_flows(log, config, schedules, only, port, extra_env)
    try:
        wait_http(health, timeout, proc, log)
        yield health
    finally:
        stop(proc)


# ----------------------------------------------------------------------------- the local stack
#
# `evergreen server start|stop|status`: a Prefect server and the served deployments kept up
# in the background for one project (its `.evergreen/server` folder), so that one-off
# commands use that server and hand their runs to the warm runner.

STACK_DIR = Path(".evergreen") / "server"
STACK_DIR_ENV = "EVERGREEN_SERVER_DIR"


@dataclass
class LocalStack:
    """What `evergreen server start` started, as recorded in `<dir>/state.json`."""

    api_url: str
    ui_url: str
    server_pid: int
    runner_pid: int
    runner_health_url: str
    cwd: str
    home: str
    started_at: str
    config: str | None = None
    schedules: bool = True

    @property
    def server_log(self) -> Path:
        return Path(self.home) / "server.log"

    @property
    def runner_log(self) -> Path:
        return Path(self.home) / "runner.log"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StackStatus:
    """Whether each part of a recorded stack runs and answers."""

    stack: LocalStack
    server_running: bool
    server_healthy: bool
    runner_running: bool
    runner_healthy: bool

    @property
    def up(self) -> bool:
        return self.server_healthy and self.runner_healthy

    def to_dict(self) -> dict[str, Any]:
        return {**self.stack.to_dict(), "up": self.up, "server_running": self.server_running,
                "server_healthy": self.server_healthy, "runner_running": self.runner_running,
                "runner_healthy": self.runner_healthy}


def stack_dir(path: Path | None = None) -> Path:
    """The folder of the local stack: `path`, else $EVERGREEN_SERVER_DIR, else
    `.evergreen/server` of the working directory (absolute)."""
    return (path or Path(os.environ.get(STACK_DIR_ENV) or STACK_DIR)).resolve()


def read_stack(home: Path) -> LocalStack | None:
    """The recorded stack of `home`, or None when none was started (or its record is unreadable)."""
    import json

    try:
        raw = json.loads((home / "state.json").read_text(encoding="utf-8"))
        return LocalStack(**raw)
    except (OSError, ValueError, TypeError):
        return None


def _write_stack(home: Path, stack: LocalStack) -> None:
    import json

    tmp = home / "state.json.tmp"
    tmp.write_text(json.dumps(stack.to_dict(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(home / "state.json")


def _cmdline(pid: int) -> str | None:
    """The command line of a live process, or None when there is no such process (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if status.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _is_ours(pid: int, marker: str) -> bool:
    """`pid` runs and its command line holds `marker` (a recycled pid does not count)."""
    line = _cmdline(pid)
    return line is not None and marker in line


_SERVER_MARKER = "server start"
_RUNNER_MARKER = "serve-flows"


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        wait_http(url, timeout)
        return True
    except TimeoutError:
        return False


def stack_status(stack: LocalStack, timeout: float = 2.0) -> StackStatus:
    """Which parts of `stack` run (by pid and command line) and answer their health check."""
    server = _is_ours(stack.server_pid, _SERVER_MARKER)
    runner = _is_ours(stack.runner_pid, _RUNNER_MARKER)
    return StackStatus(
        stack,
        server_running=server,
        server_healthy=server and _answers(f"{stack.api_url}/health", timeout),
        runner_running=runner,
        runner_healthy=runner and _answers(stack.runner_health_url, timeout),
    )


def running_stack(home: Path | None = None) -> LocalStack | None:
    """The local stack of `home` (default: `stack_dir()`) when its Prefect server answers, else
    None. Cheap: a file read, a /proc read and one request to 127.0.0.1."""
    directory = stack_dir(home)
    if not (directory / "state.json").exists():
        return None
    stack = read_stack(directory)
    if stack is None or not _is_ours(stack.server_pid, _SERVER_MARKER):
        return None
    return stack if _answers(f"{stack.api_url}/health", 1.0) else None


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_stack(
    home: Path,
    *,
    port: int = 4200,
    config: str | None = None,
    schedules: bool = True,
    timeout: float = 300,
    log: Callable[[str], None] = print,
) -> LocalStack:
    """Start, detached, a Prefect server (SQLite in `home`, UI on) on 127.0.0.1:`port` and
    `evergreen serve-flows` against it (its runs' results under `home/results`), wait until
    both answer, and record them in `home/state.json`. Raises if a part does not come up
    (and stops what it started)."""
    from datetime import UTC, datetime

    home.mkdir(parents=True, exist_ok=True)
    if port_in_use(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is in use (another Prefect server?); pass --port N")
    ui_url = f"http://127.0.0.1:{port}"
    api_url = f"{ui_url}/api"
    ui_env = {"PREFECT_UI_API_URL": api_url, "PREFECT_UI_URL": ui_url}
    log(f"starting a Prefect server on {api_url} (database {home / 'prefect.db'}; log {home / 'server.log'})")
    server = start_prefect_server(home, port=port, ui=True, extra_env=ui_env, timeout=timeout, cwd=Path.cwd())
    runner: subprocess.Popen | None = None
    try:
        server.wait_healthy()
        log(f"starting the served deployments (evergreen serve-flows; log {home / 'runner.log'})")
        runner, health = start_served_flows(
            home / "runner.log", config=config, schedules=schedules, cwd=Path.cwd(),
            extra_env={"PREFECT_API_URL": api_url, **ui_env, "PREFECT_LOCAL_STORAGE_PATH": str(home / "results")},
        )
        wait_http(health, timeout, runner, home / "runner.log")
    except BaseException:
        if runner is not None:
            stop(runner)
        stop(server.process, timeout=30)
        raise
    stack = LocalStack(
        api_url=api_url, ui_url=ui_url, server_pid=server.pid, runner_pid=runner.pid,
        runner_health_url=health, cwd=str(Path.cwd().resolve()), home=str(home),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"), config=config, schedules=schedules,
    )
    _write_stack(home, stack)
    return stack


def stop_pid(pid: int, marker: str, timeout: float = 30) -> bool:
    """SIGTERM the process group of `pid` (when `pid` still runs the command `marker` names),
    then SIGKILL it after `timeout`; True if something was stopped."""
    if not _is_ours(pid, marker):
        return False
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _cmdline(pid) is not None:
        time.sleep(0.2)
    if _cmdline(pid) is not None:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return True


def stop_stack(home: Path) -> list[str]:
    """Stop the recorded stack of `home` (runner first, then the server) and remove its
    record; the database and logs stay. Returns what was stopped."""
    stack = read_stack(home)
    if stack is None:
        return []
    stopped = []
    if stop_pid(stack.runner_pid, _RUNNER_MARKER):
        stopped.append(f"runner (pid {stack.runner_pid})")
    if stop_pid(stack.server_pid, _SERVER_MARKER):
        stopped.append(f"Prefect server (pid {stack.server_pid})")
    with suppress(FileNotFoundError):
        (home / "state.json").unlink()
    return stopped
