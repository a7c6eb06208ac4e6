"""Scoring-service benchmark: `evergreen serve` (champion/canary split on, every prediction
logged) against `mlflow models serve` and MLServer's XGBoost runtime on the same XGBoost model,
same machine, same run, same load generator.

    uv run python -m bench serving [--seconds S] [--warmup S] [--threads N] [--rounds R]
        [--clients wrk,socket,httpx] [--no-mlserver] [--markdown BENCHMARKS.md] [--out FILE.json]

The model is numeric-only (plain `mlflow models serve` builds its DMatrix without
`enable_categorical`, so it cannot score Evergreen's categorical models). All servers run side
by side on 127.0.0.1 and are loaded in turn, in an order that rotates every round, for each
payload size: evergreen, evergreen without metrics, mlflow, MLServer. A second phase loads
evergreen with 1 and with 2 worker processes in turn (more connections, so the kernel spreads
them over both workers). Tables show medians over the rounds and the spread (min-max).

MLServer (and its XGBoost runtime) is installed in the benchmark's own environment
(`.evergreen/bench-envs/mlserver-<version>`, made with `uv venv` + `uv pip install`), never in
the project's. It serves champion v1's booster saved as `model.json` and takes the V2
inference protocol: the same rows as one FP64 tensor of the 10 features (no id column: it
neither routes nor logs) and answers `predict` (the positive-class probability, as both others).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
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
# Targets (issue 20): evergreen / mlflow requests/s per payload size, evergreen / MLServer at
# one row, server CPU per one-row request, 2 workers / 1 worker.
TARGET_MLFLOW = {1: 25.0, 100: 10.0}
TARGET_MLSERVER = 1.5
TARGET_CPU_MS = 0.3
TARGET_WORKERS = 1.7
SECTION = "## serving"
# Where the CPU of a 1-row request goes (py-spy, perf; 2026-12-07, quiet machine, 0.40 ms).
PROFILE = (
    "1-row request CPU (py-spy, perf; 0.40 ms in all): XGBoost's call ~30% (~65 us alone for "
    "150 trees: per-call set-up, mostly the depth of every tree and JSON argument parsing; the "
    "walk of one row is a few us); validation and parsing ~15%; HTTP send and ASGI (uvloop, "
    "httptools) ~12%; prediction log (rows, Parquet flush on its thread) ~10%; routing ~3%."
)
DEFAULT_SEED = 20240607
MLSERVER_VERSION = "1.7.1"
WORKER_CONNECTIONS = 16

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


CLIENTS = ("wrk", "socket", "httpx")


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
    which costs ~1-2 ms per request, as much as the server it measures; "wrk" runs Debian's
    `wrk` (C, epoll; ~0.02 ms per request) with `threads` connections on one thread.
    """
    from bench.common import tree_cpu_seconds

    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load target {url} is not on 127.0.0.1; the benchmark stays local")
    if not bodies:
        raise ValueError("generate_load needs at least one request body")
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    if client == "wrk":
        return _wrk_load(
            url, bodies, server=server, rows_per_request=rows_per_request, connections=threads,
            seconds=seconds, warmup=warmup, timeout=timeout, server_pid=server_pid,
        )  # fmt: skip
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


_WRK_SCRIPT = """
local bodies, k = {}, 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
function request()
  k = k % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[k])
end
"""


def wrk_path() -> str | None:
    """Debian's `wrk` (`apt-get install wrk`), if installed."""
    return shutil.which("wrk")


