"""Fast one-off commands, as a user runs them from a project folder: `evergreen server start`
keeps a Prefect server and the served deployments up (one stack for the module: it takes
30-60 s to start); `evergreen monitor` hands its run to the warm runner and prints and writes
what the same command prints and writes in process (`--local`); a deterministic failure
(no monitor reference yet, a column the data does not have) is one `error:` line, no
traceback, the failing task ran once, exit 1 for a failed run and 2 for a config error,
through the runner and in process alike; `server stop` leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from evergreen.apps.services import executable, free_port, service_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DAY = "2019-01-02"
# Differ between two runs of the same batch (their own MLflow run and events).
RUN_SPECIFIC = ("mlflow_run_id", "mlflow_run_url", "event_ids")


@dataclass
class Project:
    root: Path  # the working directory of every command (relative paths in model.yaml)
    state: dict  # .evergreen/server/state.json

    @property
    def api(self) -> str:
        return self.state["api_url"]


def evergreen(project_root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`evergreen ARGS` in the project folder, with no PREFECT_API_URL of the caller's."""
    env = service_env()
    env.pop("PREFECT_API_URL", None)
    env.pop("EVERGREEN_SERVER_DIR", None)
    return subprocess.run(
        [executable("evergreen"), *args], cwd=project_root, env=env, capture_output=True, text=True, timeout=timeout
    )


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A project folder with the demo config (paths relative to it), its stream, and the
    server started with `evergreen server start`; stopped and checked at the end."""
    root = tmp_path_factory.mktemp("project")
    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    raw["data"]["root"] = "data"
    raw["mlflow"]["tracking_uri"] = "sqlite:///mlflow.db"
    raw["mlflow"]["artifact_root"] = "mlartifacts"
    (root / "model.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _ok(evergreen(root, "stream", "--config", "model.yaml", "--out", "data"))
    # A second model on its own data root whose monitor reference is missing.
    raw["data"]["root"] = "broken"
    (root / "broken.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(root / "data" / "batches", root / "broken" / "batches")
    # A third whose config names a column the data does not have (found when the flow runs).
    raw["data"]["root"] = "data"
    raw["columns"]["features"] = ["car_valu", *raw["columns"]["features"][1:]]
    (root / "wrong-column.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    started = evergreen(root, "server", "start", "--port", str(free_port()), "--no-schedules")
    state_file = root / ".evergreen" / "server" / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    try:
        _ok(started)
        assert state is not None
        yield Project(root, state)
    finally:
        stopped = evergreen(root, "server", "stop", timeout=180)
    _ok(stopped)
    assert "runner" in stopped.stdout and "Prefect server" in stopped.stdout, stopped.stdout
    assert not state_file.exists()
    assert not _alive(state["server_pid"]) and not _alive(state["runner_pid"])
    after = evergreen(root, "server", "status")
    assert after.returncode == 1 and "not running" in after.stdout


def _api(project: Project, path: str, body: dict) -> list[dict]:
    import httpx

    with httpx.Client(base_url=project.api, timeout=30) as client:
        response = client.post(path, json=body)
        response.raise_for_status()
        return response.json()


def _task_runs(project: Project, flow_run_id: str | None = None) -> dict[str, dict]:
    """Task runs (by name without the suffix) of the flow run `flow_run_id`, or of the newest
    one. (By id: runs are named by model and batch, `monitor/car-loan/2019-01-02`, which
    several runs share.)"""
    if flow_run_id is not None:
        runs = _api(project, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    else:
        runs = _api(project, "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_DESC", "limit": 1})
    (run,) = runs
    tasks = _api(project, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    return {t["name"].rsplit("-", 1)[0]: t for t in tasks}


def _handed_run(stderr: str, model: str = "car-loan") -> str:
    """The id of the flow run the command handed its run to (named by model and batch)."""
    marker = f"handed to the served deployment monitor/monitor: flow run 'monitor · {model} · {DAY}' id "
    assert marker in stderr, stderr[-3000:]
    return stderr.split(marker, 1)[1].split()[0]


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-4000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-4000:]
    return lines[0]


def test_server_status_reports_the_urls_and_pids(project: Project) -> None:
    status = _ok(evergreen(project.root, "server", "status"))
    assert project.api in status.stdout and project.state["ui_url"] in status.stdout
    assert str(project.state["server_pid"]) in status.stdout and str(project.state["runner_pid"]) in status.stdout
    as_json = json.loads(_ok(evergreen(project.root, "server", "status", "--json")).stdout)
    assert as_json["up"] is True and as_json["cwd"] == str(project.root.resolve())
    # The UI is served and knows where its API is.
    import httpx

    assert httpx.get(project.state["ui_url"], timeout=30).status_code == 200
    settings = httpx.get(f"{project.state['ui_url']}/ui-settings", timeout=30).json()
    assert settings["api_url"] == project.api
    # Starting again changes nothing.
    again = _ok(evergreen(project.root, "server", "start"))
    assert "already running" in again.stdout


def test_monitor_handed_to_the_runner_matches_the_in_process_run(project: Project) -> None:
    batch = f"data/batches/{DAY}.parquet"
    warm = _ok(evergreen(project.root, "monitor", "--config", "model.yaml", "--batch", batch, "--out", "warm.json"))
    run_id = _handed_run(warm.stderr)
    local = _ok(evergreen(project.root, "monitor", "--local", "--config", "model.yaml", "--batch", batch, "--out", "local.json"))
    assert "handed to" not in local.stderr
    assert "Starting temporary server" not in local.stderr  # in process, on the project's server
    handed, here = (json.loads((project.root / f).read_text()) for f in ("warm.json", "local.json"))
    assert handed["batch_id"] == DAY and handed["valid"] is True and handed["rows"] > 0
    assert {k: v for k, v in handed.items() if k not in RUN_SPECIFIC} == {k: v for k, v in here.items() if k not in RUN_SPECIFIC}
    assert warm.stdout == local.stdout  # the same lines
    # The handed-off run is the served deployment's, named and tagged by model as the command said.
    (run,) = _api(project, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    assert run["name"] == f"monitor · car-loan · {DAY}" and {"evergreen", "model:car-loan"} <= set(run["tags"]), run
    tasks = _task_runs(project, run_id)
    assert tasks["load-batch"]["state_type"] == "COMPLETED"


def test_a_missing_monitor_reference_is_one_line_and_runs_once(project: Project) -> None:
    batch = f"broken/batches/{DAY}.parquet"
    reference = str(project.root / "broken" / "monitor_reference.parquet")
    warm = evergreen(project.root, "monitor", "--config", "broken.yaml", "--batch", batch)
    assert warm.returncode == 1, warm.stderr[-3000:]
    line = _one_error_line(warm)
    assert "no monitor reference" in line and reference in line and "`evergreen bootstrap --config FILE`" in line
    task = _task_runs(project, _handed_run(warm.stderr))["load-monitor-reference"]
    assert task["state_type"] == "FAILED" and task["run_count"] == 1  # no retry

    local = evergreen(project.root, "monitor", "--local", "--config", "broken.yaml", "--batch", batch)
    assert local.returncode == 1
    assert _one_error_line(local) == line
    task = _task_runs(project)["load-monitor-reference"]
    assert task["state_type"] == "FAILED" and task["run_count"] == 1

    verbose = evergreen(project.root, "--verbose", "monitor", "--local", "--config", "broken.yaml", "--batch", batch)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and line in verbose.stderr


def test_a_config_error_found_by_the_flow_exits_2(project: Project) -> None:
    batch = f"data/batches/{DAY}.parquet"
    for extra in ([], ["--local"]):
        proc = evergreen(project.root, "monitor", *extra, "--config", "wrong-column.yaml", "--batch", batch)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_error_line(proc)
        assert "columns.features[0]" in line and "car_valu" in line and "did you mean 'car_value'" in line
    assert os.path.exists(project.root / ".evergreen" / "server" / "state.json")
