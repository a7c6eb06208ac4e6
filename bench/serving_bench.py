"""Scoring-service benchmark: `evergreen serve` (champion/canary split on) against
`mlflow models serve` on the same XGBoost model, same machine, same run, same load generator.

    uv run python -m bench serving [--seconds S] [--warmup S] [--threads N] [--rounds R]
        [--clients socket,httpx] [--markdown BENCHMARKS.md] [--out FILE.json]

The model is numeric-only (plain `mlflow models serve` builds its DMatrix without
`enable_categorical`, so it cannot score Evergreen's categorical models). Both servers run
side by side on 127.0.0.1 and are loaded in turn (evergreen, mlflow, evergreen, mlflow, ...)
for each payload size; tables show medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODEL_NAME = "bench_serving"
N_FEATURES = 10
TRAIN_ROWS = 4000
PAYLOAD_SIZES = (1, 100)
TARGET_RATIO = 3.0
SECTION = "## serving"
DEFAULT_SEED = 20240607


# ----------------------------------------------------------------------------- load generator


@dataclass(frozen=True)
class LoadResult:
    """One measured load phase against one server."""

    server: str
    rows_per_request: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    # Every answered request of the phase (warm-up and tail too) and the CPU the load
    # generator (this process) and the server (its process tree) used over the whole phase:
    # CPU per request does not depend on what else the shared machine is doing.
    all_requests: int = 0
    client_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    client: str = "socket"

    @property
    def server_cpu_ms_per_request(self) -> float:
        return 1000.0 * self.server_cpu_seconds / self.all_requests if self.all_requests else 0.0

    @property
    def client_cpu_ms_per_request(self) -> float:
        return 1000.0 * self.client_cpu_seconds / self.all_requests if self.all_requests else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.requests_per_second * self.rows_per_request

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "requests_per_second": self.requests_per_second,
            "rows_per_second": self.rows_per_second,
            "server_cpu_ms_per_request": self.server_cpu_ms_per_request,
            "client_cpu_ms_per_request": self.client_cpu_ms_per_request,
        }


CLIENTS = ("socket", "httpx")


def generate_load(
    url: str,
    bodies: list[bytes],
    *,
    server: str = "",
    rows_per_request: int = 1,
    threads: int = 4,
    seconds: float = 15.0,
    warmup: float = 2.0,
    timeout: float = 30.0,
    server_pid: int | None = None,
    client: str = "socket",
) -> LoadResult:
    """POST `bodies` (cycled) to `url` from `threads` keep-alive clients for `warmup` + `seconds`.

    Only requests that start after the warm-up and finish before the end are counted; a
    non-200 answer or a transport error counts as an error (not in the latencies).
    `server_pid`: also record the CPU time of that process (and its children) over the phase.
    `client`: "socket" (default) sends pre-built HTTP/1.1 requests on a plain keep-alive
    socket and reads each whole answer (status line, headers, Content-Length or chunked
    body), costing ~0.1 ms of CPU per request; "httpx" uses one `httpx.Client` per thread,
    which costs ~1-2 ms per request, as much as the server it measures.
    """
    from bench.common import tree_cpu_seconds

    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load target {url} is not on 127.0.0.1; the benchmark stays local")
    if not bodies:
        raise ValueError("generate_load needs at least one request body")
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    make_client = _httpx_poster if client == "httpx" else _socket_poster
    stack = ExitStack()
    # Clients are set up before the clock starts (an httpx.Client builds an SSL context).
    posters = [stack.enter_context(make_client(url, bodies, timeout)) for _ in range(threads)]
    server_cpu = tree_cpu_seconds(server_pid) if server_pid else 0.0
    client_cpu = time.process_time()
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    answered = [0] * threads

    def worker(k: int) -> None:
        post, i = posters[k], k
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                ok = post(i % len(bodies)) == 200
            except (OSError, ValueError):  # transport errors, malformed answers
                ok = False
            t1 = time.perf_counter()
            answered[k] += 1
            i += threads
            if t0 < measure_from or t1 > end:
                continue
            if ok:
                latencies[k].append(t1 - t0)
            else:
                errors[k] += 1

    with stack:
        pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=warmup + seconds + timeout + 5)
        client_cpu = time.process_time() - client_cpu
    server_cpu = tree_cpu_seconds(server_pid) - server_cpu if server_pid else 0.0
    lat = np.array([x for part in latencies for x in part]) * 1000.0
    return LoadResult(
        server=server,
        rows_per_request=rows_per_request,
        seconds=seconds,
        requests=int(lat.size),
        errors=sum(errors),
        p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
        p99_ms=float(np.percentile(lat, 99)) if lat.size else float("nan"),
        all_requests=sum(answered),
        client_cpu_seconds=client_cpu,
        server_cpu_seconds=server_cpu,
        client=client,
    )


@contextmanager
def _httpx_poster(url: str, bodies: list[bytes], timeout: float) -> Iterator[Callable[[int], int]]:
    import httpx

    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=timeout) as client:

        def post(k: int) -> int:
            try:
                return client.post(url, content=bodies[k], headers=headers).status_code
            except httpx.HTTPError as exc:
                raise OSError(str(exc)) from exc

        yield post


@contextmanager
def _socket_poster(url: str, bodies: list[bytes], timeout: float) -> Iterator[Callable[[int], int]]:
    """POST pre-built requests over one keep-alive connection (reconnecting when the server
    closes it); returns the status after reading the whole answer."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    requests = [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]
    state: dict[str, Any] = {"sock": None, "reader": None}

    def close() -> None:
        if state["sock"] is not None:
            state["reader"].close()
            state["sock"].close()
            state["sock"] = state["reader"] = None

    def post(k: int) -> int:
        if state["sock"] is None:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state["sock"], state["reader"] = sock, sock.makefile("rb", buffering=256 * 1024)
        try:
            state["sock"].sendall(requests[k])
            status, keep = _read_answer(state["reader"])
        except (OSError, ValueError):
            close()
            raise
        if not keep:
            close()
        return status

    try:
        yield post
    finally:
        close()