def _wrk_load(
    url: str,
    bodies: list[bytes],
    *,
    server: str,
    rows_per_request: int,
    connections: int,
    seconds: float,
    warmup: float,
    timeout: float,
    server_pid: int | None,
) -> LoadResult:
    """A warm-up run (discarded), then a measured run of `wrk` (whole seconds). Its own
    count, latency percentiles (--latency), non-2xx answers and socket errors; its CPU from
    the children's rusage, the server's from /proc over the measured run only."""
    import resource

    from bench.common import tree_cpu_seconds

    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk`, or --clients socket")
    if any(b"\n" in b for b in bodies):
        raise ValueError("wrk bodies are read one per line: a body holds a newline")
    with tempfile.TemporaryDirectory(prefix="evergreen-wrk-") as tmp:
        script, data = Path(tmp) / "post.lua", Path(tmp) / "bodies.txt"
        script.write_text(_WRK_SCRIPT, encoding="utf-8")
        data.write_bytes(b"\n".join(bodies) + b"\n")

        def run(duration: int, latency: bool) -> str:
            command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={int(timeout)}s"]
            command += ["--latency"] if latency else []
            command += ["-s", str(script), url, "--", str(data)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=duration + timeout + 30)
            if done.returncode != 0:
                raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
            return done.stdout

        if warmup > 0:
            run(max(1, round(warmup)), latency=False)
        duration = max(1, round(seconds))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = tree_cpu_seconds(server_pid) if server_pid else 0.0
        out = run(duration, latency=True)
        server_cpu = tree_cpu_seconds(server_pid) - server_cpu if server_pid else 0.0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    parsed = parse_wrk(out)
    return LoadResult(
        server=server,
        rows_per_request=rows_per_request,
        seconds=float(duration),
        requests=parsed["requests"] - parsed["non_2xx"],
        errors=parsed["non_2xx"] + parsed["socket_errors"],
        p50_ms=parsed["p50_ms"],
        p99_ms=parsed["p99_ms"],
        all_requests=parsed["requests"],
        client_cpu_seconds=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        server_cpu_seconds=server_cpu,
        client="wrk",
    )


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests, non-2xx answers, socket errors and p50/p99 latency (ms) of wrk's report."""
    import re

    def ms(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    found = re.search(r"(\d+) requests in", text)
    if found is None:
        raise ValueError(f"no request count in wrk's report:\n{text[-800:]}")
    pct = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+\w+)\s*$", text, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "requests": int(found.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "p50_ms": ms(pct["50"]) if "50" in pct else float("nan"),
        "p99_ms": ms(pct["99"]) if "99" in pct else float("nan"),
    }


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
def launched(command: list[str], env: dict[str, str], log: Path, ready_url: str, timeout: float) -> Iterator[int]:
    """Run `command` in its own process group (output appended to `log`) until the block ends;
    yields its pid once `ready_url` answers 200. Server CPU is read from this process and its
    descendants (workers, inference processes)."""
    from evergreen.apps.services import stop, wait_http

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(ready_url, timeout, proc, log)
        yield proc.pid
    finally:
        stop(proc)


@contextmanager
def mlflow_server(tracking_uri: str, log: Path, timeout: float = 180) -> Iterator[tuple[str, int]]:
    """`mlflow models serve` of champion v1 (local env, 1 worker: its defaults); yields its
    URL and pid."""
    from evergreen.apps.services import executable, free_port, service_env

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
    with launched(command, env, log, f"{base}/ping", timeout) as pid:
        yield base, pid


def write_config_file(config: Any, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


@contextmanager
def evergreen_server(
    config_path: Path, log: Path, *, workers: int = 1, metrics: bool = True, timeout: float = 180
) -> Iterator[tuple[str, int]]:
    """`evergreen serve` (defaults: 2 s alias refresh, log flushed every 5 s or 100,000 rows) as
    a child process; yields its URL and pid once every worker answers /ready."""
    from evergreen.apps.services import executable, free_port, service_env

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        executable("evergreen"), "serve", "--config", str(config_path),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    if not metrics:
        command.append("--no-metrics")
    with launched(command, service_env(), log, f"{base}/ready", timeout) as pid:
        wait_workers(base, workers, timeout)
        yield base, pid


def wait_workers(base: str, workers: int, timeout: float) -> None:
    """Until `workers` distinct processes answered /ready with 200 (fresh connections)."""
    import httpx

    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only worker processes {sorted(seen)} of {workers} became ready")
        with httpx.Client(base_url=base, timeout=30) as fresh:
            if fresh.get("/ready").status_code == 200:
                seen.add(fresh.get("/models").json()["process"])
            else:
                time.sleep(0.2)


def mlserver_env(version: str = MLSERVER_VERSION) -> Path:
    """The benchmark's own environment with MLServer and its XGBoost runtime (the project's
    xgboost version), made once under .evergreen/bench-envs with uv; returns its `mlserver`."""
    import xgboost

    from bench.common import REPO_ROOT

    env = REPO_ROOT / ".evergreen" / "bench-envs" / f"mlserver-{version}"
    exe, marker = env / "bin" / "mlserver", env / "evergreen-packages.txt"
    # The runtime loads the model through xgboost's scikit-learn interface (needs sklearn);
    # MLServer's inference worker calls asyncio.get_event_loop() in a fresh process, which
    # uvloop >= 0.22 refuses: the uvloop of its time.
    packages = [
        f"mlserver=={version}", f"mlserver-xgboost=={version}", f"xgboost=={xgboost.__version__}",
        "scikit-learn", "uvloop<0.22",
    ]  # fmt: skip
    if exe.exists() and marker.exists() and marker.read_text().split() == packages:
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to install MLServer for the benchmark (or --no-mlserver)")
    if not (env / "bin" / "python").exists():
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([uv, "venv", "-q", "--python", py, str(env)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(env / "bin" / "python"), *packages], check=True)
    marker.write_text("\n".join(packages) + "\n")
    return exe


def export_for_mlserver(config: Any, folder: Path, version: str = "1") -> Path:
    """Champion v1's booster as MLServer's XGBoost runtime loads it: model.json plus
    model-settings.json in a model folder of a repository `folder`."""
    from evergreen.adapters import registry, tracking

    tracking.connect(config.mlflow)
    model_dir = folder / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    registry.load_version(MODEL_NAME, version).model.booster.save_model(str(model_dir / "model.json"))
    settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json", "version": version},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


@contextmanager
def mlserver_server(repository: Path, log: Path, timeout: float = 180) -> Iterator[tuple[str, int]]:
    """`mlserver start` on the repository, with its defaults (one parallel inference worker,
    metrics on) but per-request debug logging off, as evergreen's access log is; yields the
    model's V2 URL and the pid once it is ready."""
    from evergreen.apps.services import free_port, service_env

    exe = mlserver_env()
    port, grpc, metrics = free_port(), free_port(), free_port()
    server = {
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc, "metrics_port": metrics,
        "debug": False,
    }  # fmt: skip
    (repository / "settings.json").write_text(json.dumps(server), encoding="utf-8")
    base = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}"
    env = service_env({"VIRTUAL_ENV": str(exe.parent.parent)})
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with launched([str(exe), "start", str(repository)], env, log, f"{base}/ready", timeout) as pid:
        yield base, pid


# ----------------------------------------------------------------------------- payloads + check


def payloads(frame: pd.DataFrame, columns: list[str], rows: int, count: int) -> list[bytes]:
    """`count` dataframe_split bodies of `rows` consecutive rows each (distinct ids)."""
    bodies = []
    for k in range(count):
        part = frame.iloc[(k * rows) % len(frame) :][:rows]
        data = part[columns].to_numpy(dtype=object).tolist()
        bodies.append(json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode())
    return bodies


def v2_payloads(frame: pd.DataFrame, rows: int, count: int) -> list[bytes]:
    """The same rows as `payloads`, as V2 inference requests: one FP64 tensor of the features."""
    bodies = []
    for k in range(count):
        part = frame.iloc[(k * rows) % len(frame) :][:rows]
        values = part[feature_names()].to_numpy(dtype=np.float64)
        tensor = {
            "name": "input-0", "shape": list(values.shape), "datatype": "FP64",
            "data": values.ravel().tolist(),
        }  # fmt: skip
        bodies.append(json.dumps({"inputs": [tensor]}).encode())
    return bodies


@dataclass(frozen=True)
class AgreementCheck:
    """Evergreen's champion rows against mlflow's (and MLServer's) answers for the same rows."""

    rows: int
    champion_rows: int
    canary_rows: int
    max_abs_diff: float
    canary_differs: bool
    mlserver_max_abs_diff: float | None = None


def check_agreement(
    evergreen_url: str,
    mlflow_url: str,
    frame: pd.DataFrame,
    columns: list[str],
    mlserver_url: str | None = None,
) -> AgreementCheck:
    """Same rows to all; champion-routed rows must match mlflow (v1) to 1e-6, and the
    canary rows must come from v2 (and differ from v1), so the split is really on. MLServer
    (v1 for every row) must match mlflow to 1e-6."""
    import httpx

    body = payloads(frame, columns, len(frame), 1)[0]
    headers = {"Content-Type": "application/json"}
    ev = httpx.post(f"{evergreen_url}/invocations", content=body, headers=headers, timeout=60)
    ml = httpx.post(f"{mlflow_url}/invocations", content=body, headers=headers, timeout=60)
    answers = [("evergreen", ev), ("mlflow", ml)]
    if mlserver_url:
        v2 = v2_payloads(frame, len(frame), 1)[0]
        answers.append(("mlserver", httpx.post(f"{mlserver_url}/infer", content=v2, headers=headers, timeout=60)))
    for name, r in answers:
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
    ms_diff = None
    if mlserver_url:
        out = answers[2][1].json()["outputs"][0]
        sp = np.array(out["data"], dtype=float).ravel()
        if sp.shape != mp.shape:
            raise RuntimeError(f"MLServer answered {sp.shape} values for {mp.shape} rows: {out}")
        ms_diff = float(np.max(np.abs(sp - mp)))
        if ms_diff > 1e-6:
            raise RuntimeError(f"MLServer's predictions differ from mlflow's by {ms_diff:.3g}")
    return AgreementCheck(
        rows=len(ep),
        champion_rows=int(champ.sum()),
        canary_rows=int((~champ).sum()),
        max_abs_diff=diff,
        canary_differs=bool(np.max(np.abs(ep[~champ] - mp[~champ])) > 1e-9),
        mlserver_max_abs_diff=ms_diff,
    )


# ----------------------------------------------------------------------------- run

# Server names in the report.
EVERGREEN, NO_METRICS, MLFLOW, MLSERVER = "evergreen", "evergreen-no-metrics", "mlflow", "mlserver"
ONE_WORKER, TWO_WORKERS = "evergreen-1w", "evergreen-2w"


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
    clients: list[str] = field(default_factory=lambda: ["wrk"])
    load_before: float = 0.0
    load_after: float = 0.0
    worker_connections: int = WORKER_CONNECTIONS
    runs: list[LoadResult] = field(default_factory=list)
    took_seconds: float = 0.0

    def _runs(self, server: str, rows: int, client: str | None) -> list[LoadResult]:
        client = client or self.clients[0]
        return [
            r
            for r in self.runs
            if r.server == server and r.rows_per_request == rows and r.client == client
        ]

    def has(self, server: str) -> bool:
        return any(r.server == server for r in self.runs)

    def median(self, server: str, rows: int, attr: str, client: str | None = None) -> float:
        return float(statistics.median(getattr(r, attr) for r in self._runs(server, rows, client)))

    def spread(self, server: str, rows: int, client: str | None = None) -> tuple[float, float]:
        values = [r.requests_per_second for r in self._runs(server, rows, client)]
        return min(values), max(values)

    def errors(self, server: str, rows: int, client: str | None = None) -> int:
        return sum(r.errors for r in self._runs(server, rows, client))

    def ratio(self, rows: int, client: str | None = None, a: str = EVERGREEN, b: str = MLFLOW) -> float:
        """Ratio of the median requests/s of server `a` and server `b`."""
        return self.median(a, rows, "requests_per_second", client) / self.median(
            b, rows, "requests_per_second", client
        )

    def round_ratios(self, rows: int, a: str, b: str, client: str | None = None) -> list[float]:
        """a/b requests/s of each round (the servers of a round ran back to back)."""
        pairs = zip(self._runs(a, rows, client), self._runs(b, rows, client), strict=False)
        return [x.requests_per_second / y.requests_per_second for x, y in pairs]

    def to_dict(self) -> dict[str, Any]:
        pairs = {"mlflow": (EVERGREEN, MLFLOW), "mlserver": (EVERGREEN, MLSERVER),
                 "metrics_off": (NO_METRICS, EVERGREEN), "workers": (TWO_WORKERS, ONE_WORKER)}  # fmt: skip
        ratios = {
            c: {
                key: {str(n): self.ratio(n, c, a, b) for n in PAYLOAD_SIZES}
                for key, (a, b) in pairs.items()
                if self.has(a) and self.has(b)
            }
            for c in self.clients
        }
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("runs", "agreement")},
            "agreement": asdict(self.agreement),
            "runs": [r.to_dict() for r in self.runs],
            "ratios": ratios,
        }


def run(
    *,
    seconds: float = 10.0,
    warmup: float = 2.0,
    threads: int = 4,
    rounds: int = 3,
    clients: tuple[str, ...] = ("wrk",),
    with_mlserver: bool = True,
    with_workers: bool = True,
    seed: int = DEFAULT_SEED,
    command: str = "uv run python -m bench serving",
    keep: bool = False,
    log: Callable[[str], None] = print,
) -> ServingReport:
    """Set up the registry, start the servers, check they agree, then load them in turn
    (per payload size and load generator: `rounds` rounds, the order rotating each round),
    then evergreen with 1 and 2 workers in turn."""
    from evergreen.telemetry import TELEMETRY_OFF

    os.environ.update(TELEMETRY_OFF)
    began = time.monotonic()
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
            started = {
                MLFLOW: stack.enter_context(
                    mlflow_server(config.mlflow.resolved_tracking_uri(), root / "mlflow-serve.log")
                ),
                EVERGREEN: stack.enter_context(evergreen_server(cfg_path, root / "evergreen.log")),
                NO_METRICS: stack.enter_context(
                    evergreen_server(cfg_path, root / "evergreen-nm.log", metrics=False)
                ),
            }
            if with_mlserver:
                repo = export_for_mlserver(config, root / "mlserver")
                started[MLSERVER] = stack.enter_context(mlserver_server(repo, root / "mlserver.log"))
            urls = {name: url for name, (url, _) in started.items()}
            pids = {name: pid for name, (_, pid) in started.items()}
            log(f"servers: {started}")
            agreement = check_agreement(
                urls[EVERGREEN], urls[MLFLOW], traffic.head(200), columns, urls.get(MLSERVER)
            )
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
            bodies = {
                rows: payloads(traffic, columns, rows, 200 if rows > 1 else 2000)
                for rows in PAYLOAD_SIZES
            }
            v2 = {rows: v2_payloads(traffic, rows, 200 if rows > 1 else 2000) for rows in PAYLOAD_SIZES}
            endpoint = {name: f"{url}/invocations" for name, url in urls.items()}
            if MLSERVER in urls:
                endpoint[MLSERVER] = f"{urls[MLSERVER]}/infer"

            def load(name: str, rows: int, client: str, rnd: int, connections: int) -> None:
                res = generate_load(
                    endpoint[name], v2[rows] if name == MLSERVER else bodies[rows],
                    server=name, rows_per_request=rows, threads=connections, seconds=seconds,
                    warmup=warmup, server_pid=pids[name], client=client,
                )  # fmt: skip
                log(
                    f"{client:6s} round {rnd + 1} {name:21s} {rows:3d} row(s): "
                    f"{res.requests_per_second:8.1f} req/s p50 {res.p50_ms:6.2f} ms "
                    f"p99 {res.p99_ms:6.2f} ms errors {res.errors} CPU/request: server "
                    f"{res.server_cpu_ms_per_request:.3f} ms, load generator "
                    f"{res.client_cpu_ms_per_request:.3f} ms"
                )
                report.runs.append(res)

            names = list(urls)
            for rows in PAYLOAD_SIZES:
                for client in clients:
                    for rnd in range(rounds):
                        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                            load(name, rows, client, rnd, threads)
            if with_workers:
                # The 1-worker server above, and a 2-worker one, with more connections.
                stack.close()
                with ExitStack() as workers:
                    started = {
                        ONE_WORKER: workers.enter_context(evergreen_server(cfg_path, root / "ev1.log")),
                        TWO_WORKERS: workers.enter_context(
                            evergreen_server(cfg_path, root / "ev2.log", workers=2)
                        ),
                    }
                    endpoint = {name: f"{url}/invocations" for name, (url, _) in started.items()}
                    pids.update({name: pid for name, (_, pid) in started.items()})
                    for rows in PAYLOAD_SIZES:
                        for rnd in range(rounds):
                            order = [ONE_WORKER, TWO_WORKERS][:: 1 if rnd % 2 == 0 else -1]
                            for name in order:
                                load(name, rows, clients[0], rnd, WORKER_CONNECTIONS)
            report.load_after = os.getloadavg()[0]
            report.took_seconds = time.monotonic() - began
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


def _verdict(ok: bool) -> str:
    return "pass" if ok else "**fail**"


def format_markdown(report: ServingReport) -> str:
    """The `## serving` section of BENCHMARKS.md (terse: details are in the --out JSON)."""
    c = report.clients[0]
    a = report.agreement
    gen = [r.client_cpu_ms_per_request for r in report.runs if r.client == c]
    lines = [
        SECTION,
        "",
        f"`{report.command}` ({report.date}, {report.took_seconds / 60:.0f} min, load "
        f"{report.load_before:.1f} / {report.load_after:.1f}: 2 CPUs shared with others). "
        f"`{c}`: 1 thread, {report.threads} keep-alive connections ({report.worker_connections} "
        f"for workers), {report.warmup:g} s warm-up + {report.seconds:g} s a run, "
        f"{min(gen):.2f}-{max(gen):.2f} ms CPU/request; servers in rotating order, "
        f"{report.rounds} rounds, medians (min-max). Model: {N_FEATURES} float features, XGBoost "
        f"`hist`. evergreen: champion v1 + canary v2 ({report.canary_share:.0%} of ids), every "
        f"row logged; its champion rows equal mlflow's and MLServer's (diff "
        f"{max(a.max_abs_diff, a.mlserver_max_abs_diff or 0):.0e}). mlflow: `mlflow models serve "
        f"--env-manager local`. MLServer {MLSERVER_VERSION} + mlserver-xgboost (own venv, "
        "defaults, debug log off): V2 body = one FP64 tensor of the features (no id, routing or "
        "log). CPU: the server's process tree.",
        "",
        "| rows | server | req/s | p50 / p99 ms | CPU ms/req |",
        "|---:|---|---:|---:|---:|",
    ]
    names = [s for s in (EVERGREEN, MLFLOW, MLSERVER) if report.has(s)]  # no-metrics: below
    for rows in PAYLOAD_SIZES:
        for name in names:
            med = lambda attr, n=name, r=rows: report.median(n, r, attr, c)  # noqa: E731
            lo, hi = report.spread(name, rows, c)
            errors = report.errors(name, rows, c)
            lines.append(
                f"| {rows} | {name}{f' ({errors} errors)' if errors else ''} | "
                f"{med('requests_per_second'):,.0f} ({lo:,.0f}-{hi:,.0f}) | "
                f"{med('p50_ms'):.1f} / {med('p99_ms'):.0f} | {med('server_cpu_ms_per_request'):.2f} |"
            )
    lines += ["", PROFILE, "", "| target | measured: median (per-round min-max) | result |", "|---|---|---|"]

    def ratio_text(rows: int, x: str, y: str) -> str:
        values = report.round_ratios(rows, x, y, c)
        return f"{report.ratio(rows, c, x, y):.2f}x ({min(values):.2f}-{max(values):.2f})"

    def per_cpu(rows: int, x: str, y: str) -> float:
        return report.median(y, rows, "server_cpu_ms_per_request", c) / report.median(
            x, rows, "server_cpu_ms_per_request", c
        )

    peers = [(MLFLOW, TARGET_MLFLOW)] + ([(MLSERVER, {1: TARGET_MLSERVER})] if report.has(MLSERVER) else [])
    for peer, goals in peers:
        for rows in goals:
            goal = goals.get(rows)
            ok = report.ratio(rows, c, EVERGREEN, peer) >= goal if goal else None
            wanted = f">= {goal:g}x" if goal else "/"
            lines.append(
                f"| {rows} row(s): evergreen {wanted} {peer} | "
                f"{ratio_text(rows, EVERGREEN, peer)} req/s; {per_cpu(rows, EVERGREEN, peer):.1f}x "
                f"per CPU-s | {_verdict(ok) if ok is not None else 'info'} |"
            )
    cpu = report.median(EVERGREEN, 1, "server_cpu_ms_per_request", c)
    lines.append(f"| CPU per 1-row request <= {TARGET_CPU_MS} ms | {cpu:.3f} ms | {_verdict(cpu <= TARGET_CPU_MS)} |")
    if report.has(NO_METRICS):
        cpu_cost = [
            report.median(EVERGREEN, rows, "server_cpu_ms_per_request", c)
            - report.median(NO_METRICS, rows, "server_cpu_ms_per_request", c)
            for rows in PAYLOAD_SIZES
        ]
        speed = [report.ratio(rows, c, NO_METRICS, EVERGREEN) for rows in PAYLOAD_SIZES]
        lines.append(
            f"| /metrics cost, 1 / 100 rows | CPU {cpu_cost[0]:+.3f} / {cpu_cost[1]:+.3f} ms/req; "
            f"req/s without / with {speed[0]:.2f}x / {speed[1]:.2f}x | info |"
        )
    if report.has(TWO_WORKERS):
        cpu = lambda n, r: report.median(n, r, "server_cpu_ms_per_request", c)  # noqa: E731
        ok = all(report.ratio(r, c, TWO_WORKERS, ONE_WORKER) >= TARGET_WORKERS for r in PAYLOAD_SIZES)
        lines.append(
            f"| 2 workers >= {TARGET_WORKERS:g}x 1, 1 / 100 rows | "
            + " / ".join(ratio_text(r, TWO_WORKERS, ONE_WORKER) for r in PAYLOAD_SIZES)
            + "; CPU ms/req 2w vs 1w "
            + ", ".join(f"{cpu(TWO_WORKERS, r):.2f} vs {cpu(ONE_WORKER, r):.2f}" for r in PAYLOAD_SIZES)
            + f" | {_verdict(ok)} |"
        )
    lines.append("")
    return "\n".join(lines)


