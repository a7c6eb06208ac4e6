"""How the monitor and the retrain grow with the data: `python -m bench scale [--rows
100000,1000000,3000000,10000000] [--compare-at 1000000] [--out FILE.json] [--markdown
BENCHMARKS.md] [--keep]`.

At each size the benchmark stream (`bench.common.prepare_dataset`: 20 features, one batch
of that many rows, its labels the same day) is written once, then in fresh processes:

- **monitor**: the monitor step (`evergreen.loop.monitor.monitor`) on the batch, its parts
  as plain calls (no Prefect: what grows with the data is the work), MLflow run included;
- **retrain**: the retrain step (`evergreen.loop.retrain.retrain`) on the window (the whole
  batch), snapshot, validation, XGBoost, evaluation, MLflow run and registration included.

Both read their data in chunks (bounded memory). At `--compare-at` rows the in-memory
paths run beside them, the way the steps ran before they read in chunks: the batch as one
frame through `validate_batch` and `compute_monitor`; the window as one frame through
`assemble_training_window`, `validate_batch`, `stage_snapshot` and `train_model`.

Each process reports the wall time of its work (after imports) and its peak RSS (VmHWM).
Targets (issue 20): peak RSS <= 3 GB at 10M rows for both; time at 10M <= 11 x time at 1M;
bounded <= 1.2 x in-memory wall time at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_SEED,
    PRELOAD_DATA,
    PRELOAD_GX,
    PRELOAD_MLFLOW,
    PRELOAD_NANNYML,
    PRELOAD_PLOTLY,
    BenchError,
    Dataset,
    StepTimer,
    TimedRunner,
    child_env,
    load_run_config,
    machine_info,
    run_child,
    run_config_json,
    train_in_memory,
)

DEFAULT_SIZES = (100_000, 1_000_000, 3_000_000, 10_000_000)
COMPARE_AT = 1_000_000
MAX_PEAK_MB = 3 * 1024
MAX_GROWTH = 11.0  # time at 10M / time at 1M
MAX_BOUNDED_RATIO = 1.2
_PRELOAD = (
    *PRELOAD_DATA,
    *PRELOAD_GX,
    *PRELOAD_NANNYML,
    *PRELOAD_PLOTLY,
    *PRELOAD_MLFLOW,
    "xgboost",
    "sklearn.metrics",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "evergreen.engines.validation",
    "evergreen.engines.monitoring",
    "evergreen.engines.training",
    "evergreen.engines.snapshot",
    "evergreen.adapters.tracking",
    "evergreen.adapters.wiring",
    "evergreen.adapters.memory",
    "evergreen.loop.monitor",
    "evergreen.loop.retrain",
)


# ----------------------------------------------------------------------------- children


def _ports(cfg):  # noqa: ANN001, ANN202 - ModelConfig -> Ports
    import threading

    from evergreen.adapters.memory import MemoryEvents
    from evergreen.adapters.tracking import MlflowRunLog
    from evergreen.adapters.wiring import file_ports

    lock = threading.Lock()
    return file_ports(cfg, events=MemoryEvents(), runs=MlflowRunLog(), lock=lambda: lock)


STREAMED_ROWS = 262_144


def _with_memory_rows(cfg, rows: int):  # noqa: ANN001, ANN202 - ModelConfig
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"memory_rows": rows})})


def run_monitor(config_json: str, batch: str, in_memory: bool = False, memory_rows: int | None = None) -> dict[str, Any]:
    """The monitor step on one batch, its parts as plain calls (timed by name). In memory:
    `data.memory_rows` above the batch's size, so the batch is one piece (read whole, GX's
    `validate` and `compute_monitor` on the one frame: the step as it ran before pieces)."""
    from evergreen.loop import monitor

    cfg = load_run_config(config_json)
    if in_memory:
        cfg = _with_memory_rows(cfg, 10**12)
    elif memory_rows:
        cfg = _with_memory_rows(cfg, memory_rows)
    step = StepTimer()
    results = monitor.monitor(_ports(cfg), cfg, batch, run=TimedRunner(step))
    r = results[0]
    if not r.valid:
        raise BenchError(f"monitor: batch {batch} rejected: {r.message}")
    return {
        "rows": r.rows,
        "drift_detected": r.drift_detected,
        "performance_degraded": r.performance_degraded,
        "drifted_features": sorted(n for n, f in r.features.items() if f.get("alert")),
        "estimated": r.estimated_metric,
        "realized": r.realized_metric,
        "steps": step.seconds,
    }


def run_monitor_in_memory(config_json: str, batch: str) -> dict[str, Any]:
    """The monitor step with the batch read as one frame."""
    return run_monitor(config_json, batch, in_memory=True)


def run_monitor_streamed(config_json: str, batch: str) -> dict[str, Any]:
    """The monitor step with `data.memory_rows` at 262,144: a 1M-row batch in 4 pieces."""
    return run_monitor(config_json, batch, memory_rows=STREAMED_ROWS)


def run_retrain(config_json: str, memory_rows: int | None = None) -> dict[str, Any]:
    """The retrain step (window in chunks), its parts as plain calls (timed by name)."""
    from evergreen.lineage import Trigger
    from evergreen.loop.retrain import retrain

    cfg = load_run_config(config_json)
    if memory_rows:
        cfg = _with_memory_rows(cfg, memory_rows)
    step = StepTimer()
    result = retrain(_ports(cfg), cfg, Trigger.of("manual", None, None, None), run=TimedRunner(step))
    if result.status != "registered":
        raise BenchError(f"retrain {result.status}: {result.message}")
    return {
        "rows": result.rows,
        "metric": result.metrics.get(cfg.metric),
        "dataset_digest": result.dataset_digest,
        "steps": step.seconds,
    }


def run_retrain_streamed(config_json: str) -> dict[str, Any]:
    """The retrain step with `data.memory_rows` at 262,144: nothing kept between passes."""
    return run_retrain(config_json, memory_rows=STREAMED_ROWS)


def run_retrain_in_memory(config_json: str) -> dict[str, Any]:
    """The retrain as it ran with its window as one frame: the same parts (labels check,
    window, validation beside the snapshot, hold-out, XGBoost on DMatrix, evaluation, the
    MLflow run, registration), each on the whole frame."""
    from evergreen import events
    from evergreen.engines import snapshot, validation
    from evergreen.lineage import Trigger
    from evergreen.loop import retraining, sources
    from evergreen.loop.common import MANUAL
    from evergreen.loop.retrain import lineage_tags, register_candidate

    cfg = load_run_config(config_json)
    ports = _ports(cfg)
    step = StepTimer()
    run = TimedRunner(step)
    trigger = Trigger.of("manual", None, None, None)
    labels = run.submit("check-label-files", sources.check_label_files, cfg)
    win = run.part("assemble-training-window", sources.assemble_training_window, cfg)
    if any(not r.success for r in labels.result()):
        raise BenchError("in-memory retrain: a labels file failed its checks")
    reference = run.part("load-monitor-reference", sources.read_monitor_reference, cfg, ports.registry)
    suite = retraining.training_suite(run.part("derive-suite", validation.derive_suite, reference, cfg))
    checking = run.submit("validate-batch", validation.validate_batch, win.frame, suite, "training window")
    staged = run.part(
        "snapshot-training-data", snapshot.stage_snapshot, win.frame, cfg.data.path("dataset_store"),
        list(win.sources), cfg.columns.timestamp,
    )
    if not checking.result().success:
        raise BenchError("in-memory retrain: the window failed validation")
    snap = run.part("publish-snapshot", snapshot.commit_snapshot, staged)
    holdout = run.part("hold-out-recent", retraining.hold_out_recent, win.frame, cfg)
    model = run.part("train-model", train_in_memory, holdout.train, win.frame, cfg)
    evaluation = run.part("evaluate-model", retraining.evaluate_model, model.held_out(), holdout.evaluation, cfg)
    tags = lineage_tags(cfg, snap, trigger, {})
    logged = run.part(
        "log-training-run", ports.runs.log_training_run, cfg, model, evaluation, snap, win, holdout, "manual", tags
    )
    version, _ = run.part("register-candidate", register_candidate, ports, logged.model_uri, logged.run_id, tags, MANUAL, run)
    ports.events.emit(events.MODEL_REGISTERED, {"version": version.version})
    return {
        "rows": win.rows,
        "metric": evaluation.value,
        "dataset_digest": snap.digest,
        "steps": step.seconds,
    }


# ----------------------------------------------------------------------------- harness


@dataclass(frozen=True)
class ScaleRun:
    """One variant at one size, in one fresh process."""

    flow: str
    path: str  # "bounded" (default settings), "streamed" (memory_rows 262,144) or "in-memory"
    rows: int
    work_seconds: float
    peak_rss_mb: float
    import_rss_mb: float
    work_cpu_seconds: float
    outcome: dict[str, Any]
    steps: dict[str, float] = field(default_factory=dict)


VARIANTS = {
    ("monitor", "bounded"): "bench.scale_bench:run_monitor",
    ("monitor", "in-memory"): "bench.scale_bench:run_monitor_in_memory",
    ("monitor", "streamed"): "bench.scale_bench:run_monitor_streamed",
    ("retrain", "bounded"): "bench.scale_bench:run_retrain",
    ("retrain", "streamed"): "bench.scale_bench:run_retrain_streamed",
    ("retrain", "in-memory"): "bench.scale_bench:run_retrain_in_memory",
}


COMPARED_PATHS = ("bounded", "streamed", "in-memory")


def measure_size(
    root: Path, rows: int, seed: int, paths: tuple[str, ...], repeats: int, log: Any = print
) -> tuple[list[ScaleRun], float]:
    """Write the stream of `rows` rows, run each flow on each of `paths` `repeats` times
    (alternating)."""
    log(f"writing {rows:,} rows under {root} ...")
    result, prep_seconds = run_child(
        "bench.common:prepare_dataset", {"root": str(root / "dataset"), "rows": rows, "seed": seed},
        root / "prepare", child_env(None, None), timeout=7200.0,
    )
    dataset = Dataset(**result["outcome"])
    log(f"  data ready in {prep_seconds:.0f} s")
    env = child_env(None, None)
    runs: list[ScaleRun] = []
    for r in range(repeats):
        k = r % len(paths)
        order = paths[k:] + paths[:k]
        for flow in ("monitor", "retrain"):
            for path in order:
                run_dir = root / f"{flow}-{path}-{r}"
                args: dict[str, Any] = {"config_json": run_config_json(dataset, run_dir)}
                if flow == "monitor":
                    args["batch"] = dataset.batch_path
                out, _ = run_child(VARIANTS[(flow, path)], args, run_dir, env, _PRELOAD, timeout=7200.0)
                outcome = dict(out["outcome"])
                steps = outcome.pop("steps", {})
                run = ScaleRun(
                    flow=flow, path=path, rows=rows,
                    work_seconds=round(out["work_seconds"], 2),
                    peak_rss_mb=round(out["peak_rss_kb"] / 1024.0, 1),
                    import_rss_mb=round(out["import_rss_kb"] / 1024.0, 1),
                    work_cpu_seconds=round(float(out.get("work_cpu_seconds", 0.0)), 2),
                    outcome=outcome, steps={k: round(v, 2) for k, v in steps.items()},
                )
                log(
                    f"  {flow:<8} {path:<9} {rows:>11,} rows: work {run.work_seconds:8.2f} s  "
                    f"peak RSS {run.peak_rss_mb:7.0f} MB  (imports {run.import_rss_mb:.0f} MB)"
                )
                runs.append(run)
                shutil.rmtree(run_dir / "datasets", ignore_errors=True)
    return runs, prep_seconds


@dataclass(frozen=True)
class ScaleResult:
    """Every run of `python -m bench scale`, with the targets' verdicts."""

    command: str
    date: str
    machine: dict[str, Any]
    sizes: list[int]
    compare_at: int | None
    runs: list[ScaleRun]
    prepare_seconds: dict[int, float]
    verdicts: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median(values: list[float]) -> float:
    import statistics

    return round(statistics.median(values), 2) if values else float("nan")


