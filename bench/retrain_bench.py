"""The retrain flow against a bare script doing the same XGBoost training and MLflow logging.

Baseline: assemble the training window (labelled batches joined on id, retrain policy),
hold out the most recent rows, train XGBoost, evaluate, and log to MLflow what the flow
logs through the function its `log-training-run` task calls
(`evergreen.adapters.tracking.log_training_run`: tags, params, metrics, dataset input, the
model, the next monitor reference, evaluation and plots), then register the version and move
its aliases — no Prefect.
Flow: `flows.retrain.retrain(config=cfg)` against a local Prefect server, which also
snapshots the window (content-addressed copy), validates it with GX, runs every step as a
Prefect task, takes the registry lock (a Prefect global concurrency limit) and emits
`evergreen.model.registered`.
Same work without Prefect (info, not the issue's baseline): the flow's own step,
`evergreen.loop.retrain.retrain`, on the same file store and MLflow registry, with its parts
run as plain calls (`TimedRunner`) instead of Prefect tasks, events kept in memory and a
thread lock as the registry lock: what the flow costs as orchestration alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import (
    PRELOAD_DATA,
    PRELOAD_GX,
    PRELOAD_MLFLOW,
    PRELOAD_PREFECT,
    BenchError,
    Benchmark,
    Dataset,
    StepTimer,
    TimedRunner,
    Variant,
    load_run_config,
    run_config_json,
    train_in_memory,
)

_BASELINE_MODULES = (
    *PRELOAD_DATA,
    *PRELOAD_MLFLOW,
    "xgboost",
    "sklearn.metrics",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "evergreen.adapters.io",
    "evergreen.decisions.window",
    "evergreen.loop.sources",
    "evergreen.engines.training",
    "evergreen.loop.retraining",
    "evergreen.adapters.registry",
    "evergreen.lineage",
    "evergreen.engines.plots",
)
_SAME_WORK_MODULES = (
    *_BASELINE_MODULES,
    *PRELOAD_GX,
    "evergreen.engines.snapshot",
    "evergreen.engines.validation",
    "evergreen.adapters.memory",
    "evergreen.adapters.tracking",
    "evergreen.adapters.wiring",
    "evergreen.loop.retrain",
)
_FLOW_MODULES = (*_BASELINE_MODULES, *PRELOAD_GX, *PRELOAD_PREFECT, "flows.retrain")


def arguments(dataset: Dataset, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments of one run: the config with a fresh per-run store and registry."""
    return {"config_json": run_config_json(dataset, run_dir)}


def run_baseline(config_json: str) -> dict[str, Any]:
    """Window, training, evaluation, MLflow logging and registration, called directly."""
    from evergreen.adapters import registry, tracking
    from evergreen.lineage import Trigger, code_version
    from evergreen.loop import retraining, sources

    cfg = load_run_config(config_json)
    step = StepTimer()
    with step("assemble-training-window"):
        win = sources.assemble_training_window(cfg)
    if win.rows == 0:
        raise BenchError(f"baseline: empty training window under {cfg.data.root}")
    with step("hold-out-recent"):
        holdout = retraining.hold_out_recent(win.frame, cfg)
    with step("train-model"):
        model = train_in_memory(holdout.train, win.frame, cfg)
    with step("evaluate-model"):
        evaluation = retraining.evaluate_model(model.held_out(), holdout.evaluation, cfg)
    trigger = Trigger.of("manual", None, None, None)
    tags = {
        "evergreen.model": cfg.name,
        "evergreen.dataset_rows": str(win.rows),
        "evergreen.code_version": code_version(),
        "evergreen.train_end": str(holdout.train[cfg.columns.timestamp].max()),
        **trigger.tags(),
    }
    with step("log-training-run"):
        # The function the flow's `log-training-run` part calls (`MlflowRunLog`), on a
        # window that was not snapshotted.
        logged = tracking.log_training_run(
            cfg, model, evaluation, _stand_in_snapshot(cfg, win), win, holdout, trigger.kind, tags
        )
    with step("register-candidate"):
        # A bare script's registration: a version, and the aliases an empty registry gets.
        who = "bench-baseline"
        reg = registry.Registry(cfg.mlflow.model_name)
        version = reg.create_version(logged.model_uri, logged.run_id, tags).version
        reg.move_alias(registry.CHAMPION, version, "bootstrap: empty registry", who)
        reg.move_alias(registry.CHALLENGER, version, "retrained candidate", who)
    return {
        "rows": win.rows,
        "train_rows": len(holdout.train),
        "best_iteration": model.best_iteration,
        "metric": evaluation.value,
        "version": str(version),
        "steps": step.seconds,
    }


