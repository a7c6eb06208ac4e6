"""`python -m bench fleet`: a fleet of models monitored on the production stack.

A temporary stack (`evergreen stack up`: PostgreSQL, Prefect server with basic auth, MLflow
server, S3 endpoint, process work pool) is started; N models are registered (one
`evergreen-model` block and one champion each, data on `s3://`), and each model's monitor
deployment run is submitted for one batch, all at once, first with one worker on the pool and
then with two (each worker runs one flow run at a time: the monitor's work is
single-threaded). Per phase it reports model-batches per minute, the Prefect API's p50/p99
latency seen by a client polling it during the phase, PostgreSQL connections (pg_stat_activity),
the database growth per model-batch, and per run the orchestration seconds: the run's
wall time (scheduled start to end) less the time inside its tasks. Then one 100k-row batch is
monitored alone for the share of orchestration in a large run. From these it projects what
1,000 models with daily batches need.

    uv run python -m bench fleet [--models 6] [--rows 5000] [--big-rows 100000] [--out fleet.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_ROOT = "s3://evergreen/bench-fleet"
MONITOR_DEPLOYMENT = "monitor/monitor"


@dataclass
class RunTiming:
    model: str
    state: str
    queued_s: float  # scheduled start -> Running: waiting for a free worker, then starting
    running_s: float  # Running -> end
    tasks_s: float  # inside task runs (the work)
    starting_s: float = 0.0  # picked up by a worker (Pending) -> Running: process start, flow import

    @property
    def total_s(self) -> float:
        """The run's own time: from a worker picking it up to its end (not the wait for a
        free worker, which is the fleet's queue, not this run's orchestration)."""
        return self.starting_s + self.running_s

    @property
    def orchestration_s(self) -> float:
        return max(0.0, self.total_s - self.tasks_s)


@dataclass
class Phase:
    workers: int
    models: int
    rows: int
    wall_s: float
    model_batches_per_min: float
    api_p50_ms: float
    api_p99_ms: float
    api_samples: int
    pg_connections_max: int
    pg_connections_mean: float
    prefect_db_bytes_per_batch: float
    mlflow_db_bytes_per_batch: float
    orchestration_s_median: float
    tasks_s_median: float
    starting_s_median: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)


class Sampler:
    """Polls the Prefect API (a flow-runs query, with the auth string) and PostgreSQL's
    connection count in the background while a phase runs."""

    def __init__(self, api_url: str, auth: str, pg_count: Callable[[], int], every: float = 0.5) -> None:
        self.api_url, self.auth, self.pg_count, self.every = api_url, auth, pg_count, every
        self.latencies_ms: list[float] = []
        self.connections: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import httpx

        user, password = self.auth.split(":", 1)
        with httpx.Client(timeout=30, trust_env=False, auth=(user, password)) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    client.post(f"{self.api_url}/flow_runs/filter", json={"limit": 10}).raise_for_status()
                    self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                except Exception:  # noqa: BLE001 - a failed probe is not a latency
                    pass
                with contextlib.suppress(Exception):  # PostgreSQL restarting: no sample
                    self.connections.append(self.pg_count())
                self._stop.wait(self.every)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def prepare_models(home: Path, n: int, rows: int, batches: int, log: Callable[[str], None]) -> tuple[list[str], list[list[str]]]:
    """N models with the same demo data (each its own block, data prefix and champion); returns
    their block names and, per model, `batches` batch paths on s3://."""
    import os

    import fsspec

    from blocks.model_config import EvergreenModel, block_document_name
    from evergreen.config import load_config
    from evergreen.simulation.stream import write_demo_stream
    from flows.bootstrap import bootstrap

    base = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    staging = home / "staging"
    cfg0 = base.model_copy(update={"data": base.data.model_copy(update={"root": str(staging), "rows_per_batch": rows})})
    info = write_demo_stream(cfg0, str(staging), drift="none")
    days = info.days[:batches]
    fs = fsspec.filesystem("s3")
    names: list[str] = []
    paths: list[list[str]] = []
    for i in range(n):
        name = f"fleet-bench-{i}"
        root = f"{BENCH_ROOT}/{name}"
        cfg = base.model_copy(update={
            "name": name,
            "data": base.data.model_copy(update={"root": root, "rows_per_batch": rows}),
            "mlflow": base.mlflow.model_copy(update={
                "tracking_uri": os.environ["MLFLOW_TRACKING_URI"], "artifact_root": f"mlflow-artifacts:/{name}",
                "model_name": name, "ui_url": os.environ["MLFLOW_TRACKING_URI"],
            }),
        })
        for file in ("reference.parquet", "monitor_reference.parquet"):
            fs.put_file(str(staging / file), f"{root}/{file}")
        model_paths = []
        for day in days:
            fs.put_file(str(staging / "batches" / f"{day}.parquet"), f"{root}/batches/{day}.parquet")
            model_paths.append(f"{root}/batches/{day}.parquet")
        block = block_document_name(name)
        EvergreenModel.register_type_and_schema()
        EvergreenModel.from_config(cfg).save(block, overwrite=True)
        # Each model trains its champion on the reference (taking model 0's in with
        # `model="models:/..."` fails on the demo's "0 – 20K" category: see the report).
        t0 = time.perf_counter()
        bootstrap(config=cfg, return_state=True).result()
        log(f"model {name}: block, data on {root}, champion ({time.perf_counter() - t0:.0f} s)")
        names.append(block)
        paths.append(model_paths)
    return names, paths