def summarize(runs: list[ScaleRun]) -> dict[tuple[str, str, int], dict[str, float]]:
    """Median work seconds and peak RSS (and the spread) of each (flow, path, rows)."""
    out: dict[tuple[str, str, int], dict[str, float]] = {}
    for key in dict.fromkeys((r.flow, r.path, r.rows) for r in runs):
        mine = [r for r in runs if (r.flow, r.path, r.rows) == key]
        work = [r.work_seconds for r in mine]
        out[key] = {
            "work_seconds": _median(work),
            "work_min": min(work),
            "work_max": max(work),
            "peak_rss_mb": _median([r.peak_rss_mb for r in mine]),
            "runs": len(mine),
        }
    return out


def verdicts(runs: list[ScaleRun], compare_at: int | None) -> dict[str, Any]:
    """The issue's three targets on the medians, per flow."""
    table = summarize(runs)
    sizes = sorted({r.rows for r in runs})
    largest = sizes[-1]
    out: dict[str, Any] = {}
    for flow in ("monitor", "retrain"):
        big = table.get((flow, "bounded", largest))
        if big:
            out[f"{flow}: peak RSS at {largest:,} rows <= {MAX_PEAK_MB} MB"] = {
                "value": big["peak_rss_mb"], "pass": big["peak_rss_mb"] <= MAX_PEAK_MB,
            }
        one = table.get((flow, "bounded", 1_000_000))
        if big and one and largest == 10_000_000:
            growth = big["work_seconds"] / one["work_seconds"]
            out[f"{flow}: time at 10M / time at 1M <= {MAX_GROWTH:g}"] = {
                "value": round(growth, 2), "pass": growth <= MAX_GROWTH,
            }
        if compare_at:
            mem = table.get((flow, "in-memory", compare_at))
            for path in ("bounded", "streamed"):
                bnd = table.get((flow, path, compare_at))
                if mem and bnd:
                    ratio = bnd["work_seconds"] / mem["work_seconds"]
                    out[f"{flow}: {path} / in-memory wall at {compare_at:,} rows <= {MAX_BOUNDED_RATIO:g}"] = {
                        "value": round(ratio, 3), "pass": ratio <= MAX_BOUNDED_RATIO,
                    }
    return out


