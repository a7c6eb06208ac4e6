"""Security: nothing leaves the machine, models are never unpickled, the scoring service
answers bad requests with 4xx (fuzzed), and secrets stay in secret fields and blocks.

The loop of this module runs monitor, retrain, promote and the scoring service once, with a
recognizable tracking password and webhook URL configured, every non-loopback connection
refused and counted in this process (tests/egress.py) and in every child it starts (the
Prefect server, the scoring service: egress_site/sitecustomize.py).
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import SecretStr

from evergreen.adapters import io, registry, tracking
from evergreen.apps.services import scoring_service
from evergreen.config import ModelConfig, load_config
from evergreen.simulation.stream import write_demo_stream
from flows.monitor import monitor
from flows.promote import promote
from flows.retrain import retrain
from tests.egress import armed_commands, child_env, read_attempts, refuse_outbound
from tests.flows.conftest import ROOT
from tests.reliability.fault_support import (
    shared_prefect_guard,
    shared_prefect_home,
    shared_prefect_server,
)

pytestmark = pytest.mark.slow

NAME = "loan-secure"
PASSWORD = "pw-Evergreen-7f3c9a1e-do-not-leak"
HOOK_TOKEN = "hook-Evergreen-5b8d2e64-do-not-leak"
SECRETS = (PASSWORD, HOOK_TOKEN)


@dataclass
class SecureLoop:
    cfg: ModelConfig
    root: Path
    config_file: Path  # the user's own config file: the one place the test wrote the secrets
    guard: Path
    attempts: list[str]
    since: float
    timings: dict[str, float]
    flow_runs: list[str] = field(default_factory=list)
    webhook_calls: list[tuple[str, bytes]] = field(default_factory=list)
    scored: int = 0


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A local stand-in for the team's chat webhook (automations may call it)."""
    calls: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            calls.append((self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


def _with_secrets(cfg: ModelConfig) -> dict:
    """The config as a YAML mapping with the secrets in clear (model_dump masks them)."""
    raw = cfg.model_dump(mode="json")
    raw["mlflow"]["password"] = cfg.mlflow.password.get_secret_value()
    raw["notifications"]["webhook_url"] = cfg.notifications.webhook_url.get_secret_value()
    return raw


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureLoop]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from blocks.model_config import EvergreenModel, block_document_name
    from blocks.notifications import save_notifications

    root = tmp_path_factory.mktemp("security")
    guard = root / "egress"
    base = load_config(ROOT / "configs" / "demo.yaml")
    timings: dict[str, float] = {}
    clock = [time.monotonic()]

    def lap(step: str) -> None:
        now = time.monotonic()
        timings[step] = round(now - clock[0], 1)
        clock[0] = now

    with ExitStack() as stack:
        attempts = stack.enter_context(refuse_outbound())
        api_url = shared_prefect_server(root / "prefect", child_env(guard))
        lap("prefect server")
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        hook_url, calls = stack.enter_context(webhook_receiver())
        since = time.time()
        cfg = base.model_copy(
            update={
                "name": NAME,
                "data": base.data.model_copy(update={"root": str(root / "live"), "label_delay_days": 0}),
                "retrain": base.retrain.model_copy(update={"window": "expanding", "cooldown_hours": 0}),
                "gate": base.gate.model_copy(update={"max_latency_ms": 60_000, "bootstrap_samples": 100}),
                # What is under test is what leaves the machine and where secrets go, not the
                # model: fewer trees keep the two retrains short.
                "training": base.training.model_copy(update={"num_boost_round": 50}),
                "mlflow": base.mlflow.model_copy(
                    update={
                        "model_name": NAME,
                        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                        "artifact_root": str(root / "mlartifacts"),
                        "username": "evergreen",
                        "password": SecretStr(PASSWORD),
                    }
                ),
                "notifications": base.notifications.model_copy(update={"webhook_url": SecretStr(f"{hook_url}/{HOOK_TOKEN}")}),
            }
        )
        staging = root / "stream"
        write_demo_stream(cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(staging)})}), str(staging), drift="covariate", drift_start=2)
        live = Path(cfg.data.root)
        live.mkdir(parents=True)
        for name in ("reference.parquet", "monitor_reference.parquet"):
            shutil.copy(staging / name, live / name)
        config_file = root / "secure.yaml"
        config_file.write_text(yaml.safe_dump(_with_secrets(cfg)), encoding="utf-8")
        lap("stream")

        # What `evergreen register` does: the config (secrets included) as a block, the
        # webhook as a Webhook block with the notification automations that call it.
        EvergreenModel.register_type_and_schema()
        EvergreenModel.from_config(cfg).save(block_document_name(NAME), overwrite=True)
        save_notifications(cfg)
        block = block_document_name(NAME)
        lap("blocks")
        states = [retrain(config=block, return_state=True)]  # deployments pass the block name
        lap("retrain (bootstrap)")
        shutil.copytree(staging / "batches", live / "batches")
        shutil.copytree(staging / "labels", live / "labels")
        batch = io.list_batches(cfg.data.path("batches"))[6].path
        states.append(monitor(config=block, batch=batch, return_state=True))
        lap("monitor")
        states.append(retrain(config=cfg, trigger="manual", return_state=True))  # the CLI passes the object
        lap("retrain")
        states.append(promote(config=cfg, return_state=True))
        lap("promote")
        assert states[0].is_completed() and states[2].is_completed(), [s.message for s in states]
        assert states[3].is_completed() or states[3].name == "GateFailed", states[3].message
        assert states[1].is_completed() or states[1].is_failed()  # ran to a decision either way

        secure = SecureLoop(cfg, root, config_file, guard, attempts, since, timings, webhook_calls=calls)
        with get_client(sync_client=True) as client:
            secure.flow_runs = [str(s.state_details.flow_run_id) for s in states]
            assert all(client.read_flow_run(i) for i in secure.flow_runs)

        rows = io.read_table(batch).head(40)
        features = ["id", *cfg.columns.features]
        body = {"dataframe_split": {"columns": features, "data": rows[features].astype(object).where(rows[features].notna(), None).values.tolist()}}
        with scoring_service(config_file, root / "serve.log", extra_env=child_env(guard)) as url:
            for _ in range(5):
                r = httpx.post(f"{url}/invocations", json=body, timeout=60)
                assert r.status_code == 200, r.text
                secure.scored += 1
        lap("scoring service")
        time.sleep(3)  # automations the events triggered call the webhook asynchronously
        print(f"\nsecurity loop timings (s): {timings}; webhook calls: {len(calls)}")
        yield secure


