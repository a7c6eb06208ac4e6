"""End-to-end set-up: a real `prefect server` (SQLite, 127.0.0.1, free port), the project's
own prefect.yaml deployed through the `prefect` CLI, the deployments served by
`evergreen serve-flows`, a local webhook receiver for the notification automations.

The model is `car-loan` with its data and MLflow store in a temporary folder; its config is
saved as the `car-loan` block with `evergreen register`, exactly as a user does (prefect.yaml's
triggers match every model's events and pass that model's block)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from evergreen.apps.services import executable, free_port, prefect_server, served_flows, service_env
from evergreen.config import ModelConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Webhook:
    """Requests the notification automations sent to the local receiver."""

    url: str
    received: list[dict] = field(default_factory=list)

    def wait_for(self, predicate, timeout: float = 60) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.received):
                if predicate(body):
                    return body
            time.sleep(0.5)
        raise AssertionError(f"no matching webhook call within {timeout} s; received: {self.received}")


@dataclass
class Project:
    cfg: ModelConfig
    config_file: Path
    staging: Path
    api_url: str
    deploy_outputs: list[dict]
    served_health: str = ""


# Module scope: the server, the environment variable and the settings are undone when the
# e2e module ends, so tests collected after it talk to their own servers again.
@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                received.append(json.loads(body))
            except json.JSONDecodeError:
                received.append({"raw": body.decode(errors="replace")})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Webhook(f"http://127.0.0.1:{server.server_address[1]}/evergreen", received)
    server.shutdown()


@dataclass
class PrefectServer:
    """The e2e module's `prefect server`: SQLite under `home`, on a fixed port, so that it
    can be stopped and started again on the same database and URL (a server restart)."""

    home: Path
    port: int
    stack: ExitStack = field(default_factory=ExitStack)

    def start(self) -> str:
        return self.stack.enter_context(prefect_server(self.home, port=self.port))

    def stop(self) -> None:
        self.stack.close()

    def restart(self, down_until: Callable[[], bool] | None = None, timeout: float = 300) -> str:
        """Stop the server and start it again; with `down_until`, keep it stopped until
        that returns true (or `timeout` s pass)."""
        self.stop()
        deadline = time.monotonic() + timeout
        while down_until is not None and not down_until():
            assert time.monotonic() < deadline, f"still waiting after {timeout} s with the server down"
            time.sleep(1)
        return self.start()


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path_factory.mktemp("prefect-server"), free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_url(prefect_api: PrefectServer) -> Iterator[str]:
    """A real Prefect server for the e2e module; this process and every child talk to it."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = prefect_api.start()
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    # Prefect's events worker is one per process and keeps the API URL it started with:
    # drain it so events go to this server, and again after, for the tests that follow.
    EventsWorker.drain_all()
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
            EventsWorker.drain_all()
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a console script of this environment from the repository root, as a user would."""
    proc = subprocess.run(
        [executable(args[0]), *args[1:]], cwd=ROOT, env=service_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def server_state() -> dict:
    """Deployments (with schedules, parameters, concurrency) and automations, as the API has them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments()
        automations = client.read_automations()
    return {
        "deployments": {
            d.name: {
                "id": str(d.id),
                "parameters": d.parameters,
                "schedules": sorted(str(s.schedule) for s in d.schedules),
                "concurrency": d.global_concurrency_limit.limit if d.global_concurrency_limit else None,
                "collision": str(d.concurrency_options.collision_strategy) if d.concurrency_options else None,
                "tags": sorted(d.tags),
            }
            for d in deployments
        },
        "automations": sorted(
            (a.name, _canonical_json(a.trigger.model_dump(mode="json")), _canonical_json([x.model_dump(mode="json") for x in a.actions]))
            for a in automations
        ),
    }


# Trigger fields that Prefect types as sets: serialized in the reading process's set order,
# which Python's hash randomization makes differ between processes.
_SET_FIELDS = {"expect", "after", "for_each"}


def _canonical_json(value: object) -> str:
    def canon(v: object, key: str = "") -> object:
        if isinstance(v, dict):
            return {k: canon(x, k) for k, x in v.items()}
        if isinstance(v, list):
            items = [canon(x) for x in v]
            return sorted(items) if key in _SET_FIELDS else items
        return v

    return json.dumps(canon(value), sort_keys=True)