def format_table(result: ScaleResult) -> str:
    """Markdown: one line per flow, path and size; then the verdicts."""
    table = summarize(result.runs)
    lines = [
        "| flow | path | rows | work s (median; min-max) | peak RSS MB |",
        "|---|---|---:|---:|---:|",
    ]
    for (flow, path, rows), row in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        spread = f"{row['work_min']:.1f}-{row['work_max']:.1f}" if row["runs"] > 1 else "1 run"
        lines.append(f"| {flow} | {path} | {rows:,} | {row['work_seconds']:.1f} ({spread}) | {row['peak_rss_mb']:.0f} |")
    lines += ["", "| target | value | result |", "|---|---:|---|"]
    for name, v in result.verdicts.items():
        lines.append(f"| {name} | {v['value']} | {'pass' if v['pass'] else '**fail**'} |")
    return "\n".join(lines)


MARK_START, MARK_END = "<!-- bench:scale:start -->", "<!-- bench:scale:end -->"


def update_markdown(path: Path, result: ScaleResult) -> None:
    """Replace the scale section of `path` (between its markers) with this run's table."""
    text = path.read_text(encoding="utf-8")
    block = (
        f"{MARK_START}\nMeasured {result.date} with `{result.command}` ({result.seconds / 60:.0f} min; "
        f"load average {result.machine['load_before'][0]:.1f} before). Same-size runs alternate paths.\n\n"
        f"{format_table(result)}\n{MARK_END}"
    )
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## scale\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def run(
    sizes: list[int], compare_at: int | None, repeats: dict[int, int], out: str | None, markdown: str | None,
    keep: bool, seed: int = DEFAULT_SEED, log: Any = print,
) -> ScaleResult:
    started = time.perf_counter()
    command = " ".join(["uv run python -m bench scale", *sys.argv[2:]]) if sys.argv[1:2] == ["scale"] else "python -m bench scale"
    machine = asdict(machine_info())
    workdir = Path(tempfile.mkdtemp(prefix="evergreen-scale-"))
    runs: list[ScaleRun] = []
    prepared: dict[int, float] = {}
    try:
        for rows in sizes:
            size_runs, seconds = measure_size(
                workdir / f"rows-{rows}", rows, seed, COMPARED_PATHS if rows == compare_at else ("bounded",),
                repeats.get(rows, 1), log,
            )
            runs += size_runs
            prepared[rows] = round(seconds, 1)
            if not keep:
                shutil.rmtree(workdir / f"rows-{rows}", ignore_errors=True)
            if out:  # written after each size: a long run keeps what it measured
                _write(out, command, machine, sizes, compare_at, runs, prepared, started)
    finally:
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result = _write(out, command, machine, sizes, compare_at, runs, prepared, started)
    log(format_table(result))
    if markdown:
        update_markdown(Path(markdown), result)
    return result


