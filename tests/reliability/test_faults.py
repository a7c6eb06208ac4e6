"""Faults: a retrain killed with SIGKILL, the MLflow tracking server killed or frozen in the
middle of promote and rollback, every stopping point of every registry transition, and the
scoring service under steady load while all of that moves aliases.

One world for the module: a real `prefect server` (its repossessor frees the registry lock of
a killed holder), a real `mlflow server` on SQLite reached through a proxy that can stop it at
an exact request, the demo stream with concept drift, and a champion registered by the
retrain flow. Child processes run with the egress guard (tests/egress.py) armed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from evergreen.adapters import io, registry, tracking
from evergreen.adapters.predlog import read_prediction_log
from evergreen.apps.services import executable, scoring_service, service_env
from evergreen.config import ModelConfig, load_config
from evergreen.simulation.stream import write_demo_stream
from flows.canary import canary_review
from flows.promote import promote
from flows.retrain import retrain
from flows.rollback import rollback
from tests.egress import armed_commands, child_env, read_attempts, refuse_outbound
from tests.flows.conftest import ROOT
from tests.reliability.fault_support import (
    Cut,
    FaultProxy,
    MlflowServer,
    RegistryState,
    alias_write,
    read_state,
    registry_outage,
    shared_prefect_server,
    wait_for,
)

pytestmark = pytest.mark.slow

NAME = "loan-faults"
LINEAGE = ("evergreen.dataset_digest", "evergreen.prefect.flow_run_id")


@dataclass
class World:
    cfg: ModelConfig
    config_file: Path
    root: Path
    guard: Path
    api_url: str
    mlflow: MlflowServer
    proxy: FaultProxy
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def store_uri(self) -> str:
        """The server's own store: readable while the server is down."""
        return f"sqlite:///{self.mlflow.db}"

    def state(self, name: str = NAME, required: tuple[str, ...] = LINEAGE) -> RegistryState:
        return read_state(self.store_uri, name, required)

    def child_env(self) -> dict[str, str]:
        return service_env({"PREFECT_API_URL": self.api_url, **child_env(self.guard)})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("faults")
    guard = root / "egress"
    base = load_config(ROOT / "configs" / "demo.yaml")
    timings: dict[str, float] = {}
    with ExitStack() as stack:
        outbound = stack.enter_context(refuse_outbound())  # the set-up too, not only the tests
        began = time.monotonic()
        mlflow_server = MlflowServer(root / "mlflow", extra_env=child_env(guard))
        stack.callback(mlflow_server.stop)
        with ThreadPoolExecutor(2) as pool:  # both servers start while the stream is written
            api = pool.submit(shared_prefect_server, root / "prefect", child_env(guard))
            started = pool.submit(mlflow_server.start)
            staging = root / "stream"
            cfg = base.model_copy(
                update={
                    "name": NAME,
                    "data": base.data.model_copy(update={"root": str(root / "live"), "label_delay_days": 0}),
                    "retrain": base.retrain.model_copy(update={"window": "expanding", "include_reference": False, "cooldown_hours": 0}),
                    # The gate's latency limit is for production machines; this one is shared.
                    "gate": base.gate.model_copy(update={"max_latency_ms": 60_000, "bootstrap_samples": 200}),
                    "canary": base.canary.model_copy(update={"traffic_share": 0.5, "min_predictions": 300, "min_labels": 150, "window_hours": 0}),
                }
            )
            write_demo_stream(cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(staging)})}), str(staging), drift="concept", drift_start=2)
            api_url = api.result()
            started.result()
        timings["servers_and_stream"] = time.monotonic() - began
        proxy = FaultProxy(mlflow_server.url)
        stack.callback(proxy.close)
        cfg = cfg.model_copy(
            update={"mlflow": cfg.mlflow.model_copy(update={"model_name": NAME, "tracking_uri": proxy.url, "artifact_root": str(root / "mlartifacts")})}
        )
        live = Path(cfg.data.root)
        live.mkdir(parents=True)
        for name in ("reference.parquet", "monitor_reference.parquet"):
            shutil.copy(staging / name, live / name)
        config_file = root / "faults.yaml"
        config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
        # Fail fast when the server is gone instead of MLflow's ~2 min of client retries:
        # the flows' task retries are what is under test.
        saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
        stack.callback(lambda: [os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v) for k, v in saved.items()])
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))

        began = time.monotonic()
        # The champion learns the reference alone; later candidates the drifted batches alone,
        # so they are really better on the freshest rows (as in tests/flows/test_promotion.py).
        boot_cfg = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"include_reference": True})})
        boot = retrain(config=boot_cfg, return_state=True)
        assert boot.is_completed(), boot.message
        assert boot.result().bootstrap
        timings["bootstrap_retrain"] = time.monotonic() - began
        shutil.copytree(staging / "batches", live / "batches")
        shutil.copytree(staging / "labels", live / "labels")
        yield World(cfg, config_file, root, guard, api_url, mlflow_server, proxy, timings)
        assert outbound == [], outbound
        print(f"\nfault world timings (s): {timings}; mlflow server starts: {[round(s) for s in mlflow_server.starts]}")