def run_phase(blocks: list[str], batch_paths: list[str], workers: int, state: Any, creds: Any, log: Callable[[str], None]) -> Phase:  # noqa: ANN401
    """Submit one monitor run per model at once; wait for all; measure."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from evergreen.apps import stack

    sizes0 = _db_sizes(state, creds)
    with Sampler(state.prefect_api_url, creds.prefect_auth, lambda: sum(stack.postgres_connections(state, creds).values())) as sampler:
        t0 = time.perf_counter()
        runs = [
            run_deployment(MONITOR_DEPLOYMENT, parameters={"config": b, "batch": p}, timeout=0, tags=["bench-fleet"])
            for b, p in zip(blocks, batch_paths, strict=True)
        ]
        ids = [r.id for r in runs]
        with get_client(sync_client=True) as client:
            while True:
                current = [client.read_flow_run(i) for i in ids]
                if all(r.state is not None and r.state.is_final() for r in current):
                    break
                time.sleep(1)
            wall = time.perf_counter() - t0
            timings = [_timing(client, r, b) for r, b in zip(current, blocks, strict=True)]
    sizes1 = _db_sizes(state, creds)
    n = len(blocks)
    failed = [t for t in timings if t.state != "Completed"]
    if failed:
        log(f"warning: {len(failed)} run(s) did not complete: {[(t.model, t.state) for t in failed]}")
    phase = Phase(
        workers=workers, models=n, rows=0, wall_s=round(wall, 1), model_batches_per_min=round(n / wall * 60, 2),
        api_p50_ms=round(_percentile(sampler.latencies_ms, 0.5), 1), api_p99_ms=round(_percentile(sampler.latencies_ms, 0.99), 1),
        api_samples=len(sampler.latencies_ms),
        pg_connections_max=max(sampler.connections, default=0),
        pg_connections_mean=round(statistics.fmean(sampler.connections), 1) if sampler.connections else 0.0,
        prefect_db_bytes_per_batch=round((sizes1["prefect"] - sizes0["prefect"]) / n),
        mlflow_db_bytes_per_batch=round((sizes1["mlflow"] - sizes0["mlflow"]) / n),
        orchestration_s_median=round(statistics.median(t.orchestration_s for t in timings), 1),
        starting_s_median=round(statistics.median(t.starting_s for t in timings), 1),
        tasks_s_median=round(statistics.median(t.tasks_s for t in timings), 1),
        runs=[{**asdict(t), "orchestration_s": round(t.orchestration_s, 2), "total_s": round(t.total_s, 2)} for t in timings],
    )
    log(f"{workers} worker(s): {n} model-batches in {wall:.0f} s = {phase.model_batches_per_min} per min; API p50 "
        f"{phase.api_p50_ms} ms p99 {phase.api_p99_ms} ms; PostgreSQL connections max {phase.pg_connections_max}; "
        f"orchestration {phase.orchestration_s_median} s / run (process start {phase.starting_s_median} s; tasks {phase.tasks_s_median} s)")
    return phase


def _timing(client: Any, run: Any, model: str) -> RunTiming:  # noqa: ANN401
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    # Task runs of one flow run here run one after another: their sum is the work's time.
    tasks_s = sum(t.total_run_time.total_seconds() for t in tasks if t.total_run_time)
    scheduled = run.expected_start_time or run.created
    queued = (run.start_time - scheduled).total_seconds() if run.start_time else 0.0
    running = (run.end_time - run.start_time).total_seconds() if run.end_time and run.start_time else 0.0
    pending = [st.timestamp for st in client.read_flow_run_states(run.id) if st.type.value == "PENDING"]
    starting = (run.start_time - min(pending)).total_seconds() if pending and run.start_time else 0.0
    return RunTiming(model=model, state=run.state.name if run.state else "?", queued_s=round(max(queued, 0.0), 2),
                     running_s=round(running, 2), tasks_s=round(tasks_s, 2), starting_s=round(max(starting, 0.0), 2))


def _db_sizes(state: Any, creds: Any) -> dict[str, int]:  # noqa: ANN401
    from evergreen.apps import stack

    conn = stack._pg_connect(state, creds.postgres_superuser, creds.postgres_password, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname IN ('prefect', 'mlflow')")
            return {str(k): int(v) for k, v in cur.fetchall()}
    finally:
        conn.close()


def deploy_monitor(home: Path, state: Any, creds: Any, log: Callable[[str], None]) -> None:  # noqa: ANN401
    """prefect.yaml's monitor deployment onto the pool, without a deployment-level
    concurrency limit: such a limit is global across models (a single-model prefect.yaml has
    one) and would serialize the fleet; per-model limits are the flows' own."""
    import subprocess

    import yaml

    from evergreen.apps.deployfile import PROJECT_FILE, load_yaml
    from evergreen.apps.services import executable, service_env

    project = load_yaml(PROJECT_FILE)
    for d in project["deployments"]:
        if d["name"] == "monitor" and d.pop("concurrency_limit", None) is not None:
            log("note: prefect.yaml's monitor deployment has a deployment-level (global) concurrency limit; lifted for the fleet")
    path = home / "bench.prefect.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False), encoding="utf-8")
    result = subprocess.run(  # noqa: S603
        [executable("prefect"), "--no-prompt", "deploy", "--name", "monitor", "--prefect-file", str(path)],
        cwd=state.cwd, capture_output=True, text=True, check=False, timeout=600,
        env=service_env({"PREFECT_API_URL": state.prefect_api_url, "PREFECT_API_AUTH_STRING": creds.prefect_auth}),
    )
    if result.returncode != 0:
        raise RuntimeError(f"deploying monitor failed:\n{(result.stdout + result.stderr)[-3000:]}")


