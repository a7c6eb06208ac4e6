"""A socket guard: every connection to a non-loopback address is refused and recorded.

In the test process: `refuse_outbound()` (a context manager). In child processes (a scoring
service, a CLI run, a Prefect or MLflow server started by a test): put `child_env(folder)`
into the child's environment; `egress_site/sitecustomize.py` then installs the same guard at
interpreter start, writes `armed-<pid>` (the child's command line) and appends every refused
attempt to `attempts-<pid>.log` in that folder, which `read_attempts` collects.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "", None}
SITE_DIR = Path(__file__).resolve().parent / "egress_site"
LOG_ENV = "EVERGREEN_TEST_EGRESS_LOG"


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _install(record: Callable[[str], None]) -> Callable[[], None]:
    """Patch connect, connect_ex, sendto and getaddrinfo; returns the function that undoes it."""
    real = {
        "connect": socket.socket.connect,
        "connect_ex": socket.socket.connect_ex,
        "sendto": socket.socket.sendto,
        "getaddrinfo": socket.getaddrinfo,
    }

    def check(sock: socket.socket, address: object, what: str) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if not _is_loopback(host):
                record(f"{what} {address}")
                raise ConnectionRefusedError(f"outbound {what} to {address} refused by the test guard")

    def connect(sock: socket.socket, address: object) -> None:
        check(sock, address, "connect")
        return real["connect"](sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        check(sock, address, "connect")
        return real["connect_ex"](sock, address)

    def sendto(sock: socket.socket, data, *args):  # noqa: ANN001, ANN002, ANN202
        check(sock, args[-1], "sendto")
        return real["sendto"](sock, data, *args)

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not _is_loopback(host):
            record(f"resolve {host}")
            raise socket.gaierror(f"name resolution of {host} refused by the test guard")
        return real["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo

    def undo() -> None:
        socket.socket.connect, socket.socket.connect_ex = real["connect"], real["connect_ex"]  # type: ignore[method-assign]
        socket.socket.sendto = real["sendto"]  # type: ignore[method-assign]
        socket.getaddrinfo = real["getaddrinfo"]

    return undo


@contextmanager
def refuse_outbound() -> Iterator[list[str]]:
    """Within the block, connecting (or resolving a name, or sending a datagram) to anything
    but loopback raises and is appended to the yielded list."""
    attempts: list[str] = []
    undo = _install(attempts.append)
    try:
        yield attempts
    finally:
        undo()


def guard_process(folder: str) -> None:
    """Install the guard for the rest of this process, recording into `folder` (called by
    egress_site/sitecustomize.py at interpreter start)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    (out / f"armed-{pid}").write_text(" ".join(sys.argv) or sys.executable, encoding="utf-8")

    def record(what: str) -> None:
        with open(out / f"attempts-{pid}.log", "a", encoding="utf-8") as fh:
            fh.write(f"{' '.join(sys.argv)[:200]}: {what}\n")

    _install(record)


def child_env(folder: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment entries that arm the guard in a child process (and its own children)."""
    env = dict(base if base is not None else os.environ)
    path = env.get("PYTHONPATH", "")
    return {
        LOG_ENV: str(folder),
        "PYTHONPATH": os.pathsep.join([str(SITE_DIR), *([path] if path else [])]),
    }


def read_attempts(folder: Path) -> list[str]:
    """Every refused attempt recorded by guarded children under `folder`."""
    return [line for f in sorted(Path(folder).glob("attempts-*.log")) for line in f.read_text(encoding="utf-8").splitlines()]


def armed_commands(folder: Path) -> list[str]:
    """The command lines of the guarded children that started under `folder`."""
    return [f.read_text(encoding="utf-8") for f in sorted(Path(folder).glob("armed-*"))]
