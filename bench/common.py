"""Shared machinery of Evergreen's benchmarks.

- a seeded synthetic dataset (16 numeric + 4 categorical features, binary target with a
  learnable signal) written as a stream whose single batch holds `rows` rows;
- a temporary local Prefect server (`prefect server start`) for the flow variants;
- the harness: every measured variant runs in its own fresh interpreter, alternating with
  its baseline round by round; medians and flow/baseline ratios are reported.

The harness process stays small on purpose (no pandas, no heavy libraries at module level):
children are spawned from it, and a child must not inherit a large parent's memory
high-water mark. Peak memory is the child's `VmHWM` (the high-water RSS of its own address
space since exec); `ru_maxrss` is recorded next to it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evergreen.apps.services import PrefectServer, launch_prefect_server
from evergreen.loop.runner import DirectRunner
from evergreen.telemetry import RUNTIME_DEFAULTS, TELEMETRY_OFF

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = 1_000_000
DEFAULT_ROUNDS = 3
DEFAULT_SEED = 7
TARGET_RATIO = 1.15
MAX_REFERENCE_ROWS = 50_000
MIN_REFERENCE_ROWS = 2_000
START_DATE = "2024-01-01"
MODEL_NAME = "bench"

NUMERIC_FEATURES = tuple(f"num_{i:02d}" for i in range(16))
CATEGORICAL_LEVELS: dict[str, tuple[str, ...]] = {
    "region": ("north", "south", "east", "west", "central", "islands"),
    "channel": ("web", "app", "branch", "partner"),
    "plan": ("basic", "plus", "premium"),
    "segment": tuple(f"seg_{c}" for c in "abcdefghij"),
}
FEATURES = (*NUMERIC_FEATURES, *CATEGORICAL_LEVELS)

# Telemetry off and OpenMP not spinning on shared cores, for every process the harness starts
# (evergreen.telemetry imports nothing but os).
CHILD_ENV = {**TELEMETRY_OFF, **RUNTIME_DEFAULTS}

# Modules a variant imports before its clock starts, by library. Libraries also import lazily
# on first use (MLflow's SQL store and migrations, plotly's validators, Prefect's engines);
# the ones listed here are imported up front so the measured work holds as little import
# time as practical. What is still imported during the work is counted (`late_imports`).
PRELOAD_DATA = (
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "pandas.io.parquet",
    "fsspec",
    "fsspec.implementations.local",
)
PRELOAD_GX = ("evergreen.engines.gx",)  # GX as the product imports it (without the cloud SDKs)
PRELOAD_NANNYML = ("nannyml",)
PRELOAD_MLFLOW = (
    "mlflow",
    "mlflow.xgboost",
    "mlflow.models",
    "mlflow.data.pandas_dataset",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.tracing.processor.mlflow_v3",
    "alembic.command",
    "alembic.runtime.migration",
    "sqlalchemy.dialects.sqlite",
    "git",
)
PRELOAD_PLOTLY = ("plotly.graph_objects", "plotly.io", "plotly.offline")
PRELOAD_PREFECT = (
    "prefect",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.concurrency.sync",
    "prefect.artifacts",
    "prefect.events",
    "prefect.client.orchestration",
    "anyio._backends._asyncio",
)

_CHILD_CODE = "import sys; from bench.common import child_main; sys.exit(child_main(sys.argv[1:]))"


class BenchError(RuntimeError):
    """A benchmark that could not run; the message names the variant and its log file."""


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Measurement:
    """One variant run in one fresh process."""

    variant: str
    round: int
    work_seconds: float
    process_seconds: float
    import_seconds: float
    peak_rss_mb: float
    import_rss_mb: float
    ru_maxrss_mb: float
    late_imports: int
    outcome: dict[str, Any]
    steps: dict[str, float] = field(default_factory=dict)
    work_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0


@dataclass(frozen=True)
class VariantSummary:
    """Medians of one variant over the rounds."""

    variant: str
    runs: int
    work_seconds: float
    process_seconds: float
    import_seconds: float
    peak_rss_mb: float
    import_rss_mb: float
    late_imports: float
    steps: dict[str, float] = field(default_factory=dict)
    work_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0


@dataclass(frozen=True)
class MachineInfo:
    nproc: int
    cpu_count: int
    memory_gb: float
    cpu_model: str
    python: str
    platform: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchResult:
    """A benchmark's measurements, medians, flow/baseline ratios and verdict."""

    name: str
    rows: int
    features: int
    rounds: int
    target: float
    baseline: str
    flow: str
    measurements: list[Measurement]
    summaries: dict[str, VariantSummary]
    ratios: dict[str, float]
    passed: bool
    consistent: bool
    consistency_note: str
    machine: MachineInfo
    command: str
    date: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    # The optional third variant: the flow's whole work without Prefect (info, no verdict).
    same_work: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.baseline, self.flow) + ((self.same_work,) if self.same_work else ())


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Dataset:
    """A written benchmark stream: the config (JSON), the big batch and a pre-created
    MLflow store to copy for each run."""

    root: str
    config_json: str
    batch_path: str
    rows: int
    reference_rows: int
    features: int
    mlflow_template: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_rows_for(rows: int) -> int:
    """Reference size: enough to fit the monitor and train the serving model, capped so that
    preparing the data stays cheap next to what is measured."""
    return max(MIN_REFERENCE_ROWS, min(MAX_REFERENCE_ROWS, rows))