def _write(out, command, machine, sizes, compare_at, runs, prepared, started) -> ScaleResult:  # noqa: ANN001
    machine = {**machine, "load_after": list(os.getloadavg())}
    result = ScaleResult(
        command=command, date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), machine=machine, sizes=sizes,
        compare_at=compare_at, runs=runs, prepare_seconds=prepared, verdicts=verdicts(runs, compare_at),
        seconds=round(time.perf_counter() - started, 1),
    )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(str(n) for n in DEFAULT_SIZES), help="sizes, comma-separated")
    parser.add_argument("--compare-at", type=int, default=COMPARE_AT, help="also run the in-memory paths at this size (0: never)")
    parser.add_argument("--repeats", default="1", help="runs per variant: N, or SIZE:N,... (e.g. 1000000:3,10000000:2)")
    parser.add_argument("--out", help="write every run as JSON here")
    parser.add_argument("--markdown", help="update the scale section of this file (e.g. BENCHMARKS.md)")
    parser.add_argument("--from-json", help="measure nothing: print (and with --markdown write) a saved --out")
    parser.add_argument("--keep", action="store_true", help="keep the data and run folders")
    args = parser.parse_args(argv)
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        raw["runs"] = [ScaleRun(**r) for r in raw["runs"]]
        result = ScaleResult(**raw)
        print(format_table(result))
        if args.markdown:
            update_markdown(Path(args.markdown), result)
        return 0
    sizes = [int(n) for n in args.rows.split(",") if n]
    if any(n < 1000 for n in sizes):
        parser.error("--rows: every size must be at least 1000")
    repeats: dict[int, int] = {}
    for part in args.repeats.split(","):
        if ":" in part:
            size, n = part.split(":")
            repeats[int(size)] = int(n)
        else:
            repeats = {s: int(part) for s in sizes} | repeats
    run(sizes, args.compare_at or None, repeats, args.out, args.markdown, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
