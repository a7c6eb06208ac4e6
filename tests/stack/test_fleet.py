"""The fleet end to end, on the production stack: three models registered with `evergreen
register` only (a binary car-loan model and a multiclass card model that drift, at different
times, and a quiet binary one), their batches, labels, snapshots on `s3://`, streaming at
once through the deployments of prefect.yaml run by the stack's two workers, while
faults hit the stack:

- a worker (and the retrain run it executes) is killed: the zombie automation marks the run
  Crashed once its heartbeats stop, and the retrain runs again (deploy/automations.yaml);
- PostgreSQL restarts during a monitor run;
- the MLflow server restarts during a promotion.

Then: each drifting model got its own retrain -> promote -> canary review and nothing of
another model's; the quiet model got none; each model's alias history is complete and
ordered and names only that model's flow runs; every batch of every model was monitored once
(nothing lost). tests/stack/test_secrets.py then searches the stack's logs and stores.

Contract with the multi-model prefect.yaml (the fleet work of issue 18): every deployment
takes `config` (a block name); events carry the resource label `evergreen.block`; triggers
match `evergreen.model.*`; `evergreen register --config FILE` is all a model needs. Until
prefect.yaml is multi-model this module is skipped (the reason says so).

It runs in CI's default run (9 min 42 s alone here, 2026-12-06, on two cores shared with other
work; ~19-20 min before), within the 45-min budget:

- The test is the clock. The three models' monitors of a day start at once; the fan-out
  schedules (monitor-all hourly, canary-review-all at :30, retrain-all weekly) are paused
  while it runs: their runs would double the monitors' work and give the quiet model canary
  reviews depending on the minute the test runs. The canary review is the deployment's own
  trigger on `evergreen.canary.started` (the test starts none).
- DAYS=4 days (9 before): the loan model's unit change (the demo's drift) from day
  LOAN_DRIFT=1, the card model's covariate shift from day CARDS_DRIFT=2. Each asks for its
  retrain the day after, once its first post-change labels are in (1 day's 2,000 rows: the
  episode's minimum is set to 1,000 here; the default waits for two batches), on days 2 and 3, after PostgreSQL's restart during day 1's
  monitors; the last day's requests run to the end. (The loan model's covariate shift used
  before trained versions that did not beat the champion: its gate rejected v2 and v3.)
  ROWS=2000 rows a batch: NannyML's default chunking still sees each drift.
- The stack is the session's (tests/stack/conftest.py); the three models are registered and
  bootstrapped at once (`evergreen register` is safe in parallel).
- A day starts once the previous day's monitors ended; what they started (retrain ->
  promote -> canary review, the killed retrain's crash and rerun) goes on meanwhile, as in
  production, and the end waits for every run (_settle). The zombie automation keeps its
  production values (Crashed 90 s after the last heartbeat, 3 x
  PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30, Prefect's minimum): the rerun's slot frees only when
  the dead run's 60-s lease lapses, so a shorter window would only make the rerun wait.
- The stack's workers poll every 2 s (PREFECT_WORKER_QUERY_SECONDS, evergreen/apps/stack.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from evergreen.apps import stack
from tests.stack.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.stack,
    pytest.mark.skipif(
        "evergreen.model.*" not in (ROOT / "prefect.yaml").read_text(encoding="utf-8"),
        reason="needs the multi-model prefect.yaml (triggers on evergreen.model.*, config from the "
        "event's evergreen.block label): run after the fleet branch of issue 18 is merged",
    ),
]

DAYS = int(os.environ.get("EVERGREEN_FLEET_DAYS", "4"))
ROWS = 2000
LOAN_DRIFT, CARDS_DRIFT = 1, 2  # the first drifted batch of each (index in the days)
FAN_OUTS = ("monitor-all", "retrain-all", "canary-review-all")
BUCKET_ROOT = "s3://evergreen/fleet"


@dataclass
class Model:
    name: str
    block: str
    config: Path
    staging: Path
    days: list[str]
    drifts_from: int | None  # index of the first drifted batch; None: quiet
    cfg: Any = None
    delivered: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        return f"{BUCKET_ROOT}/{self.name}"


# ------------------------------------------------------------------------------- the data


def _car_loan(staging: Path, name: str, drift: str, start: int | None, seed: int) -> list[str]:
    from evergreen.config import load_config
    from evergreen.simulation.stream import write_demo_stream

    base = load_config(ROOT / "configs" / "demo.yaml")
    cfg = base.model_copy(update={"data": base.data.model_copy(update={"root": str(staging), "rows_per_batch": ROWS, "label_delay_days": 1})})
    info = write_demo_stream(cfg, str(staging), drift=drift, drift_start=start, seed=seed)
    return info.days[:DAYS]


def _cards(staging: Path, start: int) -> list[str]:
    """NannyML's multiclass table cut into 3-day batches, covariates shifted from `start` on."""
    from tests import user_streams

    stream = user_streams.multiclass(staging, every=pd.Timedelta(days=3), max_batches=DAYS, label_delay_batches=0)
    for i, day in enumerate(stream.batch_days):
        if i >= start:
            path = stream.batches / f"{day}.parquet"
            frame = pd.read_parquet(path)
            shifted = _shift(frame)
            shifted.to_parquet(path, index=False)
    return stream.batch_days