# ------------------------------------------------------------------- no outbound connection


def test_no_outbound_connection_from_the_loop_or_its_children(loop: SecureLoop) -> None:
    """Monitor, retrain (twice), promote in this process, the scoring service and the Prefect
    server as children: zero attempts to reach anything but 127.0.0.1."""
    assert loop.scored == 5
    assert loop.attempts == [], loop.attempts
    folders = [loop.guard] + ([shared_prefect_guard()] if shared_prefect_guard() else [])
    for folder in folders:
        assert read_attempts(folder) == [], read_attempts(folder)
    armed = [c for f in folders for c in armed_commands(f)]
    assert any(" serve " in f" {c} " for c in armed), armed  # the scoring service was guarded
    assert any("prefect" in c and "server" in c for c in armed), armed  # and so was the Prefect server


def test_the_guard_counts_and_refuses_what_it_should(tmp_path: Path) -> None:
    """The control: the same guard, in a child and here, refuses and records a connection to
    a TEST-NET address, a name resolution and a datagram, and lets loopback through."""
    code = (
        "import socket\n"
        "for f in (lambda: socket.create_connection(('192.0.2.1', 443), timeout=2),\n"
        "          lambda: socket.getaddrinfo('example.org', 443),\n"
        "          lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('198.51.100.7', 53))):\n"
        "    try: f(); print('NOT REFUSED')\n"
        "    except OSError: print('refused')\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); socket.create_connection(s.getsockname(), timeout=2); print('loopback ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**child_env(tmp_path), **_base_env()}, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["refused", "refused", "refused", "loopback", "ok"], out.stdout + out.stderr
    assert len(read_attempts(tmp_path)) == 3 and armed_commands(tmp_path)
    import socket

    with refuse_outbound() as seen, pytest.raises(ConnectionRefusedError):
        socket.socket().connect(("203.0.113.9", 80))
    assert seen == ["connect ('203.0.113.9', 80)"]


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EVERGREEN_TEST_EGRESS_LOG")}


# -------------------------------------------------------------------------------- secrets


def _files_holding(folder: Path, secrets: tuple[str, ...], skip: tuple[Path, ...] = ()) -> dict[str, list[str]]:
    """Files under `folder` whose bytes contain a secret (plain or JSON-escaped)."""
    found: dict[str, list[str]] = {}
    needles = [s.encode() for s in secrets] + [json.dumps(s).strip('"').encode() for s in secrets]
    for path in folder.rglob("*"):
        if not path.is_file() or path in skip:
            continue
        data = path.read_bytes()
        hits = [n.decode() for n in needles if n in data]
        if hits:
            found[str(path)] = sorted(set(hits))
    return found


def test_secrets_stay_in_secret_fields_and_blocks(loop: SecureLoop) -> None:
    """The tracking password and the webhook URL were configured and used; afterwards neither
    is in the Prefect logs, artifacts, flow-run parameters or events (read back from the API
    and from the server's database), nor in MLflow's params, tags, artifacts or store, nor in
    any file the loop or the scoring service wrote, nor in prefect.yaml."""
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from blocks.model_config import EvergreenModel, block_document_name
    from blocks.notifications import webhook_block_name

    # They are where they belong, usable.
    saved = EvergreenModel.load(block_document_name(NAME)).to_config()
    assert saved.mlflow.password.get_secret_value() == PASSWORD
    assert HOOK_TOKEN in saved.notifications.webhook_url.get_secret_value()
    assert HOOK_TOKEN in Webhook.load(webhook_block_name(NAME)).url.get_secret_value()
    # The grep finds them where the test itself wrote them (the control).
    assert set(_files_holding(loop.config_file.parent, SECRETS, ())[str(loop.config_file)]) == set(SECRETS)

    leaks: dict[str, object] = {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=loop.flow_runs)))
        assert len(runs) == len(loop.flow_runs)
        params = json.dumps([r.parameters for r in runs], default=str)
        logs, offset = [], 0
        while batch := client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=loop.flow_runs)), limit=200, offset=offset):
            logs += batch
            offset += len(batch)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(), limit=200)
    assert logs and artifacts and params  # there is something to search
    texts = {
        "flow-run parameters": params,
        "logs": "\n".join(log.message for log in logs),
        "artifacts": json.dumps([{"key": a.key, "data": a.data, "description": a.description} for a in artifacts], default=str),
    }
    for where, text in texts.items():
        hits = [s for s in SECRETS if s in text]
        if hits:
            leaks[where] = hits
    assert "**********" in params  # the password parameter is there, masked

    # MLflow: params and tags of every run, registry tags, every artifact, the store itself.
    tracking.connect(loop.cfg.mlflow)
    import mlflow

    client = mlflow.MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=1000)
    assert runs
    mlflow_meta = json.dumps([{"params": r.data.params, "tags": r.data.tags} for r in runs])
    mlflow_meta += json.dumps([v.tags for v in registry.list_versions(NAME)]) + json.dumps(client.get_registered_model(NAME).tags)
    if hits := [s for s in SECRETS if s in mlflow_meta]:
        leaks["mlflow params/tags"] = hits
    # Every file: data, snapshots, ledger, prediction log, MLflow store and artifacts, the
    # service's log, the Prefect server's home (its database holds logs, artifacts, events,
    # parameters; block documents are stored encrypted).
    files = _files_holding(loop.root, SECRETS, skip=(loop.config_file,))
    files |= _files_holding(shared_prefect_home(), SECRETS)
    if files:
        leaks["files"] = files
    prefect_yaml = (ROOT / "prefect.yaml").read_text(encoding="utf-8")
    assert not any(s in prefect_yaml for s in SECRETS)
    assert not _plain_secrets(yaml.safe_load(prefect_yaml)), _plain_secrets(yaml.safe_load(prefect_yaml))
    assert not [c for c in loop.webhook_calls if PASSWORD.encode() in c[1]]
    assert leaks == {}, leaks