def load_report(path: Path) -> ServingReport:
    """A report back from its --out JSON (to re-render the markdown)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    fields = {f for f in LoadResult.__dataclass_fields__}
    runs = [LoadResult(**{k: v for k, v in r.items() if k in fields}) for r in raw.pop("runs")]
    raw.pop("ratios", None)
    agreement = AgreementCheck(**raw.pop("agreement"))
    return ServingReport(**raw, agreement=agreement, runs=runs)


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
    default_client = "wrk" if wrk_path() else "socket"
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--threads", type=int, default=4, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per payload size")
    parser.add_argument(
        "--clients",
        default=default_client,
        help=f"load generators, comma-separated, from {CLIENTS} (default: wrk when installed)",
    )
    parser.add_argument("--no-mlserver", action="store_true", help="leave MLServer out")
    parser.add_argument("--no-workers", action="store_true", help="skip the 1 vs 2 workers phase")
    parser.add_argument("--markdown", help="write the '## serving' section of this file")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary registry and logs")
    parser.add_argument("--render", help="only re-render the markdown of this --out JSON")
    args = parser.parse_args(argv)
    if args.render:
        report = load_report(Path(args.render))
        print(format_markdown(report))
        if args.markdown:
            update_markdown(Path(args.markdown), report)
        return 0
    clients = tuple(c.strip() for c in args.clients.split(",") if c.strip())
    if not clients or any(c not in CLIENTS for c in clients):
        parser.error(f"--clients takes names from {CLIENTS}, got {args.clients!r}")
    if not (
        0 < args.seconds <= 120
        and 0 <= args.warmup <= 30
        and 1 <= args.threads <= 64
        and 1 <= args.rounds <= 10
    ):
        parser.error(
            "keep --seconds in (0, 120], --warmup in [0, 30], --threads in [1, 64], --rounds in [1, 10]"
        )
    command = "uv run python -m bench serving" + "".join(
        f" {flag} {value}"
        for flag, value, default in (
            ("--seconds", args.seconds, 10.0),
            ("--warmup", args.warmup, 2.0),
            ("--threads", args.threads, 4),
            ("--rounds", args.rounds, 3),
            ("--clients", args.clients, default_client),
            ("--markdown", args.markdown, None),
            ("--out", args.out, None),
        )
        if value != default
    )
    command += " --no-mlserver" if args.no_mlserver else ""
    command += " --no-workers" if args.no_workers else ""
    report = run(
        seconds=args.seconds,
        warmup=args.warmup,
        threads=args.threads,
        rounds=args.rounds,
        clients=clients,
        with_mlserver=not args.no_mlserver,
        with_workers=not args.no_workers,
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