def _read_answer(reader: Any) -> tuple[int, bool]:
    """Read one HTTP/1.1 answer whole; its status and whether the connection stays open."""
    status_line = reader.readline(65536)
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked, keep = None, False, status_line.startswith(b"HTTP/1.1")
    while True:
        line = reader.readline(65536)
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise ConnectionError("server closed the connection inside the headers")
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            keep = value != b"close"
    if chunked:
        while True:
            size = int(reader.readline(65536).split(b";")[0], 16)
            _read_exactly(reader, size + 2)  # data and its CRLF
            if size == 0:
                break
    elif length is not None:
        _read_exactly(reader, length)
    else:  # no framing: the body runs to the end of the connection
        reader.read()
        keep = False
    return status, keep


def _read_exactly(reader: Any, n: int) -> None:
    data = reader.read(n)
    if len(data) != n:
        raise ConnectionError(f"answer body cut short: {len(data)} of {n} bytes")


def listening_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (from /proc; Linux only), or None."""
    import re

    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not re.fullmatch(r"\d+", proc.name):
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc.name)
        except OSError:
            continue
    return None


# ----------------------------------------------------------------------------- model + registry


def bench_config(root: Path, canary_share: float = 0.2) -> Any:
    """A numeric-only binary model config whose registry and data live under `root`."""
    from evergreen.config import ModelConfig

    return ModelConfig.model_validate(
        {
            "name": "bench-serving",
            "columns": {"target": "y", "features": feature_names(), "categorical": []},
            "data": {"root": str(root / "data")},
            "training": {"num_boost_round": 100, "early_stopping_rounds": 10, "nthread": 2},
            "canary": {"traffic_share": canary_share},
            "mlflow": {
                "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                "artifact_root": str(root / "art"),
                "model_name": MODEL_NAME,
            },
        }
    )


def feature_names() -> list[str]:
    return [f"f{i}" for i in range(N_FEATURES)]


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Seeded numeric features, timestamps, ids and a binary target from a known logit."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    logit = x @ np.linspace(1.0, -0.5, N_FEATURES) + 0.5 * x[:, 0] * x[:, 1]
    frame = pd.DataFrame(x, columns=feature_names())
    frame.insert(0, "id", np.arange(rows, dtype=np.int64))
    frame.insert(1, "timestamp", pd.date_range("2024-01-01", periods=rows, freq="min"))
    frame["y"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return frame


def register_models(config: Any, seed: int) -> None:
    """Train two versions, register them, point champion at v1 and canary at v2."""
    import mlflow

    from evergreen.adapters import registry, tracking
    from evergreen.engines.training import train_model

    tracking.connect(config.mlflow)
    exp = tracking.ensure_experiment(config.mlflow, config.mlflow.training_experiment)
    for k in range(2):
        frame = make_frame(TRAIN_ROWS, seed + k)
        model = train_model(frame, config)
        with mlflow.start_run(experiment_id=exp) as run:
            logged = registry.log_model(model, frame[config.columns.features].head(5))
        registry.create_version(MODEL_NAME, logged.model_uri, run.info.run_id, {})
    registry.move_alias(MODEL_NAME, registry.CHAMPION, "1", "benchmark", "bench")
    registry.move_alias(MODEL_NAME, registry.CANARY, "2", "benchmark", "bench")


# ----------------------------------------------------------------------------- servers


@contextmanager
def mlflow_server(tracking_uri: str, log: Path, timeout: float = 180) -> Iterator[str]:
    """`mlflow models serve` of champion v1 (local env, 1 worker: its defaults); yields its URL."""
    from evergreen.apps.services import child_service, executable, free_port, service_env

    port = free_port()
    env = service_env(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    base = f"http://127.0.0.1:{port}"
    command = [
        executable("mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}/1",
        "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    with child_service(command, env, log, f"{base}/ping", timeout):
        yield base


def write_config_file(config: Any, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- payloads + check


def payloads(frame: pd.DataFrame, columns: list[str], rows: int, count: int) -> list[bytes]:
    """`count` dataframe_split bodies of `rows` consecutive rows each (distinct ids)."""
    bodies = []
    for k in range(count):
        part = frame.iloc[(k * rows) % len(frame) :][:rows]
        data = part[columns].to_numpy(dtype=object).tolist()
        bodies.append(json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode())
    return bodies


@dataclass(frozen=True)
class AgreementCheck:
    """Evergreen's champion rows against mlflow's answers for the same rows."""

    rows: int
    champion_rows: int
    canary_rows: int
    max_abs_diff: float
    canary_differs: bool


def check_agreement(
    evergreen_url: str, mlflow_url: str, frame: pd.DataFrame, columns: list[str]
) -> AgreementCheck:
    """Same rows to both; champion-routed rows must match mlflow (v1) to 1e-6, and the
    canary rows must come from v2 (and differ from v1), so the split is really on."""
    import httpx

    body = payloads(frame, columns, len(frame), 1)[0]
    headers = {"Content-Type": "application/json"}
    ev = httpx.post(f"{evergreen_url}/invocations", content=body, headers=headers, timeout=60)
    ml = httpx.post(f"{mlflow_url}/invocations", content=body, headers=headers, timeout=60)
    for name, r in (("evergreen", ev), ("mlflow", ml)):
        if r.status_code != 200:
            raise RuntimeError(
                f"{name} answered {r.status_code} to the agreement check: {r.text[:500]}"
            )
    e, m = ev.json(), ml.json()
    ep, mp = (
        np.array(e["predictions"], dtype=float),
        np.array(m["predictions"], dtype=float).ravel(),
    )
    aliases = np.array(e["aliases"])
    champ = aliases == "champion"
    if ep.shape != mp.shape or not champ.any() or champ.all():
        raise RuntimeError(
            f"agreement check: shapes {ep.shape}/{mp.shape}, champion rows {champ.sum()}"
        )
    diff = float(np.max(np.abs(ep[champ] - mp[champ])))
    if diff > 1e-6:
        raise RuntimeError(f"evergreen's champion predictions differ from mlflow's by {diff:.3g}")
    if set(np.array(e["versions"])[champ]) != {"1"} or set(np.array(e["versions"])[~champ]) != {
        "2"
    }:
        raise RuntimeError(f"unexpected versions served: {sorted(set(e['versions']))}")
    return AgreementCheck(
        rows=len(ep),
        champion_rows=int(champ.sum()),
        canary_rows=int((~champ).sum()),
        max_abs_diff=diff,
        canary_differs=bool(np.max(np.abs(ep[~champ] - mp[~champ])) > 1e-9),
    )


# ----------------------------------------------------------------------------- run


@dataclass
class ServingReport:
    command: str
    date: str
    machine: str
    threads: int
    seconds: float
    warmup: float
    rounds: int
    canary_share: float
    agreement: AgreementCheck
    clients: list[str] = field(default_factory=lambda: ["socket"])
    load_before: float = 0.0
    load_after: float = 0.0
    runs: list[LoadResult] = field(default_factory=list)

    def _runs(self, server: str, rows: int, client: str | None) -> list[LoadResult]:
        client = client or self.clients[0]
        return [
            r
            for r in self.runs
            if r.server == server and r.rows_per_request == rows and r.client == client
        ]

    def median(self, server: str, rows: int, attr: str, client: str | None = None) -> float:
        return float(statistics.median(getattr(r, attr) for r in self._runs(server, rows, client)))

    def errors(self, server: str, rows: int, client: str | None = None) -> int:
        return sum(r.errors for r in self._runs(server, rows, client))

    def ratio(self, rows: int, client: str | None = None) -> float:
        return self.median("evergreen", rows, "requests_per_second", client) / self.median(
            "mlflow", rows, "requests_per_second", client
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("runs", "agreement")},
            "agreement": asdict(self.agreement),
            "runs": [r.to_dict() for r in self.runs],
            "ratios": {c: {str(n): self.ratio(n, c) for n in PAYLOAD_SIZES} for c in self.clients},
        }


def run(
    *,
    seconds: float = 15.0,
    warmup: float = 2.0,
    threads: int = 4,
    rounds: int = 2,
    clients: tuple[str, ...] = ("socket", "httpx"),
    seed: int = DEFAULT_SEED,
    command: str = "uv run python -m bench serving",
    keep: bool = False,
    log: Callable[[str], None] = print,
) -> ServingReport:
    """Set up the registry, start both servers, check they agree, then load them in turn
    (per payload size and load generator: `rounds` alternating rounds)."""
    from evergreen.apps.services import scoring_service
    from evergreen.telemetry import TELEMETRY_OFF

    os.environ.update(TELEMETRY_OFF)
    root = Path(tempfile.mkdtemp(prefix="evergreen-serving-bench-"))
    config = bench_config(root)
    log(f"scratch {root}; training and registering 2 versions ...")
    try:
        register_models(config, seed)
        cfg_path = write_config_file(config, root / "config.yaml")
        columns = [config.columns.id, *config.columns.features]
        traffic = make_frame(20_000, seed + 100)
        traffic["id"] = traffic["id"] + 1_000_000  # ids the training data never had
        with ExitStack() as stack:
            # Start-up is not measured; mlflow needs ~35 s.
            ml_url = stack.enter_context(
                mlflow_server(config.mlflow.resolved_tracking_uri(), root / "mlflow-serve.log")
            )
            ev_url = stack.enter_context(scoring_service(cfg_path, root / "evergreen-serve.log"))
            log(f"evergreen at {ev_url}, mlflow at {ml_url}")
            agreement = check_agreement(ev_url, ml_url, traffic.head(200), columns)
            log(f"agreement: {agreement}")
            report = ServingReport(
                command=command,
                date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                machine=machine(),
                threads=threads,
                seconds=seconds,
                warmup=warmup,
                rounds=rounds,
                canary_share=config.canary.traffic_share,
                agreement=agreement,
                clients=list(clients),
                load_before=os.getloadavg()[0],
            )
            urls = {"evergreen": ev_url, "mlflow": ml_url}
            pids = {name: listening_pid(int(url.rsplit(":", 1)[1])) for name, url in urls.items()}
            log(f"server processes: {pids}")
            phases = [
                (rows, client, rnd)
                for rows in PAYLOAD_SIZES
                for client in clients
                for rnd in range(rounds)
            ]
            for rows, client, rnd in phases:
                bodies = payloads(traffic, columns, rows, 200 if rows > 1 else 2000)
                order = ("evergreen", "mlflow") if rnd % 2 == 0 else ("mlflow", "evergreen")
                for name in order:
                    res = generate_load(
                        f"{urls[name]}/invocations",
                        bodies,
                        server=name,
                        rows_per_request=rows,
                        threads=threads,
                        seconds=seconds,
                        warmup=warmup,
                        server_pid=pids[name],
                        client=client,
                    )
                    log(
                        f"{client:6s} round {rnd + 1} {name:9s} {rows:3d} row(s): {res.requests_per_second:8.1f} req/s "
                        f"p50 {res.p50_ms:6.1f} ms p99 {res.p99_ms:6.1f} ms errors {res.errors} "
                        f"CPU/request: server {res.server_cpu_ms_per_request:.2f} ms, "
                        f"load generator {res.client_cpu_ms_per_request:.2f} ms"
                    )
                    report.runs.append(res)
            report.load_after = os.getloadavg()[0]
        return report
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, 1-min load average {load:.1f} before the load phases"
    )


def format_markdown(report: ServingReport) -> str:
    """The `## serving` section of BENCHMARKS.md."""
    lines = [
        SECTION,
        "",
        "Requests per second and latency of `evergreen serve` (champion v1 + canary v2 at "
        f"{report.canary_share:.0%} of ids) against `mlflow models serve -m models:/{MODEL_NAME}/1 "
        f"--env-manager local` on the same XGBoost model. Target: evergreen >= {TARGET_RATIO:.0f}x "
        "mlflow's throughput.",
        "",
        f"- **Command**: `{report.command}` ({report.date}); load average {report.load_before:.1f} "
        f"before, {report.load_after:.1f} after the load phases.",
        f"- **Model**: {N_FEATURES} float features, XGBoost `hist`, logged by "
        "`evergreen.adapters.registry.log_model` (UBJ); numeric-only, as `mlflow models serve` "
        f"cannot score categoricals. Of {report.agreement.rows} rows sent to both, the "
        f"{report.agreement.champion_rows} routed to the champion match mlflow's exactly (max |diff| "
        f"{report.agreement.max_abs_diff:.1e}); the {report.agreement.canary_rows} canary rows were served by v2.",
        "- **Servers**: defaults, one uvicorn process each; mlflow 1 worker; evergreen with the "
        "canary split, every prediction logged, aliases re-resolved every 2 s.",
        f"- **Load**: {report.threads} threads, keep-alive, `dataframe_split` bodies back to back; "
        f"{report.warmup:g} s warm-up + {report.seconds:g} s per phase; generators `socket` (raw "
        f"HTTP/1.1) and `httpx`; servers alternate; {report.rounds} rounds; medians. CPU/request = "
        "process CPU / requests.",
        "",
        "| generator | rows/request | server | requests/s | rows/s | p50 ms | p99 ms | server CPU ms/request "
        "| generator CPU ms/request | errors | evergreen/mlflow req/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for client in report.clients:
        for rows in PAYLOAD_SIZES:
            for name in ("evergreen", "mlflow"):
                med = lambda attr, n=name, r=rows, c=client: report.median(n, r, attr, c)  # noqa: E731
                ratio = f"**{report.ratio(rows, client):.2f}x**" if name == "evergreen" else ""
                lines.append(
                    f"| {client} | {rows} | {name} | {med('requests_per_second'):,.0f} | "
                    f"{med('rows_per_second'):,.0f} | {med('p50_ms'):.1f} | {med('p99_ms'):.1f} | "
                    f"{med('server_cpu_ms_per_request'):.2f} | {med('client_cpu_ms_per_request'):.2f} | "
                    f"{report.errors(name, rows, client)} | {ratio} |"
                )
    lines.append("")
    for client in report.clients:
        verdict = all(report.ratio(n, client) >= TARGET_RATIO for n in PAYLOAD_SIZES)
        lines.append(
            f"Target {TARGET_RATIO:.0f}x with the `{client}` generator: "
            f"**{'met' if verdict else 'not met'}** "
            f"({', '.join(f'{n} row(s): {report.ratio(n, client):.2f}x' for n in PAYLOAD_SIZES)})."
        )
        lines.append("")
    return "\n".join(lines)


def update_markdown(path: Path, report: ServingReport) -> None:
    """Replace (or append) the `## serving` section of `path`, leaving other sections alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = format_markdown(report)
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
        return
    nxt = text.find("\n## ", start + 1)
    after = "" if nxt < 0 else "\n" + text[nxt + 1 :]
    path.write_text(text[: start + 1] + section + after, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench serving", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per phase")
    parser.add_argument("--threads", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per payload size")
    parser.add_argument(
        "--clients",
        default="socket,httpx",
        help=f"load generators, comma-separated, from {CLIENTS} (default: both)",
    )
    parser.add_argument("--markdown", help="write the '## serving' section of this file")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary registry and logs")
    args = parser.parse_args(argv)
    clients = tuple(c.strip() for c in args.clients.split(",") if c.strip())
    if not clients or any(c not in CLIENTS for c in clients):
        parser.error(f"--clients takes names from {CLIENTS}, got {args.clients!r}")
    if not (
        0 < args.seconds <= 120
        and 0 <= args.warmup <= 30
        and 1 <= args.threads <= 32
        and 1 <= args.rounds <= 10
    ):
        parser.error(
            "keep --seconds in (0, 120], --warmup in [0, 30], --threads in [1, 32], --rounds in [1, 10]"
        )
    command = "uv run python -m bench serving" + "".join(
        f" {flag} {value}"
        for flag, value, default in (
            ("--seconds", args.seconds, 15.0),
            ("--warmup", args.warmup, 2.0),
            ("--threads", args.threads, 4),
            ("--rounds", args.rounds, 2),
            ("--clients", args.clients, "socket,httpx"),
            ("--markdown", args.markdown, None),
            ("--out", args.out, None),
        )
        if value != default
    )
    report = run(
        seconds=args.seconds,
        warmup=args.warmup,
        threads=args.threads,
        rounds=args.rounds,
        clients=clients,
        command=command,
        keep=args.keep,
    )
    print(format_markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        update_markdown(Path(args.markdown), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