def synthetic_frame(rows: int, seed: int, start: str, days: float, id_start: int = 0):  # noqa: ANN201 - pd.DataFrame
    """`rows` labelled rows: id, timestamp (spread over `days` from `start`), 16 numeric and
    4 categorical features, and a binary target drawn from a known logit (so XGBoost has a
    signal to learn and NannyML a calibrated probability to estimate from)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    num = {}
    for i, name in enumerate(NUMERIC_FEATURES):
        kind = i % 4
        if kind == 0:
            values = rng.normal(0.0, 1.0, rows)
        elif kind == 1:
            values = rng.lognormal(0.0, 0.5, rows)
        elif kind == 2:
            values = rng.uniform(-2.0, 2.0, rows)
        else:
            values = rng.poisson(3.0, rows).astype(float)
        num[name] = values
    cats = {
        name: rng.choice(np.array(levels, dtype=object), size=rows)
        for name, levels in CATEGORICAL_LEVELS.items()
    }
    region_effect = {
        "north": 0.6,
        "south": -0.4,
        "east": 0.2,
        "west": -0.2,
        "central": 0.0,
        "islands": -0.8,
    }
    plan_effect = {"basic": -0.5, "plus": 0.1, "premium": 0.6}
    logit = (
        1.2 * num["num_00"]
        - 0.8 * num["num_04"]
        + 0.9 * np.log(num["num_01"])
        + 0.5 * num["num_02"] * num["num_06"]
        - 0.3 * (num["num_03"] - 3.0)
        + pd.Series(cats["region"]).map(region_effect).to_numpy(dtype=float)
        + pd.Series(cats["plan"]).map(plan_effect).to_numpy(dtype=float)
        + np.where(cats["channel"] == "app", 0.4, 0.0)
    )
    target = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    offsets = np.sort(rng.uniform(0.0, days * 86_400.0, rows))
    stamps = (pd.Timestamp(start) + pd.to_timedelta(offsets, unit="s")).astype("datetime64[us]")
    frame = pd.DataFrame(
        {"id": np.arange(id_start, id_start + rows, dtype=np.int64), "timestamp": stamps}
    )
    for name in NUMERIC_FEATURES:
        frame[name] = num[name]
    for name in CATEGORICAL_LEVELS:
        frame[name] = pd.array(cats[name], dtype="str")
    frame["target"] = target
    return frame


def synthetic_config_base(name: str, base: Path) -> dict[str, Any]:
    """The config sections every benchmark on `synthetic_frame` shares: its problem and
    columns, and an MLflow store (SQLite + artifact folder) under `base`."""
    return {
        "name": name,
        "problem_type": "binary_classification",
        "metric": "roc_auc",
        "columns": {
            "target": "target",
            "features": list(FEATURES),
            "categorical": list(CATEGORICAL_LEVELS),
            "slices": ["region"],
        },
        "mlflow": {
            "tracking_uri": f"sqlite:///{base / 'mlflow.db'}",
            "artifact_root": str(base / "mlartifacts"),
            "model_name": name,
        },
    }


def bench_config(root: str, batch_rows: int):  # noqa: ANN201 - ModelConfig
    """The benchmark's model config: one batch of `batch_rows` rows, labels delivered the
    same day (so the monitor also computes realized performance and the retrain window holds
    the whole batch), the window made of production rows only, and a fixed boosting budget."""
    from evergreen.config import parse_config

    base = Path(root)
    return parse_config(
        {
            **synthetic_config_base(MODEL_NAME, base),
            "data": {
                "root": str(base / "data"),
                "rows_per_batch": batch_rows,
                "max_batch_rows": max(batch_rows, 5_000_000),
                "label_delay_days": 0,
                "start_date": START_DATE,
            },
            "retrain": {"window": "sliding", "window_days": 14, "include_reference": False},
            "training": {
                "seed": 42,
                "num_boost_round": 40,
                "early_stopping_rounds": 10,
                "nthread": 2,
                "params": {"max_depth": 6, "eta": 0.3, "subsample": 0.9, "colsample_bytree": 0.9},
            },
        }
    )


def prepare_dataset(root: str, rows: int, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write the benchmark stream under `root` (runs in a child process; see `Dataset`).

    The serving model is trained on the reference; the analysis frame of `rows` rows becomes
    one batch (and its labels file); an MLflow store with both experiments is created once
    so that no measured run pays MLflow's schema migrations.
    """
    from evergreen.adapters import io, tracking
    from evergreen.simulation.stream import write_stream_from_frames

    started = time.perf_counter()
    ref_rows = reference_rows_for(rows)
    cfg = bench_config(root, rows)
    reference = synthetic_frame(ref_rows, seed, "2023-11-01", days=60)
    analysis = synthetic_frame(rows, seed + 1, "2023-12-31", days=1, id_start=10_000_000)
    info = write_stream_from_frames(
        cfg, reference, analysis, cfg.data.root, drift="none", seed=seed
    )
    batches = io.list_batches(cfg.data.path("batches"))
    if len(batches) != 1:
        raise BenchError(
            f"expected one batch of {rows} rows in {cfg.data.path('batches')}, found {len(batches)}"
        )
    tracking.connect(cfg.mlflow)
    for name in (cfg.mlflow.monitoring_experiment, cfg.mlflow.training_experiment):
        tracking.ensure_experiment(cfg.mlflow, name)
    dataset = Dataset(
        root=root,
        config_json=cfg.model_dump_json(),
        batch_path=batches[0].path,
        rows=info.n_rows,
        reference_rows=ref_rows,
        features=len(FEATURES),
        mlflow_template=cfg.mlflow.resolved_tracking_uri()[len("sqlite:///") :],
        seconds=round(time.perf_counter() - started, 2),
    )
    return dataset.to_dict()