def _stand_in_snapshot(cfg, win):  # noqa: ANN001, ANN202 - ModelConfig, TrainingWindow -> SnapshotInfo
    """A SnapshotInfo for a window that was not snapshotted. The flow passes the snapshot's
    digest; without one, MLflow computes its own by mapping `type` over every cell of the
    frame (seconds per million rows): a cheap one keeps the logging at its cost in the flow."""
    import hashlib

    from evergreen.engines.snapshot import SnapshotInfo

    digest = hashlib.sha256(f"{win.rows}:{','.join(win.sources)}".encode()).hexdigest()
    return SnapshotInfo(
        digest=digest,
        uri=cfg.data.path("batches"),
        rows=win.rows,
        columns=list(win.frame.columns),
        time_min=None,
        time_max=None,
        sources=list(win.sources),
    )


def run_same_work(config_json: str) -> dict[str, Any]:
    """The flow's step itself (`evergreen.loop.retrain.retrain`) on the flow's ports, but
    with an in-memory event sink, MLflow runs without Prefect artifacts, a thread lock for
    the registry lock and its parts as plain calls, each timed under its task's name."""
    import threading

    from evergreen.adapters.memory import MemoryEvents
    from evergreen.adapters.tracking import MlflowRunLog
    from evergreen.adapters.wiring import file_ports
    from evergreen.lineage import Trigger
    from evergreen.loop.retrain import retrain

    cfg = load_run_config(config_json)
    step = StepTimer()
    lock = threading.Lock()
    ports = file_ports(cfg, events=MemoryEvents(), runs=MlflowRunLog(), lock=lambda: lock)
    result = retrain(ports, cfg, Trigger.of("manual", None, None, None), run=TimedRunner(step))
    if result.status != "registered":
        raise BenchError(f"same-work: retrain {result.status}: {result.message}")
    return {
        "rows": result.rows,
        "metric": result.metrics.get(cfg.metric),
        "version": str(result.version),
        "run_id": result.run_id,
        "steps": step.seconds,
    }


def run_flow(config_json: str) -> dict[str, Any]:
    """The retrain flow (needs PREFECT_API_URL)."""
    from flows.retrain import retrain

    cfg = load_run_config(config_json)
    state = retrain(config=cfg, trigger="manual", return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException) or not state.is_completed():
        raise BenchError(f"retrain flow did not complete: {state.message or result}")
    return {
        "rows": result.rows,
        "metric": result.metrics.get(cfg.metric),
        "version": str(result.version),
        "run_id": result.run_id,
        "flow_run_id": str(state.state_details.flow_run_id),
    }


BENCHMARK = Benchmark(
    name="retrain",
    title="Retrain flow",
    baseline=Variant("baseline", "bench.retrain_bench:run_baseline", _BASELINE_MODULES),
    flow=Variant("flow", "bench.retrain_bench:run_flow", _FLOW_MODULES, uses_prefect=True),
    same_work=Variant("same-work", "bench.retrain_bench:run_same_work", _SAME_WORK_MODULES),
    arguments=arguments,
    compare=("rows", "metric", "version"),
    description=__doc__ or "",
)
