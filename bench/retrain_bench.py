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
Same work without Prefect (info, not the issue's baseline): everything the flow does, by
the same core calls in the same order (config check, the retrain-start decision, the
label-file checks overlapped with reading the window, GX validation overlapped with staging
the snapshot, the real digest in the logged dataset), without Prefect: what the flow costs
as orchestration alone.
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
    Variant,
    load_run_config,
    run_config_json,
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
_SAME_WORK_MODULES = (*_BASELINE_MODULES, *PRELOAD_GX, "evergreen.engines.snapshot", "evergreen.engines.validation")
_FLOW_MODULES = (*_BASELINE_MODULES, *PRELOAD_GX, *PRELOAD_PREFECT, "flows.retrain")


def arguments(dataset: Dataset, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments of one run: the config with a fresh per-run store and registry."""
    return {"config_json": run_config_json(dataset, run_dir)}


def run_baseline(config_json: str) -> dict[str, Any]:
    """Window, training, evaluation, MLflow logging and registration, called directly."""
    from evergreen.engines import training
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
        model = training.train_model(holdout.train, cfg)
    with step("evaluate-model"):
        evaluation = retraining.evaluate_model(model, holdout.evaluation, cfg)
    trigger = Trigger.of("manual", None, None, None)
    tags = {
        "evergreen.model": cfg.name,
        "evergreen.dataset_rows": str(win.rows),
        "evergreen.code_version": code_version(),
        "evergreen.train_end": str(holdout.train[cfg.columns.timestamp].max()),
        **trigger.tags(),
    }
    return _log_and_register(step, cfg, model, evaluation, win, holdout, trigger, tags, None)


def _log_and_register(step, cfg, model, evaluation, win, holdout, trigger, tags, snap) -> dict[str, Any]:  # noqa: ANN001
    """The last two steps of both direct variants, and the outcome they report."""
    with step("log-training-run"):
        run_id, model_uri = _log_training_run(cfg, model, evaluation, win, holdout, trigger, tags, snap)
    with step("register-candidate"):
        version = _register(cfg, model_uri, run_id, tags)
    return {
        "rows": win.rows,
        "train_rows": len(holdout.train),
        "best_iteration": model.best_iteration,
        "metric": evaluation.value,
        "version": version,
        "steps": step.seconds,
    }


def _log_training_run(cfg, model, evaluation, win, holdout, trigger, tags, snap) -> tuple[str, str]:  # noqa: ANN001
    """`evergreen.adapters.tracking.log_training_run`, the body of the flow's
    `log-training-run` task. Without a snapshot (the issue's bare script) the dataset is
    logged under a cheap stand-in digest with the batches folder as source."""
    from evergreen.adapters import tracking

    if snap is None:
        snap = _stand_in_snapshot(cfg, win)
    logged = tracking.log_training_run(cfg, model, evaluation, snap, win, holdout, trigger.kind, tags)
    return logged.run_id, logged.model_uri


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


def _register(cfg, model_uri: str, run_id: str, tags: dict[str, str]) -> str:  # noqa: ANN001
    """What `tasks.registry.register_candidate` does, without the Prefect lock."""
    from evergreen.adapters import registry, tracking

    tracking.connect(cfg.mlflow)
    name = cfg.mlflow.model_name
    bootstrap = registry.version_by_alias(name, registry.CHAMPION) is None
    status = "champion" if bootstrap else "candidate"
    version = registry.create_version(
        name,
        model_uri,
        run_id,
        {**tags, registry.STATUS_TAG: status, "evergreen.bootstrap": str(bootstrap).lower()},
    )
    who = "bench-baseline"
    registry.move_alias(
        name, registry.CHALLENGER, version.version, "retrained candidate", who, None
    )
    if bootstrap:
        registry.move_alias(
            name, registry.CHAMPION, version.version, "bootstrap: empty registry", who, None
        )
    return str(registry.get_version(name, version.version).version)


def run_same_work(config_json: str) -> dict[str, Any]:
    """Every step of the flow through the same core calls its tasks make, without Prefect."""
    from concurrent.futures import ThreadPoolExecutor

    from evergreen.engines import snapshot, training, validation
    from evergreen.lineage import Trigger, code_version
    from evergreen.loop import retraining, sources, state

    cfg = load_run_config(config_json)
    step = StepTimer()
    with step("check-config-columns"):
        sources.check_config_columns(cfg)
    with step("decide-retrain-start"):
        start, data_clock = sources.check_retrain_start(cfg, "manual")
    if not start.allowed:
        raise BenchError(f"same-work: retrain would not start: {start.reason}")
    # As the flow does: the labels files checked in a second thread while the window is read.
    with ThreadPoolExecutor(1) as pool:
        labels_checked = pool.submit(_timed, step, "check-label-files", sources.check_label_files, cfg)
        with step("assemble-training-window"):
            win = sources.assemble_training_window(cfg)
        bad = [r for r in labels_checked.result() if not r.success]
    if bad:
        raise BenchError(f"same-work: label files rejected: {bad[0].summary()}")
    with step("load-monitor-reference"):
        reference = sources.read_monitor_reference(cfg)
    with step("derive-suite"):
        suite = retraining.training_suite(validation.derive_suite(reference, cfg))
    # As the flow does: validation in a second thread while the snapshot is staged.
    with ThreadPoolExecutor(1) as pool:
        checking = pool.submit(
            _timed, step, "validate-batch", validation.validate_batch, win.frame, suite, "training window"
        )
        with step("snapshot-training-data"):
            staged = snapshot.stage_snapshot(
                win.frame, cfg.data.path("dataset_store"), sources=win.sources, time_column=cfg.columns.timestamp
            )
        report = checking.result()
    if not report.success:
        snapshot.discard_snapshot(staged)
        raise BenchError(f"same-work: window rejected: {report.summary()}")
    with step("publish-snapshot"):
        snap = snapshot.commit_snapshot(staged)
    with step("hold-out-recent"):
        holdout = retraining.hold_out_recent(win.frame, cfg)
    with step("train-model"):
        model = training.train_model(holdout.train, cfg)
    with step("evaluate-model"):
        evaluation = retraining.evaluate_model(model, holdout.evaluation, cfg)
    trigger = Trigger.of("manual", None, None, None)
    tags = {
        "evergreen.model": cfg.name,
        "evergreen.dataset_digest": snap.digest,
        "evergreen.dataset_uri": snap.uri,
        "evergreen.dataset_rows": str(snap.rows),
        "evergreen.code_version": code_version(),
        "evergreen.train_end": str(holdout.train[cfg.columns.timestamp].max()),
        **trigger.tags(),
    }
    if data_clock is not None:
        tags[state.DATA_CLOCK_TAG] = data_clock.isoformat()
    return _log_and_register(step, cfg, model, evaluation, win, holdout, trigger, tags, snap)


def _timed(step: StepTimer, name: str, fn: Any, *args: Any) -> Any:  # noqa: ANN401
    with step(name):
        return fn(*args)


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