def run_config_json(dataset: Dataset, run_dir: Path) -> str:
    """The dataset's config with everything a run writes (ledger, snapshots, MLflow store and
    artifacts) moved into `run_dir`, which starts from a copy of the MLflow template: every
    run sees the same, empty registry."""
    run_dir.mkdir(parents=True, exist_ok=True)
    db = run_dir / "mlflow.db"
    shutil.copyfile(dataset.mlflow_template, db)
    raw = json.loads(dataset.config_json)
    raw["data"]["state"] = str(run_dir / "state")
    raw["data"]["dataset_store"] = str(run_dir / "datasets")
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{db}"
    raw["mlflow"]["artifact_root"] = str(run_dir / "mlartifacts")
    return json.dumps(raw)


def load_run_config(config_json: str):  # noqa: ANN201 - ModelConfig
    """The ModelConfig of a run (inside a child process)."""
    from evergreen.config import parse_config

    return parse_config(json.loads(config_json))


# ----------------------------------------------------------------------------- Prefect server


@contextlib.contextmanager
def prefect_server(
    home: Path, wait: bool = True, timeout: float = 240.0
) -> Iterator[PrefectServer]:
    """`evergreen.apps.services.launch_prefect_server` as the benchmarks run it: PREFECT_HOME
    in `home`, no UI, the harness's child environment, from the repository root (its
    prefect.toml applies). Yields once /api/health answers, unless `wait` is False: then
    call `wait_healthy`."""
    with launch_prefect_server(
        home, extra_env=RUNTIME_DEFAULTS, wait=wait, timeout=timeout, cwd=REPO_ROOT
    ) as server:
        yield server