def _shift(frame: pd.DataFrame) -> pd.DataFrame:
    """The applicants' numbers move up (a new market): covariate drift the served model never saw."""
    out = frame.copy()
    for column in ("app_behavioral_score", "requested_credit_limit", "credit_bureau_score", "stated_income"):
        out[column] = out[column] * 1.6 + out[column].std() * 1.5
    return out


def _config(model: Model, s: Stack, base: dict) -> Path:
    """The model's YAML: data on s3://, the stack's MLflow server; no credential in it."""
    raw = dict(base)
    raw["name"] = model.name
    raw["data"] = {**raw.get("data", {}), "root": model.root, "training_reference": "reference.parquet",
                   "monitor_reference": "monitor_reference.parquet", "batches": "batches", "labels": "labels"}
    raw["mlflow"] = {**raw.get("mlflow", {}), "tracking_uri": s.state.mlflow_url, "artifact_root": f"mlflow-artifacts:/{model.name}",
                     "model_name": model.name, "ui_url": s.state.mlflow_url}
    raw["mlflow"].pop("password", None)
    raw["mlflow"].pop("username", None)
    # One day of post-change labels starts the retrain (the default waits for two batches:
    # the stream is DAYS long, and this module tests the stack, not the evidence rule).
    raw["retrain"] = {**raw.get("retrain", {}), "min_post_change_rows": 1000}
    path = model.staging.parent / f"{model.name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _put(local: Path, url: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    fs.put_file(str(local), path)


def _cli(s: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **s.env}
    result = subprocess.run([sys.executable, "-m", "evergreen.apps.cli", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"evergreen {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# ------------------------------------------------------------------------------- Prefect


def _runs(deployment: str, since: datetime) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200,
        ))


def _of(runs: list[Any], block: str) -> list[Any]:
    return [r for r in runs if (r.parameters or {}).get("config") == block]