def _plain_secrets(node: object, path: str = "") -> list[str]:
    """Keys of prefect.yaml that look like credentials and hold a literal value (a
    `{{ prefect.blocks... }}` reference is fine)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if any(w in str(key).lower() for w in ("password", "secret", "token", "webhook_url", "api_key")) and isinstance(value, str) and "{{" not in value:
                found.append(here)
            found += _plain_secrets(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _plain_secrets(value, f"{path}[{i}]")
    return found


# ------------------------------------------------------------- models: native format only


_AUDIT: dict[str, list] = {"watching": [], "seen": []}


def _audit(event: str, args: tuple) -> None:
    # Every unpickler (pickle, _pickle, cloudpickle, joblib) raises this when it resolves a
    # class or function named in the stream: what loading a pickled model always does.
    if event == "pickle.find_class" and _AUDIT["watching"]:
        _AUDIT["seen"].append(f"{event} {args}")


@contextmanager
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Within the block, record (and refuse) every unpickling: the audit event above, plus
    the loaders themselves (pickle, cloudpickle, joblib), which would also catch pickles of
    plain data."""
    if not _AUDIT.get("installed"):
        sys.addaudithook(_audit)
        _AUDIT["installed"] = [True]
    calls: list[str] = []

    def refuse(name: str):  # noqa: ANN202
        def loader(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(name)
            raise AssertionError(f"{name} called while loading a model")

        return loader

    import cloudpickle
    import joblib

    for module, attr in ((pickle, "load"), (pickle, "loads"), (cloudpickle, "load"), (cloudpickle, "loads"), (joblib, "load")):
        monkeypatch.setattr(module, attr, refuse(f"{module.__name__}.{attr}"))
    _AUDIT["seen"].clear()
    _AUDIT["watching"].append(True)
    try:
        yield calls
    finally:
        _AUDIT["watching"].pop()
        calls.extend(_AUDIT["seen"])
        monkeypatch.undo()


@dataclass
class SmallRegistry:
    cfg: ModelConfig
    version: str
    trap_pickle: str  # a version whose model.ubj is a pickle that would create `marker`
    trap_sklearn: str  # a version logged by mlflow.sklearn (a pickle, no model.ubj)
    marker: Path


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - what a malicious model file does when unpickled
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def small_registry(tmp_path_factory: pytest.TempPathFactory) -> SmallRegistry:
    """One XGBoost champion logged by Evergreen, and two versions that are pickles."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from evergreen.engines.training import train_model
    from tests.serving.serving_support import FEATURES, make_config, make_frame

    tmp = tmp_path_factory.mktemp("no-pickle")
    cfg = make_config(tmp)
    name = cfg.mlflow.model_name
    tracking.connect(cfg.mlflow)
    exp = tracking.ensure_experiment(cfg.mlflow, cfg.mlflow.training_experiment)
    frame = make_frame(2000, seed=0)
    model = train_model(frame, cfg)
    with mlflow.start_run(experiment_id=exp) as run:
        logged = registry.log_model(model, frame[FEATURES].head(5))
    version = registry.create_version(name, logged.model_uri, run.info.run_id, {registry.STATUS_TAG: "champion"}).version
    registry.move_alias(name, registry.CHAMPION, version, "test", "test")

    marker = tmp / "unpickled-marker"
    trap = tmp / "trap"
    shutil.copytree(Path(mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp / "real"))), trap)
    (trap / "model.ubj").write_bytes(pickle.dumps(_Boom(marker)))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifacts(str(trap), "model")
    trap_pickle = registry.create_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id, {}).version
    with mlflow.start_run(experiment_id=exp) as run:
        sk = mlflow.sklearn.log_model(LogisticRegression().fit(frame[["x1", "x2"]], frame["target"]), name="model", pip_requirements=["scikit-learn"])
    trap_sklearn = registry.create_version(name, sk.model_uri, run.info.run_id, {}).version
    return SmallRegistry(cfg, version, trap_pickle, trap_sklearn, marker)


def test_models_load_from_the_registry_in_xgboost_format_never_unpickled(small_registry: SmallRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import mlflow
    import xgboost as xgb

    from evergreen.apps.serving.models import ModelStore, load_from_registry

    reg = small_registry
    name = reg.cfg.mlflow.model_name
    tracking.connect(reg.cfg.mlflow)
    with no_unpickling(monkeypatch) as unpickled:
        loaded = registry.load_alias(name, registry.CHAMPION)  # retrain, promote, monitor
        promoted = registry.Registry(name).load_alias(registry.CHAMPION)  # the promote step's port
        served = load_from_registry(name, reg.version)  # the scoring service
        store = ModelStore(name, 0.0)
        assert store.refresh() and store.snapshot.champion.version == reg.version
        with pytest.raises(Exception, match="model.ubj|[Pp]arse|[Bb]inary|UBJSON|format"):
            registry.load_version(name, reg.trap_pickle)
        with pytest.raises(FileNotFoundError, match="model.ubj"):
            registry.load_version(name, reg.trap_sklearn)
    assert unpickled == []
    assert not reg.marker.exists()  # the malicious "model" never ran
    assert loaded.version.version == promoted.version.version == served.version == reg.version
    # Loaded from the configured registry: the version and run it names there.
    assert store.snapshot.champion.run_id == registry.get_version(name, reg.version).run_id

    # What was logged is XGBoost's own format: UBJSON, no pickle anywhere in the model.
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{reg.version}", dst_path=str(tmp_path)))
    meta = yaml.safe_load((local / "MLmodel").read_text())
    assert meta["flavors"]["xgboost"]["model_format"] == "ubj" and meta["flavors"]["xgboost"]["data"] == "model.ubj"
    names = [p.name for p in local.rglob("*") if p.is_file()]
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib", ".cloudpickle"))], names
    raw = (local / "model.ubj").read_bytes()
    assert raw[:1] == b"{"  # a UBJSON object, not a pickle stream (b"\x80")
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    assert booster.num_boosted_rounds() > 0


# ------------------------------------------------------------ the scoring service, fuzzed

FUZZ_LIMITS = {"max_body_bytes": 16_384, "max_rows": 50}


@pytest.fixture(scope="module")
def fuzz_service(small_registry: SmallRegistry, tmp_path_factory: pytest.TempPathFactory):
    """The real app (registry-backed model store, prediction log writer) in process, for an
    ASGI client; the log is written once, at shutdown."""
    from starlette.testclient import TestClient

    from evergreen.apps.serving.app import LogSettings, create_app
    from evergreen.apps.serving.schema import RequestLimits

    log_dir = tmp_path_factory.mktemp("fuzz-log")
    app = create_app(
        small_registry.cfg,
        refresh_seconds=30,
        limits=RequestLimits(**FUZZ_LIMITS),
        log_settings=LogSettings(directory=str(log_dir), flush_rows=10**9, flush_seconds=3600),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").json()
            time.sleep(0.2)
        yield client, app, log_dir


def _fuzz_strategies():
    from hypothesis import strategies as st

    from tests.serving.serving_support import FEATURES

    scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=12)
    anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
    good = {
        "id": st.integers(0, 10**6) | st.text(min_size=1, max_size=8),
        "x1": st.floats(-5, 5) | st.integers(-5, 5) | st.none(),
        "x2": st.floats(-5, 5) | st.none(),
        "color": st.sampled_from(["red", "green", "blue", "purple"]) | st.none(),
        "flag": st.booleans() | st.sampled_from(["true", "False"]) | st.none(),
        "timestamp": st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01", "not a time"]) | st.none(),
    }

    @st.composite
    def record(draw, clean: bool) -> dict:  # noqa: ANN001
        row = {k: draw(v) if clean or draw(st.integers(0, 9)) else draw(v | anything) for k, v in good.items()}
        if not clean:
            for key in draw(st.sets(st.sampled_from(sorted(row)), max_size=2)):
                del row[key]
        row.update(draw(st.dictionaries(st.text(max_size=5), scalars, max_size=2)))
        return row

    @st.composite
    def body(draw) -> tuple[bytes, str | None]:  # noqa: ANN001
        rows = draw(st.lists(record(clean=draw(st.booleans())), min_size=0, max_size=8))
        columns = sorted({k for r in rows for k in r}) or ["id", *FEATURES]
        kind = draw(st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "inputs-columns", "split-ragged", "two-formats", "any"]))
        if kind == "dataframe_split":
            payload = {"dataframe_split": {"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]}}
        elif kind == "split-ragged":
            payload = {"dataframe_split": {"columns": draw(st.lists(anything, max_size=4)), "data": draw(anything)}}
        elif kind == "inputs-columns":
            payload = {"inputs": {c: [r.get(c) for r in rows] for c in columns}}
        elif kind == "two-formats":
            payload = {"dataframe_records": rows, "instances": rows}
        elif kind == "any":
            payload = draw(anything)
        else:
            payload = {kind: rows}
        return json.dumps(payload, allow_nan=True).encode(), "application/json"

    raw = st.tuples(st.binary(max_size=300), st.sampled_from(["application/json", "text/csv", "text/plain", None, "application/json; charset=utf-8"]))
    # Bad encodings and lone surrogates: JSON text that is not valid UTF-8 / Unicode.
    broken = st.tuples(
        st.sampled_from([b'{"dataframe_records": [{"id": "\\ud800", "x1": 1, "x2": 1, "color": "red", "flag": true}]}',
                         b'{"dataframe_records": [{"id": 1, "x1": 1, "x2": 1, "color": "\\udfff", "flag": true}]}',
                         b'{"dataframe_records": [{"id": "\xff\xfe", "x1": 1}]}',
                         b"id,x1,x2,color,flag\n1,1,2,\xff,true\n"]),
        st.sampled_from(["application/json", "text/csv"]),
    )
    oversized = st.integers(FUZZ_LIMITS["max_body_bytes"] + 1, 4 * FUZZ_LIMITS["max_body_bytes"]).map(
        lambda n: (b'{"dataframe_records": [' + b'{"id": 1, "x1": 0.5},' * (n // 21) + b'{"id": 2}]}', "application/json")
    )
    many_rows = st.integers(FUZZ_LIMITS["max_rows"] + 1, 200).map(
        lambda n: (json.dumps({"dataframe_records": [{"id": i, "x1": 0.1, "x2": 0.2, "color": "red", "flag": True} for i in range(n)]}).encode(), "application/json")
    )
    return body() | raw | broken | oversized | many_rows


def test_fuzzed_requests_get_4xx_or_an_answer_never_a_500(fuzz_service) -> None:
    """200 generated requests against the real app: malformed JSON, wrong types, missing and
    extra fields, ragged tables, bad encodings, too many rows, too many bytes. Every answer
    is 200 (with one finite probability per row) or a 4xx with a message; never a 5xx. Every
    row answered is in the prediction log once the app shuts down."""
    from hypothesis import HealthCheck, given, settings

    client, app, log_dir = fuzz_service
    answered: list[int] = []
    statuses: dict[int, int] = {}

    @settings(max_examples=200, deadline=10_000, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_fuzz_strategies())
    def check(request: tuple[bytes, str | None]) -> None:
        content, content_type = request
        headers = {"content-type": content_type} if content_type else {}
        r = client.post("/invocations", content=content, headers=headers)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 413, 415, 422), (r.status_code, r.text[:500], content[:300])
        if r.status_code == 200:
            predictions = r.json()["predictions"]
            assert predictions and all(0.0 <= p <= 1.0 for p in predictions), r.text[:300]
            answered.append(len(predictions))
        else:
            assert r.json()["message"], r.text

    check()
    print(f"\nfuzz statuses: {dict(sorted(statuses.items()))}; rows answered {sum(answered)}")
    assert statuses.get(200) and sum(v for k, v in statuses.items() if 400 <= k < 500) > 50
    writer = app.state.writer
    writer.flush()
    assert writer.last_error is None, writer.last_error
    from evergreen.adapters.predlog import read_prediction_log

    assert len(read_prediction_log(str(log_dir))) == sum(answered)