def server_rss_mb(server: PrefectServer) -> float:
    """Resident memory of the server and its child processes now."""
    return _tree_rss_kb(server.pid) / 1024.0


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process and its live children (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        total += sum(tree_cpu_seconds(int(c)) for c in children)
    return total


def _cpu_seconds(resource) -> float:  # noqa: ANN001 - the resource module
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tree_rss_kb(pid: int) -> int:
    total = _status_kb(f"/proc/{pid}/status", "VmRSS")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        total += sum(_tree_rss_kb(int(c)) for c in children)
    return total


# ----------------------------------------------------------------------------- child side


def _status_kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def child_main(argv: list[str]) -> int:
    """Entry point of a measured process: `<spec.json>` names the function to run, the
    modules to import before the clock starts, its arguments and where to write the result."""
    import resource

    started = time.perf_counter()
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    missing = []
    for name in spec["preload"]:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:  # a module another version of the library does not have
            missing.append(name)
    module, _, attr = spec["function"].partition(":")
    function: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), attr)
    modules_before = set(sys.modules)
    import_rss = _status_kb("/proc/self/status", "VmRSS")
    cpu_before = _cpu_seconds(resource)
    imported = time.perf_counter()
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        outcome = profiler.runcall(function, **spec["args"])
        profiler.dump_stats(spec["profile"])
    else:
        outcome = function(**spec["args"])
    done = time.perf_counter()
    work_cpu = _cpu_seconds(resource) - cpu_before
    late = sorted({m.split(".")[0] for m in set(sys.modules) - modules_before})
    result = {
        "work_seconds": done - imported,
        "import_seconds": imported - started,
        "peak_rss_kb": _status_kb("/proc/self/status", "VmHWM"),
        "import_rss_kb": import_rss,
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "work_cpu_seconds": work_cpu,
        "late_imports": len(set(sys.modules) - modules_before),
        "late_import_packages": late,
        "late_modules": sorted(set(sys.modules) - modules_before),
        "preload_missing": missing,
        "outcome": outcome,
    }
    Path(spec["result"]).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


