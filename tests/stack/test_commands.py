"""`evergreen stack up` twice changes nothing (same processes, same credentials); `status`
shows every service with its URL and answers 0; `env` prints what a shell needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evergreen.apps import stack
from tests.stack.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]


def _evergreen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evergreen.apps.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False, env={k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))})


def test_up_twice_changes_nothing(running_stack: Stack) -> None:
    home = running_stack.home
    before = stack.read_state(home)
    creds = (home / "credentials.json").read_text(encoding="utf-8")
    result = _evergreen("stack", "up", "--dir", str(home), "--no-deploy")
    assert result.returncode == 0, result.stderr[-3000:]
    after = stack.read_state(home)
    assert before is not None and after is not None
    assert {k: v.pid for k, v in after.services.items()} == {k: v.pid for k, v in before.services.items()}
    assert [w.pid for w in after.workers] == [w.pid for w in before.workers]
    assert (home / "credentials.json").read_text(encoding="utf-8") == creds
    assert "starting" not in result.stderr  # nothing was started again


def test_status_names_every_service_and_its_url(running_stack: Stack) -> None:
    result = _evergreen("stack", "status", "--dir", str(running_stack.home), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    services = {s["name"]: s for s in json.loads(result.stdout)["services"]}
    assert {"postgres", "s3", "prefect", "mlflow", "worker-1", "worker-2"} <= set(services)
    assert all(s["answering"] for s in services.values())
    assert services["prefect"]["url"].startswith("http://127.0.0.1:")
    assert services["mlflow"]["url"] == running_stack.state.mlflow_url


def test_env_prints_the_exports_a_shell_needs(running_stack: Stack) -> None:
    result = _evergreen("stack", "env", "--dir", str(running_stack.home))
    assert result.returncode == 0, result.stderr
    shell = subprocess.run(["bash", "-c", result.stdout + '\necho "$PREFECT_API_URL|$MLFLOW_TRACKING_URI|$AWS_ENDPOINT_URL_S3"'],
                           capture_output=True, text=True, check=True)
    s = running_stack.state
    assert shell.stdout.strip() == f"{s.prefect_api_url}|{s.mlflow_url}|{s.s3_endpoint}"