def wait_until_served(since: datetime, timeout: float = 120) -> None:
    """Block until a runner has polled every deployment after `since`.

    A running `serve-flows` whose runner gave up while the server was away serves again
    when the API answers (flows/deployments.py: serve_project), and serving again first
    re-applies each deployment: Prefect deletes the automations a deployment owns and
    creates them again, so read in the middle of that they are briefly missing. A runner
    polls only once its deployments are applied, and each poll sets `last_polled`."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            polled = {d.name: d.last_polled for d in client.read_deployments()}
        if all(t is not None and t > since for t in polled.values()):
            return
        assert time.monotonic() < deadline, f"no runner polled these deployments after {since}: {polled}\n{served_log_tail()}"
        time.sleep(1)


def state_diff(expected: dict, found: dict) -> str:
    """What differs between two `server_state()` reads, for an assertion message."""
    lines = []
    for name in sorted(set(expected["deployments"]) | set(found["deployments"])):
        a, b = expected["deployments"].get(name), found["deployments"].get(name)
        if a != b:
            lines.append(f"deployment {name}: {a} -> {b}")
    before, after = set(expected["automations"]), set(found["automations"])
    lines += [f"automation lost: {a}" for a in sorted(before - after)]
    lines += [f"automation new: {a}" for a in sorted(after - before)]
    return "\n".join(lines)


def copy_days(staging: Path, live: Path, days: list[str]) -> None:
    """Deliver these days' batches and label files to the live data folder."""
    for sub in ("batches", "labels"):
        (live / sub).mkdir(parents=True, exist_ok=True)
        for day in days:
            src = staging / sub / f"{day}.parquet"
            if src.exists():
                shutil.copy(src, live / sub / f"{day}.parquet")


@pytest.fixture(scope="module")
def project(api_url: str, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The first 10 days delivered, a champion bootstrapped, the block and notifications
    registered, prefect.yaml deployed twice, its deployments served."""
    from evergreen.simulation.stream import write_demo_stream
    from flows.retrain import retrain

    tmp = tmp_path_factory.mktemp("e2e")
    base = load_config(ROOT / "configs" / "demo.yaml")
    assert base.name == "car-loan"  # the block and tags the tests name
    cfg = base.model_copy(
        update={
            "data": base.data.model_copy(update={"root": str(tmp / "live")}),
            "mlflow": base.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "artifact_root": str(tmp / "mlartifacts")}),
            # The bootstrap is trained at data day 10 and drift is detected on day 13: a
            # 24 h cooldown lets that drift retrain (the default 168 h would skip it) and
            # still skips the retrains that the burst of events would start after it.
            "retrain": base.retrain.model_copy(update={"cooldown_hours": 24}),
        }
    )
    config_file = tmp / "car-loan.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")

    staging = tmp / "stream"
    info = write_demo_stream(cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(staging)})}), str(staging), drift="covariate", drift_start=10)
    live = Path(cfg.data.root)
    live.mkdir(parents=True)
    for name in ("reference.parquet", "monitor_reference.parquet"):
        shutil.copy(staging / name, live / name)
    copy_days(staging, live, info.days[:10])
    boot = retrain(config=cfg, trigger="manual", reason="bootstrap the e2e registry", return_state=True).result()
    assert boot.bootstrap and boot.version == "1"

    cli("evergreen", "register", "--config", str(config_file), "--webhook-url", webhook.url)
    cli("prefect", "work-pool", "create", "evergreen", "--type", "process", "--overwrite")
    outputs = []
    for _ in range(2):
        cli("prefect", "--no-prompt", "deploy", "--all")
        outputs.append(server_state())
    project = Project(cfg, config_file, staging, api_url, outputs)
    os.environ["EVERGREEN_E2E_SERVE_LOG"] = str(tmp / "serve-flows.log")
    try:
        # Two client retries instead of five: a runner facing a stopped server gives up
        # after ~30 s instead of ~3.5 min (the server-restart test waits for that).
        env = {"PREFECT_API_URL": api_url, "PREFECT_CLIENT_MAX_RETRIES": "2"}
        with served_flows(tmp / "serve-flows.log", extra_env=env) as health:
            project.served_health = health
            yield project
    finally:
        os.environ.pop("EVERGREEN_E2E_SERVE_LOG", None)


def wait_runs(deployment: str, since, count: int = 1, timeout: float = 240, settle: float = 0.0) -> list:
    """Flow runs of a deployment created after `since`, once at least `count` exist and all
    of them are in a final state (then `settle` more seconds for late arrivals)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    def read() -> list:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )
        return list(runs)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = read()
        if len(runs) >= count and all(r.state is not None and r.state.is_final() for r in runs):
            if settle:
                time.sleep(settle)
                runs = read()
                if not all(r.state is not None and r.state.is_final() for r in runs):
                    continue
            return runs
        time.sleep(1)
    states = [(r.name, r.state and r.state.name) for r in read()]
    raise AssertionError(f"{deployment}: expected {count} finished runs within {timeout} s, have {states}\n{served_log_tail()}")


def served_log_tail(chars: int = 6000) -> str:
    """The end of the serve-flows log (flow run output and crashes), for failure messages."""
    log = Path(os.environ.get("EVERGREEN_E2E_SERVE_LOG", "/nonexistent"))
    return f"--- {log} (tail) ---\n" + log.read_text(errors="replace")[-chars:] if log.exists() else ""


def registered_versions(project: Project) -> list:
    """The project's registered versions, oldest first (read from its MLflow registry)."""
    from evergreen.adapters import registry, tracking

    tracking.connect(project.cfg.mlflow)
    return registry.list_versions(project.cfg.mlflow.model_name)


def alias_version(project: Project, alias: str) -> str | None:
    """The version `alias` points at in the project's registry (None when unset)."""
    from evergreen.adapters import registry, tracking

    tracking.connect(project.cfg.mlflow)
    found = registry.version_by_alias(project.cfg.mlflow.model_name, alias)
    return found.version if found else None