class StepTimer:
    """Wall time per named step of a baseline, named like the flow's tasks, so the two can
    be compared step by step (Prefect records the same per task run). Steps may run in
    threads side by side; `seconds` also holds, under STEPS_WALL, the time at least one
    step was running (overlaps counted once)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            ended = time.perf_counter()
            with self._lock:
                self._seconds[name] = self._seconds.get(name, 0.0) + ended - started
                self._intervals.append((started, ended))

    @property
    def seconds(self) -> dict[str, float]:
        with self._lock:
            return {**self._seconds, STEPS_WALL: union_seconds(self._intervals)}


class TimedRunner(DirectRunner):
    """`evergreen.loop.runner.DirectRunner` (plain calls, submitted parts in a thread) that
    times every part of a step in `step` under its name, the name the flow's Prefect task
    has, so a step run without Prefect gets the same per-step table as the flow."""

    def __init__(self, step: StepTimer, logger: Callable[[str], None] | None = None) -> None:
        super().__init__(logger)
        self.step = step

    def part(
        self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False, **kwargs: Any
    ) -> Any:
        with self.step(name):
            return fn(*args, **kwargs)

    def submit(
        self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False, **kwargs: Any
    ) -> Any:
        # Timed in the thread that runs it: from when the work starts, not when it is queued.
        return super().submit(name, self.part, name, fn, *args, **kwargs)


def union_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


FLOW_TOTAL = "(flow run, as Prefect timed it)"
STEPS_WALL = "(any step running, overlaps counted once)"
_NOT_STEPS = (FLOW_TOTAL, STEPS_WALL)
_FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def prefect_task_seconds(api_url: str, flow_run_id: str, timeout: float = 30.0) -> dict[str, float]:
    """Running time of each task of a flow run, summed by task name, read back from the
    Prefect API (states arrive as events: poll until every task run is final), plus the
    flow run's own running time under FLOW_TOTAL."""
    deadline = time.monotonic() + timeout
    body = {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    while True:
        runs = _api(f"{api_url}/task_runs/filter", body)
        if (
            runs and all(r.get("state_type") in _FINAL_STATES for r in runs)
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out: dict[str, float] = {}
    intervals: list[tuple[float, float]] = []
    # Task-run names are "<task name>-<3 hex digits>" (or "-<n>"); in the order they started.
    for r in sorted(runs, key=lambda r: r.get("start_time") or "~"):
        name = re.sub(r"-(\d+|[0-9a-f]{3})$", "", r["name"])
        run_time = float(r.get("total_run_time") or 0.0)
        out[name] = round(out.get(name, 0.0) + run_time, 3)
        if r.get("start_time"):
            start = datetime.fromisoformat(r["start_time"]).timestamp()
            intervals.append((start, start + run_time))
    out[STEPS_WALL] = round(union_seconds(intervals), 3)
    flow_run = _api(f"{api_url}/flow_runs/{flow_run_id}")
    out[FLOW_TOTAL] = round(float(flow_run.get("total_run_time") or 0.0), 3)
    return out


def _api(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


# ----------------------------------------------------------------------------- parent side


@dataclass(frozen=True)
class Variant:
    """One way of doing a benchmark's work: a function run in a fresh process."""

    name: str
    function: str
    preload: tuple[str, ...]
    uses_prefect: bool = False


@dataclass(frozen=True)
class Benchmark:
    """A flow and its baseline; `arguments` builds a run's keyword arguments (JSON)."""

    name: str
    title: str
    baseline: Variant
    flow: Variant
    arguments: Callable[[Dataset, Path], dict[str, Any]]
    compare: tuple[str, ...]
    description: str
    target: float = TARGET_RATIO
    # Optional: the flow's whole work done directly (no Prefect), measured in the same
    # rounds and reported beside the verdict, so the orchestration's own cost is visible.
    same_work: Variant | None = None

    @property
    def variants(self) -> tuple[Variant, ...]:
        return (self.baseline, self.flow) + ((self.same_work,) if self.same_work else ())


def child_env(api_url: str | None, prefect_home: str | Path | None) -> dict[str, str]:
    env = {**os.environ, **CHILD_ENV, "PYTHONUNBUFFERED": "1"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if prefect_home:
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def run_child(
    function: str,
    args: dict[str, Any],
    run_dir: Path,
    env: dict[str, str],
    preload: tuple[str, ...] = (),
    profile: str | None = None,
    timeout: float = 3600.0,
) -> tuple[dict[str, Any], float]:
    """Run `function(**args)` in a fresh interpreter; returns its result and the process wall time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = (
        run_dir / "spec.json",
        run_dir / "result.json",
        run_dir / "output.log",
    )
    spec = {
        "function": function,
        "preload": list(preload),
        "args": args,
        "result": str(result_path),
        "profile": profile,
    }
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD_CODE, str(spec_path)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(
                f"{function} did not finish within {timeout:.0f} s; see {log_path}"
            ) from exc
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not result_path.exists():
        raise BenchError(
            f"{function} failed (exit {proc.returncode}); last lines of {log_path}:\n{_tail(log_path)}"
        )
    return json.loads(result_path.read_text(encoding="utf-8")), seconds


def measure_variant(
    bench: Benchmark,
    variant: Variant,
    dataset: Dataset,
    run_dir: Path,
    round_: int,
    env: dict[str, str],
    server: PrefectServer | None = None,
) -> Measurement:
    """One run of one variant in a fresh process; its steps come from the baseline's own
    timer, or for a flow from Prefect's task runs (read after the process ended)."""
    server_cpu = tree_cpu_seconds(server.pid) if server is not None else 0.0
    result, seconds = run_child(
        variant.function, bench.arguments(dataset, run_dir), run_dir, env, variant.preload
    )
    if server is not None:
        server_cpu = tree_cpu_seconds(server.pid) - server_cpu
    outcome = dict(result["outcome"])
    steps = outcome.pop("steps", {})
    flow_run_id = outcome.get("flow_run_id")
    if flow_run_id and server is not None:
        steps = prefect_task_seconds(server.api_url, flow_run_id)
    return Measurement(
        variant=variant.name,
        round=round_,
        work_seconds=round(result["work_seconds"], 3),
        process_seconds=round(seconds, 3),
        import_seconds=round(result["import_seconds"], 3),
        peak_rss_mb=round(result["peak_rss_kb"] / 1024.0, 1),
        import_rss_mb=round(result["import_rss_kb"] / 1024.0, 1),
        ru_maxrss_mb=round(result["ru_maxrss_kb"] / 1024.0, 1),
        late_imports=int(result["late_imports"]),
        outcome=outcome,
        steps={k: round(v, 3) for k, v in steps.items()},
        work_cpu_seconds=round(float(result.get("work_cpu_seconds", 0.0)), 3),
        server_cpu_seconds=round(server_cpu, 3),
    )


def measure(
    bench: Benchmark,
    dataset: Dataset,
    workdir: Path,
    rounds: int = DEFAULT_ROUNDS,
    server: PrefectServer | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Run baseline and flow `rounds` times each, alternating which goes first, in fresh
    processes; medians, ratios flow/baseline and the verdict against the target."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    started = time.perf_counter()
    machine = machine_info()
    env = child_env(server.api_url if server else None, server.home if server else None)
    measurements: list[Measurement] = []
    variants = bench.variants
    for r in range(rounds):
        # Each round starts with another variant (two variants: alternating).
        k = r % len(variants)
        order = variants[k:] + variants[:k]
        for variant in order:
            if variant.uses_prefect and server is None:
                raise BenchError(
                    f"variant {variant.name!r} of {bench.name!r} needs a Prefect server"
                )
            run_dir = workdir / f"{bench.name}-{variant.name}-{r}"
            m = measure_variant(bench, variant, dataset, run_dir, r, env, server)
            log(
                f"  {bench.name} round {r + 1}/{rounds} {variant.name:<9} work {m.work_seconds:7.2f} s  "
                f"process {m.process_seconds:7.2f} s  peak RSS {m.peak_rss_mb:7.1f} MB"
            )
            measurements.append(m)
    summaries = {v.name: summarize(v.name, measurements) for v in variants}
    base, flow = summaries[bench.baseline.name], summaries[bench.flow.name]
    ratios = {
        "work_seconds": _ratio(flow.work_seconds, base.work_seconds),
        "process_seconds": _ratio(flow.process_seconds, base.process_seconds),
        "peak_rss_mb": _ratio(flow.peak_rss_mb, base.peak_rss_mb),
    }
    if bench.same_work is not None:
        same = summaries[bench.same_work.name]
        ratios["same_work_work_seconds"] = _ratio(flow.work_seconds, same.work_seconds)
        ratios["same_work_peak_rss_mb"] = _ratio(flow.peak_rss_mb, same.peak_rss_mb)
    consistent, note = compare_outcomes(measurements, bench.compare)
    notes = []
    if server is not None:
        notes.append(
            f"Prefect server RSS at the end: {server_rss_mb(server):.0f} MB (not counted in either variant)"
        )
    return BenchResult(
        name=bench.name,
        rows=dataset.rows,
        features=dataset.features,
        rounds=rounds,
        target=bench.target,
        baseline=bench.baseline.name,
        flow=bench.flow.name,
        measurements=measurements,
        summaries=summaries,
        ratios=ratios,
        passed=ratios["work_seconds"] <= bench.target and ratios["peak_rss_mb"] <= bench.target,
        consistent=consistent,
        consistency_note=note,
        machine=_with_load_after(machine),
        command=command,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=round(time.perf_counter() - started, 1),
        notes=notes,
        same_work=bench.same_work.name if bench.same_work else None,
    )


def summarize(variant: str, measurements: list[Measurement]) -> VariantSummary:
    """Medians of a variant's runs."""
    runs = [m for m in measurements if m.variant == variant]
    if not runs:
        raise ValueError(f"no measurements of variant {variant!r}")

    def med(attr: str) -> float:
        return round(statistics.median(getattr(m, attr) for m in runs), 3)

    return VariantSummary(
        variant=variant,
        runs=len(runs),
        work_seconds=med("work_seconds"),
        process_seconds=med("process_seconds"),
        import_seconds=med("import_seconds"),
        peak_rss_mb=med("peak_rss_mb"),
        import_rss_mb=med("import_rss_mb"),
        late_imports=med("late_imports"),
        work_cpu_seconds=med("work_cpu_seconds"),
        server_cpu_seconds=med("server_cpu_seconds"),
        steps={
            name: round(statistics.median(m.steps.get(name, 0.0) for m in runs), 3)
            for name in dict.fromkeys(k for m in runs for k in m.steps)
        },
    )


def compare_outcomes(measurements: list[Measurement], keys: tuple[str, ...]) -> tuple[bool, str]:
    """Whether every run produced the same outcome on `keys` (the variants did the same work)."""
    if not measurements:
        return True, ""
    first = measurements[0]
    for m in measurements[1:]:
        for key in keys:
            a, b = first.outcome.get(key), m.outcome.get(key)
            same = (
                abs(a - b) <= 1e-9 * max(1.0, abs(a))
                if isinstance(a, float) and isinstance(b, float)
                else a == b
            )
            if not same:
                return False, (
                    f"{key}: {first.variant} round {first.round + 1} gave {a!r}, "
                    f"{m.variant} round {m.round + 1} gave {b!r}"
                )
    return True, f"all runs agree on {', '.join(keys)}"


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b > 0 else float("inf")


# ----------------------------------------------------------------------------- machine


def machine_info() -> MachineInfo:
    """What the numbers were measured on (read from /proc; imports nothing heavy)."""
    from importlib.metadata import PackageNotFoundError, version

    mem_kb = _status_kb("/proc/meminfo", "MemTotal")
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("prefect", "mlflow", "great-expectations", "nannyml", "xgboost", "pandas", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "absent"
    return MachineInfo(
        nproc=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else (os.cpu_count() or 0),
        cpu_count=os.cpu_count() or 0,
        memory_gb=round(mem_kb / 1024 / 1024, 1),
        cpu_model=model,
        python=platform.python_version(),
        platform=platform.platform(),
        load_before=_loadavg(),
        versions=versions,
    )


def _loadavg() -> tuple[float, float, float]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return (0.0, 0.0, 0.0)


def _with_load_after(machine: MachineInfo) -> MachineInfo:
    return MachineInfo(**{**asdict(machine), "load_after": _loadavg()})


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# ----------------------------------------------------------------------------- reporting


def format_table(results: list[BenchResult]) -> str:
    """A plain-text table of medians and ratios, one block per benchmark."""
    out = []
    header = f"{'benchmark':<10} {'variant':<9} {'work s':>8} {'process s':>10} {'peak RSS MB':>12}"
    for r in results:
        out.append(
            f"{r.name}: {r.rows:,} rows x {r.features} features, {r.rounds} round(s), medians"
        )
        out.append(header)
        for name in r.variants:
            s = r.summaries[name]
            out.append(
                f"{r.name:<10} {name:<9} {s.work_seconds:>8.2f} {s.process_seconds:>10.2f} {s.peak_rss_mb:>12.1f}"
            )
        ra = r.ratios
        out.append(
            f"{r.name:<10} {'ratio':<9} {ra['work_seconds']:>8.3f} {ra['process_seconds']:>10.3f} "
            f"{ra['peak_rss_mb']:>12.3f}   target <= {r.target}: {'PASS' if r.passed else 'FAIL'}"
        )
        if r.same_work:
            out.append(
                f"{r.name:<10} {'flow/' + r.same_work:<9} {ra['same_work_work_seconds']:>8.3f} {'':>10} "
                f"{ra['same_work_peak_rss_mb']:>12.3f}   (info: the flow against its own work without Prefect)"
            )
        if not r.consistent:
            out.append(f"  WARNING: variants did not do the same work: {r.consistency_note}")
        out.append("")
    return "\n".join(out)


def render_markdown(result: BenchResult) -> str:
    """The generated section of BENCHMARKS.md for one benchmark."""
    b, f = result.summaries[result.baseline], result.summaries[result.flow]
    w = result.summaries[result.same_work] if result.same_work else None
    ra = result.ratios
    m = result.machine

    def verdict(ratio: float) -> str:
        return "pass" if ratio <= result.target else "**fail**"

    def row(measure: str, fmt: str, attr: str, ratio: str, target: str, outcome: str, same: str = "") -> str:
        cells = [measure, format(getattr(b, attr), fmt), format(getattr(f, attr), fmt), ratio, target, outcome]
        if w is not None:
            cells += [format(getattr(w, attr), fmt), same]
        return "| " + " | ".join(cells) + " |"

    header = f"| measure | {result.baseline} | {result.flow} | ratio | target | result |"
    rule = "|---|---:|---:|---:|---:|---|"
    if w is not None:
        header += f" {result.same_work} (info) | flow / {result.same_work} |"
        rule += "---:|---:|"
    lines = [
        f"Measured {result.date} with `{result.command}` "
        f"({result.rows:,} rows x {result.features} features, {result.rounds} rounds, medians; "
        f"run took {result.seconds:.0f} s).",
        "",
        header,
        rule,
        row(
            "wall time of the work (s)", ".2f", "work_seconds", f"{ra['work_seconds']:.3f}",
            f"<= {result.target}", verdict(ra["work_seconds"]),
            f"{ra.get('same_work_work_seconds', 0.0):.3f}",
        ),
        row(
            "peak RSS (MB)", ".0f", "peak_rss_mb", f"{ra['peak_rss_mb']:.3f}",
            f"<= {result.target}", verdict(ra["peak_rss_mb"]),
            f"{ra.get('same_work_peak_rss_mb', 0.0):.3f}",
        ),
        row(
            "process wall time incl. start and imports (s)", ".2f", "process_seconds",
            f"{ra['process_seconds']:.3f}", "—", "info",
        ),
        row(
            "CPU time of the work, all threads (s)", ".2f", "work_cpu_seconds",
            f"{_ratio(f.work_cpu_seconds, b.work_cpu_seconds):.3f}", "—", "info",
        ),
        "",
    ]
    spread = {
        variant: ", ".join(f"{x.work_seconds:.2f}" for x in result.measurements if x.variant == variant)
        for variant in dict.fromkeys(x.variant for x in result.measurements)
    }
    lines += [
        "Work (s) of every run, in order: " + "; ".join(f"{v} {runs}" for v, runs in spread.items())
        + f". Load average {m.load_before[0]} before / {m.load_after[0]} after (machine, imports, per-run"
        " details: the --out JSON).",
        "",
        *render_steps(result),
        "",
    ]
    lines.append(
        f"Same work in every run: {'yes' if result.consistent else '**no**'} ({result.consistency_note})."
    )
    for note in result.notes:
        lines.append(f"{note}.")
    return "\n".join(lines)


SMALL_STEP_SECONDS = 0.1  # steps below this in every variant are counted, not listed


def render_steps(result: BenchResult) -> list[str]:
    """Where the work's time goes, step by step (medians): the baseline's timed steps next to
    the flow's Prefect task runs of the same name, and what the flow spent outside them."""
    variants = result.variants
    steps = {
        v: {k: x for k, x in result.summaries[v].steps.items() if k not in _NOT_STEPS} for v in variants
    }
    if not any(steps.values()):
        return []
    b, f = result.baseline, result.flow
    names = list(dict.fromkeys([*steps[f], *(k for v in variants for k in steps[v])]))

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    lines = [
        "Where the time goes (medians, s: the direct variants' step timers, the flow's task "
        "runs from the API; 'outside' = work minus the time any step ran):",
        "",
        "| step | " + " | ".join(variants) + " | flow - baseline |",
        "|---|" + "---:|" * (len(variants) + 1),
    ]
    small = []
    for name in names:
        values = [steps[v].get(name) for v in variants]
        diff = (steps[f].get(name) or 0.0) - (steps[b].get(name) or 0.0)
        if max((x or 0.0) for x in values) < SMALL_STEP_SECONDS and abs(diff) < SMALL_STEP_SECONDS:
            small.append(name)
            continue
        lines.append(f"| {name} | " + " | ".join(cell(x) for x in values) + f" | {diff:+.2f} |")
    if small:
        lines.append(f"| {len(small)} steps under {SMALL_STEP_SECONDS} s each | " + " | ".join("" for _ in variants) + " |  |")
    outside = [_median_outside(result, v) for v in variants]
    lines.append(
        "| outside the steps / task runs (flow: engine, API calls, flow body) | "
        + " | ".join(f"{x:.2f}" for x in outside)
        + f" | {outside[1] - outside[0]:+.2f} |"
    )
    work = [result.summaries[v].work_seconds for v in variants]
    lines.append(
        "| **work** | " + " | ".join(f"{x:.2f}" for x in work) + f" | {work[1] - work[0]:+.2f} |"
    )
    return lines


def _median_outside(result: BenchResult, variant: str) -> float:
    """Median over a variant's runs of the work time not spent in its steps / task runs."""
    values = [
        m.work_seconds
        - m.steps.get(STEPS_WALL, sum(v for k, v in m.steps.items() if k not in _NOT_STEPS))
        for m in result.measurements
        if m.variant == variant
    ]
    return statistics.median(values) if values else 0.0


def load_results(path: Path) -> list[BenchResult]:
    """Results written by `run(out=...)`, as BenchResult objects (to re-render them)."""
    results = []
    for raw in json.loads(Path(path).read_text(encoding="utf-8")):
        raw = dict(raw)
        raw["measurements"] = [Measurement(**m) for m in raw["measurements"]]
        raw["summaries"] = {k: VariantSummary(**v) for k, v in raw["summaries"].items()}
        machine = dict(raw["machine"])
        machine["load_before"] = tuple(machine["load_before"])
        machine["load_after"] = tuple(machine["load_after"])
        raw["machine"] = MachineInfo(**machine)
        results.append(BenchResult(**raw))
    return results


def update_markdown(path: Path, results: list[BenchResult]) -> None:
    """Replace each benchmark's generated section (between its markers) in `path`."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for result in results:
        start, end = f"<!-- bench:{result.name}:start -->", f"<!-- bench:{result.name}:end -->"
        block = f"{start}\n{render_markdown(result)}\n{end}"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + block + tail
        else:
            text = text.rstrip("\n") + f"\n\n## {result.name}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def train_in_memory(train, window, cfg):  # noqa: ANN001, ANN201 - frames, ModelConfig -> TrainedModel
    """The in-memory baselines' training, the same work as the flow's: `train_model` on the
    training rows, then with `training.refit_on_holdout` a refit on the whole window (the
    hold-out too), as `train_model_chunks(final=...)` does."""
    from evergreen.engines import training

    model = training.train_model(train, cfg)
    return training.refit_on(model, window, cfg) if cfg.training.refit_on_holdout else model