def _sigkill(proc: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _max_version(db: Path, name: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("select max(version) from model_versions where name = ?", (name,)).fetchone()
    return int(row[0] or 0)


# ---------------------------------------------------------------------------- SIGKILL


def test_retrain_killed_in_training_and_in_registration_leaves_no_half_version(world: World) -> None:
    """Two `evergreen retrain` processes: one is SIGKILLed while XGBoost trains, the other
    the moment its new version appears in the registry (inside the registry lock). Nothing
    half-made is reachable by an alias, and the next retrain registers normally."""
    before = world.state()
    assert before.aliases == {"champion": "1", "canary": None, "challenger": "1"} and not before.incomplete
    first = _max_version(world.mlflow.db, NAME)
    command = [executable("evergreen"), "retrain", "--config", str(world.config_file)]
    spawn = lambda: subprocess.Popen(  # noqa: E731
        command, env=world.child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    in_training, in_registration = spawn(), spawn()
    output: dict[str, list[str]] = {"training": [], "registration": []}
    training_started = threading.Event()

    def read(proc: subprocess.Popen, lines: list[str], watch: bool) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            # The flow trains right after the hold-out split; the console says when that ended.
            if watch and "Task run 'hold-out-recent" in line and "Finished" in line:
                training_started.set()

    readers = [
        threading.Thread(target=read, args=(in_training, output["training"], True), daemon=True),
        threading.Thread(target=read, args=(in_registration, output["registration"], False), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        killer = threading.Thread(
            target=lambda: training_started.wait(600) and (time.sleep(0.3), _sigkill(in_training)), daemon=True
        )
        killer.start()
        wait_for(lambda: _max_version(world.mlflow.db, NAME) > first or in_registration.poll() is not None, 600, "the new version", every=0.005)
        _sigkill(in_registration)
        killer.join(600)
    finally:
        for proc in (in_training, in_registration):
            _sigkill(proc)
    for t in readers:
        t.join(10)

    training_log = "".join(output["training"])
    assert in_training.returncode == -signal.SIGKILL and in_registration.returncode == -signal.SIGKILL, training_log[-3000:]
    assert "Task run 'hold-out-recent" in training_log and "Task run 'train-model" not in training_log, training_log[-3000:]
    assert "log-training-run" not in training_log  # it died training: no MLflow run of its own

    after_kill = world.state()
    half = str(first + 1)
    assert _max_version(world.mlflow.db, NAME) == first + 1  # the second process did create it
    assert after_kill.incomplete == {}, after_kill.incomplete  # whatever an alias reaches is whole
    assert after_kill.aliases["champion"] == "1" and after_kill.aliases["canary"] is None
    assert after_kill.aliases["challenger"] in ("1", half)  # the killed move happened or not; never half
    assert after_kill.status[half] == "candidate"
    world.timings["kill_point"] = 1.0 if after_kill.aliases["challenger"] == half else 0.0

    # The next retrain (same data) waits for the killed holder's lock lease to expire, then
    # registers, unless the killed process's version was reached by `challenger`: then it
    # is registered already and the same data is not registered twice (issue 16).
    began = time.monotonic()
    state = retrain(config=world.cfg, trigger="manual", return_state=True)
    world.timings["next_retrain"] = time.monotonic() - began
    assert state.is_completed(), state.message
    result = state.result()
    after = world.state()
    if after_kill.aliases["challenger"] == half:
        assert result.status == "skipped" and result.blocked_by == "same_data", result.message
        assert f"v{half}" in result.message
        assert _max_version(world.mlflow.db, NAME) == first + 1
        assert after.aliases == {"champion": "1", "canary": None, "challenger": half}
    else:
        assert result.version == str(first + 2)
        assert after.aliases == {"champion": "1", "canary": None, "challenger": result.version}
        assert after.status[result.version] == "candidate"
    assert after.incomplete == {} and after.unsettled == []
    assert after.status[half] == "candidate"
    assert read_attempts(world.guard) == []
    assert sum("retrain" in c for c in armed_commands(world.guard)) >= 2


# ------------------------------------------------------------- every stopping point


@dataclass(frozen=True)
class SweepRegistry:
    cfg: ModelConfig
    uri: str
    source: tuple[str, str]  # a logged model (uri, run id) every version is made from


@pytest.fixture(scope="module")
def sweep_registry(tmp_path_factory: pytest.TempPathFactory) -> SweepRegistry:
    """A SQLite registry with one small logged XGBoost model."""
    import mlflow

    from evergreen.engines.training import train_model
    from tests.serving.serving_support import FEATURES, make_config, make_frame

    tmp = tmp_path_factory.mktemp("sweep")
    cfg = make_config(tmp)
    tracking.connect(cfg.mlflow)
    frame = make_frame(600, seed=0)
    model = train_model(frame, cfg.model_copy(update={"training": cfg.training.model_copy(update={"num_boost_round": 5})}))
    exp = tracking.ensure_experiment(cfg.mlflow, cfg.mlflow.training_experiment)
    with mlflow.start_run(experiment_id=exp) as run:
        logged = registry.log_model(model, frame[FEATURES].head(3))
    return SweepRegistry(cfg, cfg.mlflow.resolved_tracking_uri(), (logged.model_uri, run.info.run_id))


def _fresh_model(name: str, source: tuple[str, str], pre: dict[str, str | None], history: list[tuple[str, str]]) -> None:
    """A registered model `name` with versions 1..n (all from one logged model) and aliases
    and status tags as in `pre`; versions in `history` were champion before. Set up with
    plain client calls (no alias history): only the transition under test writes one."""
    import mlflow

    uri, run_id = source
    client = mlflow.MlflowClient()
    registry.ensure_registered_model(name)
    status = {v: "retired" for _, v in history}
    for alias, s in (("challenger", "candidate"), ("canary", "canary"), ("champion", "champion")):
        if pre.get(alias):
            status[pre[alias]] = s
    wanted = max((int(v) for v in [*pre.values(), *(v for _, v in history)] if v), default=0)
    for i in range(1, wanted + 1):
        registry.create_version(name, uri, run_id, {registry.STATUS_TAG: status.get(str(i), "candidate"), **LINEAGE_TAGS})
    for alias, version in pre.items():
        client.set_registered_model_alias(name, alias, version)


LINEAGE_TAGS = dict.fromkeys(LINEAGE, "x")
GATE = {"passed": True, "checks": []}


def _register(cfg: ModelConfig, name: str, src: tuple[str, str]) -> object:
    """The retrain step's registration (`loop.retrain.register_candidate`), its lock a no-op
    (the sweep runs one transition at a time)."""
    from contextlib import nullcontext

    from evergreen.adapters.ports import Ports
    from evergreen.loop.common import Actor
    from evergreen.loop.retrain import register_candidate
    from evergreen.loop.runner import DIRECT

    ports = Ports(
        store=None, snapshots=None, predictions=None, registry=registry.Registry(name),  # type: ignore[arg-type]
        events=None, runs=None, lock=nullcontext,  # type: ignore[arg-type]
    )
    return register_candidate(ports, src[0], src[1], LINEAGE_TAGS, Actor("test"), DIRECT)


# name: (registry before, the transition, aliases after it uninterrupted, serving states
# allowed in between besides before and after, settled states allowed besides before/after)
TRANSITIONS = {
    "register-bootstrap": ({}, _register, {"champion": "1", "challenger": "1"}, [], []),
    "register": ({"champion": "1"}, _register, {"champion": "1", "challenger": "2"}, [], []),
    "start-canary": ({"champion": "1", "challenger": "2"}, lambda cfg, n, src: registry.start_canary(n, "2", GATE, "test", None), {"champion": "1", "canary": "2"}, [], []),
    "reject-challenger": ({"champion": "1", "challenger": "2"}, lambda cfg, n, src: registry.reject_challenger(n, "2", {"passed": False}, ["worse"], "test", None), {"champion": "1"}, [], []),
    "promote-canary": ({"champion": "1", "canary": "2"}, lambda cfg, n, src: registry.promote_canary(n, "2", "better", "test", None), {"champion": "2"}, [], []),
    "reject-canary": ({"champion": "1", "canary": "2"}, lambda cfg, n, src: registry.reject_canary(n, "2", "worse", "test", None), {"champion": "1"}, [], []),
    # Two aliases change: the canary goes first, then the champion. One state between, in
    # which v2 (the champion being rolled back) serves alone; a re-run completes it.
    "rollback": (
        {"champion": "2", "canary": "3"},
        lambda cfg, n, src: registry.roll_back_champion(n, "1", "bad", "test", None),
        {"champion": "1"},
        [("2", None)],
        [{"aliases": {"champion": "2", "canary": None, "challenger": None}, "status": {"1": "retired", "2": "champion", "3": "rejected"}}],
    ),
}


def _full(aliases: dict[str, str]) -> dict[str, str | None]:
    return {a: aliases.get(a) for a in ("champion", "canary", "challenger")}


def _pre_view(pre: dict[str, str | None], versions: int, history: list) -> dict:
    status = dict.fromkeys((str(i) for i in range(1, versions + 1)), "candidate")
    status.update({v: "retired" for _, v in history})
    for alias, s in (("challenger", "candidate"), ("canary", "canary"), ("champion", "champion")):
        if pre.get(alias):
            status[pre[alias]] = s
    return {"aliases": _full(pre), "status": status}


def test_every_stopping_point_of_every_registry_transition_is_consistent(sweep_registry: SweepRegistry) -> None:
    """For each transition, the registry goes away before its 1st, 2nd, ... write. Right then
    the service would serve the state before or after the transition (rollback: or its one
    step between) and every alias reaches a whole version; the next registry operation
    (`settle`, which every one runs first under the lock) leaves the state before or after with nothing pending; running
    the transition again ends in the state after (a registration: the next one works)."""
    cfg, src = sweep_registry.cfg, sweep_registry.source
    tracking.connect(cfg.mlflow)
    report: dict[str, int] = {}
    for kind, (pre, call, post, between, settled_between) in TRANSITIONS.items():
        history = [("champion", "1")] if kind == "rollback" else []
        runs = 0

        def fresh(label: str, kind: str = kind, pre: dict = pre, history: list = history) -> tuple[str, ModelConfig]:
            name = f"sweep-{kind}-{label}"
            _fresh_model(name, src, pre, history)
            return name, cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(update={"model_name": name})})

        name, named = fresh("all")
        with registry_outage(at=10**9) as counter:
            call(named, name, src)
        writes = counter.seen
        want = read_state(sweep_registry.uri, name, LINEAGE)
        assert want.aliases == _full(post), (kind, want.aliases)
        versions = len(want.status) - (1 if kind.startswith("register") else 0)
        allowed_serving = {(pre.get("champion"), pre.get("canary")), want.serving, *between}
        for k in range(1, writes + 1):
            name, named = fresh(str(k))
            with registry_outage(at=k) as cut, pytest.raises(Exception, match="unreachable"):
                call(named, name, src)
            assert cut.fired, (kind, k)
            where = f"{kind}: registry lost before write {k}/{writes} ({cut.request})"
            now = read_state(sweep_registry.uri, name, LINEAGE)
            assert now.incomplete == {}, (where, now.incomplete)
            assert now.serving in allowed_serving, (where, now.aliases)
            registry.settle(name, "test")  # what the next registry operation does first
            settled = read_state(sweep_registry.uri, name, LINEAGE)
            assert settled.unsettled == [], (where, settled.unsettled)
            if kind.startswith("register"):
                # At most an unreachable candidate is left, and the next registration works.
                assert settled.aliases in (_full(pre), _full({"champion": "1"}), want.aliases), (where, settled.aliases)
                _register(named, name, src)
                final = read_state(sweep_registry.uri, name, LINEAGE)
                newest = str(max(int(v) for v in final.status))
                assert final.aliases["champion"] is not None and final.aliases["challenger"] == newest, (where, final.aliases)
                assert final.incomplete == {} and final.unsettled == [] and final.status[newest] in ("candidate", "champion")
            else:
                views = [_pre_view(pre, versions, history), want.view(), *settled_between]
                assert settled.view() in views, (where, settled.view())
                call(named, name, src)  # the re-run
                assert read_state(sweep_registry.uri, name, LINEAGE).view() == want.view(), where
            runs += 1
        report[kind] = runs
    print(f"\nregistry writes per transition (the registry was lost before each): {report}")
    assert all(report.values())


# ------------------------------------------------------- the service under steady load


@dataclass
class Traffic:
    """A load generator on 127.0.0.1: `dataframe_split` requests of 20 rows with ids never
    sent twice, one after the other, from a thread; every answer (or failure) is kept."""

    url: str
    pool: pd.DataFrame
    features: list[str]
    results: list[tuple[int, list, list, list]] = field(default_factory=list)  # status, ids, versions, aliases
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="load-generator", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        offset, i = 0, 0
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                if i >= len(self.pool):
                    offset, i = offset + 10_000_000, 0  # fresh ids (without labels) once the pool is used
                rows = self.pool.iloc[i : i + 20]
                i += 20
                ids = (rows["id"] + offset).tolist()
                data = rows[self.features].astype(object).where(rows[self.features].notna(), None).values.tolist()
                body = {"dataframe_split": {"columns": ["id", *self.features], "data": [[k, *r] for k, r in zip(ids, data, strict=True)]}}
                try:
                    r = client.post("/invocations", json=body)
                    answer = r.json() if r.status_code == 200 else {}
                    self.results.append((r.status_code, ids, answer.get("versions", []), answer.get("aliases", [])))
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code}: {r.text[:300]}")
                except Exception as exc:  # a dropped connection is a failed request too
                    self.errors.append(repr(exc))
                time.sleep(0.01)

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)

    def served(self, version: str, alias: str | None = None) -> int:
        return sum(1 for _, _, vs, als in list(self.results) for v, a in zip(vs, als, strict=True) if v == version and (alias is None or a == alias))


@dataclass
class Service:
    traffic: Traffic
    stack: ExitStack
    log_dir: str

    def close(self) -> None:
        self.traffic.halt()
        self.stack.close()  # SIGTERM: the service flushes its prediction log on the way out


@pytest.fixture(scope="module")
def service(world: World) -> Iterator[Service]:
    """`evergreen serve` (a child process, egress guard armed) reading the registry through
    the proxy, and the load generator sending it drifted, labelled rows."""
    stack = ExitStack()
    url = stack.enter_context(scoring_service(world.config_file, world.root / "serve.log", extra_env=child_env(world.guard)))
    batches = io.list_batches(world.cfg.data.path("batches"))[2:]
    pool = pd.concat([io.read_table(b.path) for b in batches], ignore_index=True)
    traffic = Traffic(url, pool, list(world.cfg.columns.features))
    traffic.start()
    svc = Service(traffic, stack, world.cfg.data.path("predictions_log"))
    wait_for(lambda: len(traffic.results) >= 20, 60, "the first answers")
    yield svc
    svc.close()


def test_tracking_server_killed_during_promote(world: World, service: Service) -> None:
    """SIGKILL the MLflow server right after it applied the `canary` alias write of promote
    (the answer never reaches the flow): the flow fails after its task retries, the registry
    read straight from the server's store is before-or-after, and after a restart the re-run
    finishes the promotion."""
    pre = world.state()
    challenger = pre.aliases["challenger"]
    assert challenger is not None and pre.aliases["canary"] is None
    cut = world.proxy.arm(Cut(at=1, mode="after", match=alias_write, on_cut=world.mlflow.kill), passthrough_when_down=True)
    state = promote(config=world.cfg, return_state=True)
    assert cut.fired and "registered-models/alias" in cut.request
    assert state.is_failed(), state.message
    mid = world.state()  # the server is down: read its store
    assert mid.incomplete == {}
    assert mid.serving in (pre.serving, (pre.aliases["champion"], challenger)), mid.aliases
    assert mid.aliases["canary"] == challenger  # the write that was cut had been applied
    served_during = len(service.traffic.results)

    began = time.monotonic()
    world.mlflow.start()
    world.timings["mlflow_restart"] = time.monotonic() - began
    world.proxy.restore()
    assert len(service.traffic.results) > served_during  # the service kept answering while it was down
    again = promote(config=world.cfg, return_state=True)
    assert again.is_completed(), again.message
    post = world.state()
    assert post.aliases == {"champion": pre.aliases["champion"], "canary": challenger, "challenger": None}
    assert post.status[challenger] == "canary" and post.unsettled == [] and post.incomplete == {}


def test_canary_review_promotes_under_load(world: World, service: Service) -> None:
    canary = world.state().aliases["canary"]
    champion = world.state().aliases["champion"]
    wait_for(lambda: service.traffic.served(canary, "canary") >= 400, 180, f"400 rows served by canary v{canary}")
    deadline = time.monotonic() + 180
    while True:
        result = canary_review(config=world.cfg, return_state=True).result()
        if result.decision != "pending" or time.monotonic() > deadline:
            break
        time.sleep(3)  # the service flushes its log every 5 s
    assert result.decision == "promoted", result.reasons
    post = world.state()
    assert post.aliases == {"champion": canary, "canary": None, "challenger": None}
    assert post.status[champion] == "retired"


def test_tracking_server_frozen_during_rollback(world: World, service: Service) -> None:
    """SIGSTOP the MLflow server right after it applied the `champion` alias write of a
    rollback: the flow's requests time out and it fails; the registry is before-or-after;
    once the server runs again the re-run finds the rollback done and finishes its records."""
    pre = world.state()
    bad = pre.aliases["champion"]
    cut = world.proxy.arm(Cut(at=1, mode="after", match=alias_write, on_cut=world.mlflow.freeze), passthrough_when_down=True)
    state = rollback(config=world.cfg, from_version=bad, reason="fault test", return_state=True)
    assert cut.fired
    assert state.is_failed(), state.message
    mid = world.state()  # the server is frozen: read its store
    assert mid.incomplete == {}
    assert mid.serving in (pre.serving, ("1", None)), mid.aliases
    world.mlflow.thaw()
    world.proxy.restore()
    again = rollback(config=world.cfg, from_version=bad, reason="fault test", return_state=True)
    assert again.is_completed(), again.message
    post = world.state()
    assert post.aliases == {"champion": "1", "canary": None, "challenger": None}
    assert post.status["1"] == "champion" and post.status[bad] == "retired"
    assert post.unsettled == [] and post.incomplete == {}
    moves = [m for m in registry.alias_history(NAME) if m.alias == "champion"]
    assert moves[-1].from_version == bad and moves[-1].to_version == "1" and moves[-1].reason == "rollback: fault test"


def test_scoring_service_served_every_request_and_logged_each_prediction_once(world: World, service: Service) -> None:
    """Through the promote (with the tracking server killed and restarted), the canary review
    and the rollback (with the server frozen): zero failed requests, and the prediction log
    holds every answered row exactly once, with the version and alias that answered it."""
    time.sleep(6)  # let the service pick up the rollback before the load stops
    service.close()
    traffic = service.traffic
    assert traffic.errors == [], traffic.errors[:5]
    assert {status for status, *_ in traffic.results} == {200}
    versions_seen = {v for _, _, vs, _ in traffic.results for v in vs}
    promoted = [m.to_version for m in registry.alias_history(NAME) if m.alias == "champion" and m.reason.startswith("canary review")]
    assert {"1", *promoted} <= versions_seen and promoted  # champion, canary, promoted, rolled back
    answered = {i: (v, a) for _, ids, vs, als in traffic.results for i, v, a in zip(ids, vs, als, strict=True)}
    assert len(answered) == sum(len(ids) for _, ids, _, _ in traffic.results)  # ids never repeat
    log = read_prediction_log(service.log_dir)
    assert len(log) == len(answered)
    assert log["id"].is_unique
    logged = dict(zip(log["id"].tolist(), zip(log["model_version"].astype(str), log["alias"].astype(str), strict=True), strict=True))
    assert logged == answered
    phases = [tuple(sorted(set(zip(vs, als, strict=True)))) for _, _, vs, als in traffic.results]
    print(f"\n{len(traffic.results)} requests, {len(answered)} rows; (version, alias) mixes seen: {sorted(set(phases))}")
    assert read_attempts(world.guard) == []
