"""The production stack (`evergreen stack up`) for the tests of this folder: one per session,
in a temporary folder on free ports, torn down (by pid) and its data removed at the end.

PostgreSQL must be installed (`.ci/run` installs it as root where missing); without it these
tests are skipped on a developer's machine and fail in CI (CI=true)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evergreen.apps import stack


@dataclass
class Stack:
    home: Path
    state: stack.StackState
    creds: stack.Credentials
    env: dict[str, str]


def _postgres_missing() -> str | None:
    try:
        stack.postgres_bin("initdb")
        stack.postgres_bin("postgres")
    except stack.StackError as exc:
        return str(exc)
    return None


def _keep_logs(home: Path) -> None:
    """Copy the stack's logs (servers, workers, PostgreSQL) to $EVERGREEN_STACK_KEEP_LOGS
    before the stack's folder is removed: a failure's evidence outlives the session."""
    keep = os.environ.get("EVERGREEN_STACK_KEEP_LOGS")
    if not keep:
        return
    target = Path(keep)
    logs = {log: log.relative_to(home) for log in home.rglob("*.log")}
    postgres = home / "postgres" / "postgres.log"  # under a link to /var/lib when run as root
    if postgres.exists():
        logs[postgres] = Path("postgres.log")
    for log, name in logs.items():
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log.resolve(), dest)
    print(f"[stack] logs kept in {target}")


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = _postgres_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    home = tmp_path_factory.mktemp("stack")
    saved = dict(os.environ)
    try:
        state = stack.up(home, workers=2, deploy=True, log=lambda m: print(f"[stack] {m}"))
        creds = stack.load_credentials(home)
        assert creds is not None
        env = stack.client_env(state, creds)
        stack.apply_env(env)
        # Earlier tests imported Prefect with other settings: this session's clients use the stack.
        with stack.prefect_settings(state, creds):
            yield Stack(home, state, creds, env)
    finally:
        stack.down(home, log=lambda m: print(f"[stack] {m}"))
        _keep_logs(home)
        stack.purge(home)
        os.environ.clear()
        os.environ.update(saved)