def _settle(since: datetime, quiet: float = 10.0, timeout: float = 900) -> None:
    """Until every deployment run since `since` is final (a killed one once the zombie
    automation crashed it) and no new one appeared for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    seen: dict[str, bool] = {}
    last: dict[str, Any] = {}
    changed = time.monotonic()
    horizon = lambda: datetime.now(UTC) + timedelta(minutes=1)  # noqa: E731 - later schedules are not work now
    while time.monotonic() < deadline:
        runs = [r for name in ("monitor", "retrain", "promote", "canary-review", "rollback") for r in _runs(name, since)
                if not (r.state and r.state.is_scheduled() and r.expected_start_time and r.expected_start_time > horizon())]
        for r in runs:
            last[str(r.id)] = r
            final = bool(r.state and r.state.is_final())
            if seen.get(str(r.id)) != final:
                seen[str(r.id)] = final
                changed = time.monotonic()
        if all(seen.values()) and time.monotonic() - changed >= quiet:
            return
        time.sleep(2)
    stuck = [last[n] for n, final in seen.items() if not final]
    described = [
        f"{r.name} ({r.id}): {r.state.name if r.state else None} since {r.state.timestamp if r.state else None}, "
        f"message {r.state.message if r.state else None!r}, parameters {r.parameters}, infrastructure_pid {r.infrastructure_pid}"
        for r in stuck
    ]
    raise AssertionError(f"runs did not settle within {timeout:.0f} s: {described}")


class Faults:
    """Watches the API and injects each fault once, at the moment it is due."""

    def __init__(self, s: Stack, since: datetime, drifting: list[Model], log: list[str]) -> None:
        self.s, self.since, self.log = s, since, log
        self.kill_retrain_of = drifting[0].block
        self.restart_mlflow_during_promote_of = drifting[1].block
        self.done: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=600)

    def restart_postgres_now(self) -> None:
        stack.restart_postgres(self.s.home, down_seconds=3, log=self.log.append)
        self.done["postgres"] = datetime.now(UTC).isoformat()

    def _running(self, deployment: str, block: str) -> Any:
        return next((r for r in _of(_runs(deployment, self.since), block) if r.state and r.state.is_running()), None)

    def _run(self) -> None:
        # A thread starts with the process's root Prefect settings, not the test's.
        with stack.prefect_settings(self.s.state, self.s.creds):
            self._watch()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if "worker" not in self.done and (run := self._running("retrain", self.kill_retrain_of)):
                    time.sleep(5)  # well inside the retrain
                    self._kill_worker_of(run)
                if "mlflow" not in self.done and self._running("promote", self.restart_mlflow_during_promote_of):
                    time.sleep(2)
                    stack.restart_mlflow(self.s.home, down_seconds=2, log=self.log.append)
                    self.done["mlflow"] = datetime.now(UTC).isoformat()
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.log.append(f"fault injector: {type(exc).__name__}: {exc}")
            self._stop.wait(0.5)

    def _kill_worker_of(self, run: Any) -> None:  # noqa: ANN401
        """SIGKILL the worker that runs the retrain and every flow run it started, the retrain
        among them (as a machine dies), then start a replacement worker. Each run has its own
        process group: the worker is their parent (looked up by process group, as before, no
        worker was found and nothing was killed). A run left running without its worker
        writes its output into a closed pipe: its fate would be chance."""
        pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
        worker = stack.worker_of(self.s.home, pid)
        assert worker is not None and worker.pid is not None, f"no recorded worker is the parent of run {run.name}'s process {pid}"
        runs = _children(worker.pid)
        stack.stop_worker(self.s.home, worker.name, signal.SIGKILL)
        for child in runs:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.done["worker"] = f"{worker.name} and its {len(runs)} flow run process(es), retrain {run.id} ({run.name}) among them, killed"
        self.log.append(self.done["worker"])
        stack.add_worker(self.s.home)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a worker's flow runs)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            if int(stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


# ------------------------------------------------------------------------------- the test


@dataclass
class FleetRun:
    models: list[Model]
    since: datetime
    faults: dict[str, str]
    log: list[str]
    silent: Any = None  # a deployment run made Running that never sends a heartbeat


@pytest.fixture(scope="module")
def fleet(running_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetRun]:
    from prefect.deployments import run_deployment

    from evergreen.config import load_config

    s = running_stack
    work = tmp_path_factory.mktemp("fleet")
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    demo["data"] = {**demo.get("data", {}), "label_delay_days": 1, "rows_per_batch": ROWS}
    models = [
        Model("fleet-loan", "fleet-loan", Path(), work / "fleet-loan", [], LOAN_DRIFT),
        Model("fleet-cards", "fleet-cards", Path(), work / "fleet-cards", [], CARDS_DRIFT),
        Model("fleet-quiet", "fleet-quiet", Path(), work / "fleet-quiet", [], None),
    ]
    models[0].days = _car_loan(models[0].staging, models[0].name, "unit", LOAN_DRIFT, seed=0)
    models[2].days = _car_loan(models[2].staging, models[2].name, "none", None, seed=1)
    models[1].days = _cards(models[1].staging, CARDS_DRIFT)
    # The multiclass model's config: inferred from its data by `evergreen init`, as a user would.
    cards = models[1].staging
    _cli(s, "init", str(cards / "reference.parquet"), "--target", "y_true", "--batches", str(cards / "batches"),
         "--labels", str(cards / "labels"), "--name", "fleet-cards", "--out", str(work / "cards-init.yaml"))
    cards_base = yaml.safe_load((work / "cards-init.yaml").read_text(encoding="utf-8"))
    for m in models:
        m.config = _config(m, s, cards_base if m.name == "fleet-cards" else demo)
        m.cfg = load_config(m.config)
        for file in ("reference.parquet",):
            _put(m.staging / file, f"{m.root}/{file}")
    # The three models are added at once, each with `evergreen register` and its first champion;
    # the fleet starts streaming once each first champion's own gate run ("nothing to gate")
    # has ended, so that no run of the set-up counts as the fleet's.
    setup = datetime.now(UTC) - timedelta(seconds=5)
    with ThreadPoolExecutor(len(models)) as pool:
        list(pool.map(lambda m: (_cli(s, "register", "--config", str(m.config)), _cli(s, "bootstrap", "--config", str(m.config))), models))

    paused = _pause_fan_outs()
    _settle(setup)
    since = datetime.now(UTC)
    silent = _start_silent_run()
    log: list[str] = []
    faults = Faults(s, since, [models[0], models[1]], log)
    faults.start()
    try:
        for i in range(DAYS):
            for m in models:
                if i >= len(m.days):
                    continue
                day = m.days[i]
                _put(m.staging / "batches" / f"{day}.parquet", f"{m.root}/batches/{day}.parquet")
                for labels in sorted((m.staging / "labels").glob("*.parquet")):
                    if labels.stem <= day and labels.stem not in m.delivered:
                        _put(labels, f"{m.root}/labels/{labels.name}")
                        m.delivered.append(labels.stem)
            # The three models' batches are monitored at once (as their schedules would).
            runs = [run_deployment("monitor/monitor", parameters={"config": m.block, "batch": f"{m.root}/batches/{m.days[i]}.parquet"},
                                   timeout=0) for m in models if i < len(m.days)]
            if i == 1:
                # PostgreSQL restarts while those monitor runs are under way.
                _wait_running([r.id for r in runs])
                faults.restart_postgres_now()
            # The next day starts once this day's monitors ended (as the next hour's would);
            # what they started (retrain -> promote -> canary review, the killed retrain's
            # crash and rerun) goes on meanwhile, and the end waits for all of it.
            _wait_final([r.id for r in runs])
        _settle(since)
    finally:
        faults.stop()
        _print_runs(since, log)
    try:
        yield FleetRun(models, since, dict(faults.done), log, silent)
    finally:
        _resume(paused)
        _delete_deployment(SILENT)


SILENT = ("evergreen-test-silent", "silent")  # flow, deployment: the test's own, not the product's


def _start_silent_run() -> Any:
    """What a worker killed as it started a run leaves: a deployment's run that went Running and
    never sent a heartbeat (made Running here; no process runs it). Returns its id."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(SILENT[0])
        deployment_id = client.create_deployment(flow_id=flow_id, name=SILENT[1], paused=True)
        run = client.create_flow_run_from_deployment(deployment_id, name="silent · killed as it started")
        client.set_flow_run_state(run.id, Running(), force=True)
    return run.id