def big_batch(path: str, rows: int, out: str) -> str:
    """A `rows`-row batch resampled from `path` (new unique ids, same day)."""
    import fsspec
    import pandas as pd

    from evergreen.config import load_config

    cols = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").columns
    with fsspec.open(path, "rb") as fh:
        frame = pd.read_parquet(fh)
    big = frame.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    big[cols.id] = range(10_000_000, 10_000_000 + rows)
    big = big.sort_values(cols.timestamp, kind="mergesort").reset_index(drop=True)
    with fsspec.open(out, "wb") as fh:
        big.to_parquet(fh, index=False)
    return out


def project(phases: list[Phase], big: RunTiming | None) -> dict[str, Any]:
    """1,000 models with one batch a day each, from the measured per-batch worker time."""
    one = next(p for p in phases if p.workers == 1)
    worker_s_per_batch = one.wall_s / one.models  # one worker, one run at a time
    batches_per_day = 1000
    db_bytes = one.prefect_db_bytes_per_batch + one.mlflow_db_bytes_per_batch
    return {
        "worker_seconds_per_model_batch": round(worker_s_per_batch, 1),
        "workers_spread_over_24h": max(1, -(-int(batches_per_day * worker_s_per_batch) // 86400)),
        "workers_within_2h": max(1, -(-int(batches_per_day * worker_s_per_batch) // 7200)),
        "database_bytes_per_month": int(db_bytes * batches_per_day * 30),
        "prefect_db_bytes_per_batch": one.prefect_db_bytes_per_batch,
        "mlflow_db_bytes_per_batch": one.mlflow_db_bytes_per_batch,
        "big_run_orchestration_share": round(big.orchestration_s / big.total_s, 3) if big and big.total_s else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6, help="models in the fleet (one batch each per phase)")
    parser.add_argument("--rows", type=int, default=5000, help="rows per batch")
    parser.add_argument("--big-rows", type=int, default=100_000, help="rows of the one large batch (0: skip it)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="leave the stack up and its folder in place")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from evergreen.telemetry import disable_telemetry

    disable_telemetry()
    from evergreen.apps import stack

    log = print
    home = Path(tempfile.mkdtemp(prefix="evergreen-fleet-bench-"))
    began = time.perf_counter()
    try:
        state = stack.up(home, workers=0, deploy=False, log=lambda m: log(f"[stack] {m}"))
        creds = stack.load_credentials(home)
        assert creds is not None
        deploy_monitor(home, state, creds, log)
        stack.apply_env(stack.client_env(state, creds))
        settings = stack.prefect_settings(state, creds)
        settings.__enter__()
        blocks, paths = prepare_models(home, args.models, args.rows, 3, log)
        phases = []
        for workers in (1, 2):
            stack.add_worker(home, limit=1)
            time.sleep(5)  # the worker registers and polls
            phase = run_phase(blocks, [p[workers - 1] for p in paths], workers, state, creds, log)
            phase.rows = args.rows
            phases.append(phase)
        big = None
        if args.big_rows:
            for w in stack.read_state(home).workers[1:]:
                stack.stop_worker(home, w.name)
            out = big_batch(paths[0][2], args.big_rows, paths[0][2].replace(".parquet", "-big.parquet").replace("/batches/", "/big/"))
            big_phase = run_phase(blocks[:1], [out], 1, state, creds, log)
            big = RunTiming(**{k: big_phase.runs[0][k] for k in ("model", "state", "queued_s", "running_s", "tasks_s", "starting_s")})
        speedup = phases[1].model_batches_per_min / phases[0].model_batches_per_min
        result = {
            "command": "uv run python -m bench fleet " + " ".join(sys.argv[1:] if argv is None else argv),
            "models": args.models, "rows": args.rows, "seconds": round(time.perf_counter() - began),
            "phases": [asdict(p) for p in phases],
            "speedup_2_vs_1": round(speedup, 2),
            "big_run": (asdict(big) | {"orchestration_s": round(big.orchestration_s, 2), "total_s": round(big.total_s, 2), "rows": args.big_rows}) if big else None,
            "projection_1000_models_daily": project(phases, big),
        }
        log(json.dumps({k: v for k, v in result.items() if k != "phases"}, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    finally:
        if not args.keep:
            stack.down(home, log=lambda m: log(f"[stack] {m}"))
            stack.purge(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