def _delete_deployment(names: tuple[str, str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client, suppress(Exception):
        client.delete_deployment(client.read_deployment_by_name("/".join(names)).id)


def _print_runs(since: datetime, log: list[str]) -> None:
    """What ran (shown with -s or on failure): each run's name, state and message; the faults."""
    for line in log:
        print(f"[fleet] {line}")
    for name in ("monitor", "retrain", "promote", "canary-review", "rollback"):
        for r in _runs(name, since):
            print(f"[fleet] {r.name}: {r.state.name if r.state else None} ({(r.state.message or '')[:160] if r.state else ''})")


def _pause_fan_outs() -> list[Any]:
    """Pause the schedules' fan-out deployments (the test is the clock); returns their ids."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        ids = [d.id for d in client.read_deployments() if d.name in FAN_OUTS and not d.paused]
        for deployment_id in ids:
            client.pause_deployment(deployment_id)
    return ids


def _resume(ids: list[Any]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for deployment_id in ids:
            client.resume_deployment(deployment_id)


def _wait_running(ids: list[Any], timeout: float = 300) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if any((r := client.read_flow_run(i)).state and r.state.is_running() for i in ids):
                return
            time.sleep(0.5)
    raise AssertionError("no monitor run reached Running")


def _wait_final(ids: list[Any], timeout: float = 900) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state and r.state.is_final() for r in runs):
                return
            time.sleep(1)
    raise AssertionError(f"monitor runs not final within {timeout:.0f} s: {[(r.name, r.state and r.state.name) for r in runs]}")


def _alias(m: Model, alias: str) -> str | None:
    from evergreen.adapters import registry, tracking

    tracking.connect(m.cfg.mlflow)
    version = registry.version_by_alias(m.cfg.mlflow.model_name, alias)
    return version.version if version else None


def test_every_fault_was_injected(fleet: FleetRun) -> None:
    assert set(fleet.faults) == {"worker", "postgres", "mlflow"}, (fleet.faults, fleet.log)


def test_each_drifting_model_gets_its_own_retrain_promote_and_canary_review(fleet: FleetRun) -> None:
    retrains, promotes, reviews = (_runs(d, fleet.since) for d in ("retrain", "promote", "canary-review"))
    for m in fleet.models:
        mine = {d: [(r.name, r.state.name) for r in _of(runs, m.block)] for d, runs in
                (("retrain", retrains), ("promote", promotes), ("canary-review", reviews))}
        if m.drifts_from is None:
            assert mine == {"retrain": [], "promote": [], "canary-review": []}, (m.name, mine)
            continue
        done = [state for _, state in mine["retrain"] if state == "Completed"]
        assert len(done) == 1, (m.name, mine)  # exactly one version trained, crashes aside
        assert [s for _, s in mine["promote"] if s == "Completed"], (m.name, mine)
        assert mine["canary-review"], (m.name, mine)
    # Every run of every deployment was for a registered model of the fleet.
    blocks = {m.block for m in fleet.models}
    assert {(r.parameters or {}).get("config") for r in retrains + promotes + reviews} <= blocks


def test_a_killed_retrain_is_crashed_by_the_zombie_automation_and_runs_again(fleet: FleetRun) -> None:
    loan = fleet.models[0]
    runs = _of(_runs("retrain", fleet.since), loan.block)
    states = [r.state.name for r in runs]
    assert "Crashed" in states, states
    crashed = next(r for r in runs if r.state.name == "Crashed")
    assert "heartbeat" in (crashed.state.message or ""), crashed.state.message
    later = [r for r in runs if r.expected_start_time > crashed.expected_start_time and r.state.name == "Completed"]
    assert later, states
    assert later[0].parameters["config"] == loan.block
    assert later[0].parameters.get("trigger") == crashed.parameters.get("trigger")


def test_a_run_killed_before_its_first_heartbeat_is_crashed(fleet: FleetRun) -> None:
    """deploy/automations.yaml's "silent from the start": the fleet ran for minutes after it
    went Running, so its 90 s have long passed."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(fleet.silent)
    assert run.state and run.state.name == "Crashed", run.state
    assert "no heartbeat within 90 s of Running" in (run.state.message or ""), run.state.message


def test_alias_histories_are_complete_and_ordered_per_model(fleet: FleetRun) -> None:
    from evergreen.adapters import registry, tracking

    all_runs = {d: _runs(d, fleet.since) for d in ("retrain", "promote", "canary-review", "rollback")}
    for m in fleet.models:
        tracking.connect(m.cfg.mlflow)
        moves = registry.alias_history(m.cfg.mlflow.model_name)
        times = [mv.time for mv in moves]
        assert times == sorted(times), m.name
        assert (moves[0].alias, moves[0].to_version) == ("champion", "1"), m.name
        own_runs = {str(r.id) for runs in all_runs.values() for r in _of(runs, m.block)}
        other_runs = {str(r.id) for runs in all_runs.values() for r in runs} - own_runs
        assert not [mv for mv in moves if mv.flow_run_id in other_runs], m.name
        if m.drifts_from is None:
            # Its bootstrap's moves only (champion v1; challenger v1, dropped by its gate run).
            assert {mv.to_version for mv in moves} <= {"1", None}, (m.name, moves)
            assert not [mv for mv in moves if datetime.fromisoformat(mv.time) > fleet.since], (m.name, moves)
        else:
            aliases = [(mv.alias, mv.to_version) for mv in moves]
            assert ("challenger", "2") in aliases and ("canary", "2") in aliases, (m.name, aliases)
            assert aliases.index(("challenger", "2")) < aliases.index(("canary", "2")), (m.name, aliases)


def test_every_batch_of_every_model_was_monitored_once(fleet: FleetRun) -> None:
    from evergreen.adapters.store import FileStore

    monitors = _runs("monitor", fleet.since)
    for m in fleet.models:
        ledger = FileStore(m.cfg).read_ledger()
        recorded = sorted(ledger.batches)
        assert [b.rsplit("/", 1)[-1].removesuffix(".parquet") for b in recorded] == m.days or sorted(
            getattr(r, "day", k) for k, r in ledger.batches.items()) == m.days, (m.name, recorded)
        # A monitor run killed with its worker is Crashed and its rerun (same batch) Completed.
        mine = _of(monitors, m.block)
        completed = [r.parameters.get("batch") for r in mine if r.state.name == "Completed"]
        assert set(completed) == {f"{m.root}/batches/{day}.parquet" for day in m.days}, (m.name, [(r.name, r.state.name) for r in mine])
        assert all(r.state.name in ("Completed", "Crashed") for r in mine), (m.name, [(r.name, r.state.name) for r in mine])
