"""The `retrain` flow: versioned window -> validate -> XGBoost -> evaluate -> MLflow registry."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from blocks.model_config import resolve_config
from evergreen.config import ModelConfig
from evergreen.lineage import Trigger, code_version
from evergreen.loop import retraining, state
from evergreen.reports import RetrainResult
from evergreen.telemetry import disable_telemetry
from tasks import data, monitoring, training
from tasks.events import emit
from tasks.registry import deployment_name, register_candidate

DATA_REJECTED = "evergreen.data.rejected"
MODEL_REGISTERED = "evergreen.model.registered"


@flow(name="retrain", log_prints=True)
def retrain(
    config: str | ModelConfig = "car-loan",
    trigger: str | None = None,
    event_id: str | None = None,
    reason: str | None = None,
    metric: str | None = None,
) -> State:
    """Train a candidate on the current window and register it as `challenger`.

    `trigger` is schedule / event / manual; the drift automation passes the triggering
    event's id, reason and metric, which are recorded on the run and the version."""
    disable_telemetry()
    cfg = resolve_config(config)
    data.check_config_columns(cfg)
    why = Trigger.of(trigger, event_id, reason, metric)
    start, data_clock = training.decide_retrain_start(cfg, why.kind)
    if not start.allowed:
        skipped = RetrainResult(
            model_name=cfg.mlflow.model_name, status="skipped", trigger=why.__dict__, message=start.reason,
            blocked_by=start.blocked_by,
        )
        return Completed(name="Skipped", message=f"retrain skipped: {start.reason}", data=skipped)

    # The labels files are checked while the window is read (both only read); a bad labels
    # file rejects the run whatever became of the window. The window is validated while its
    # snapshot is staged (both single-threaded: together they take the time of one on two
    # CPUs); the staged copy is published only if the window is valid, so rejected data
    # leaves no snapshot behind.
    labels_checked = data.check_label_files.submit(cfg)
    window_error = None
    try:
        win = training.assemble_training_window(cfg)
    except Exception as exc:  # noqa: BLE001 - re-raised below unless a labels file explains it
        window_error = exc
    bad_labels = [r for r in labels_checked.result() if not r.success]
    if bad_labels:
        return _reject(cfg, why, bad_labels, None)
    if window_error is not None:
        raise window_error
    suite = retraining.training_suite(monitoring.derive_suite(data.load_monitor_reference(cfg), cfg))
    checking = monitoring.validate_batch.submit(win.frame, suite, f"training window ({win.rows:,} rows)")
    staged = training.snapshot_training_data(cfg, win)
    report = None
    try:
        report = checking.result()
    finally:
        if report is None or not report.success:
            training.discard_snapshot(staged)
    if not report.success:
        return _reject(cfg, why, [report], win)

    snap = training.publish_snapshot(staged)
    holdout = training.hold_out_recent(win.frame, cfg)
    model = training.train_model(holdout.train, cfg)
    evaluation = training.evaluate_model(model, holdout.evaluation, cfg)
    tags = _lineage_tags(cfg, snap, why) | {"evergreen.train_end": str(holdout.train[cfg.columns.timestamp].max())}
    if data_clock is not None:
        tags[state.DATA_CLOCK_TAG] = data_clock.isoformat()
    logged = training.log_training_run(cfg, model, evaluation, snap, win, holdout, why, tags)
    registration = register_candidate(cfg, logged.model_uri, logged.run_id, tags)
    version, bootstrap = registration.version, registration.bootstrap

    emit(
        cfg,
        MODEL_REGISTERED,
        {
            "version": version.version,
            "run_id": logged.run_id,
            "dataset_digest": snap.digest,
            "bootstrap": bootstrap,
            "aliases": version.aliases,
            "metric": cfg.metric,
            "value": evaluation.value,
            "trigger": why.kind,
            "trigger_event_id": why.event_id,
        },
    )
    result = _result(
        cfg, win, snap, why, status="registered", events=[MODEL_REGISTERED],
        version=version.version, run_id=logged.run_id, aliases=version.aliases, bootstrap=bootstrap,
        metrics=evaluation.flat_metrics(), tracking_uri=logged.tracking_uri,
        message=f"registered {cfg.mlflow.model_name} v{version.version} as {', '.join(version.aliases)}",
    )
    return Completed(message=result.message, data=result)


def _reject(cfg: ModelConfig, why: Trigger, reports: list, win) -> State:  # noqa: ANN001
    """Nothing is trained or registered: `evergreen.data.rejected` names each file and failure."""
    message = "; ".join(r.summary() for r in reports)
    failures = [{**f.to_dict(), "file": r.batch_id} for r in reports for f in r.failures]
    files = [r.batch_id for r in reports]
    emit(cfg, DATA_REJECTED, {"batch_id": "training-window", "files": files, "failures": failures, "reason": message})
    if win is None:
        result = RetrainResult(model_name=cfg.mlflow.model_name, status="rejected", trigger=why.__dict__, message=message, events=[DATA_REJECTED])
    else:
        result = _result(cfg, win, None, why, status="rejected", message=message, events=[DATA_REJECTED])
    return Failed(name="TrainingDataRejected", message=message, data=result)


def _lineage_tags(cfg: ModelConfig, snap, why: Trigger) -> dict[str, str]:  # noqa: ANN001
    return {
        "evergreen.model": cfg.name,
        "evergreen.dataset_digest": snap.digest,
        "evergreen.dataset_uri": snap.uri,
        "evergreen.dataset_rows": str(snap.rows),
        "evergreen.prefect.flow_run_id": str(flow_run.id or ""),
        "evergreen.prefect.deployment": deployment_name() or "",
        "evergreen.code_version": code_version(),
        **why.tags(),
    }


def _result(cfg: ModelConfig, win, snap, why: Trigger, **fields) -> RetrainResult:  # noqa: ANN001, ANN003
    return RetrainResult(
        model_name=cfg.mlflow.model_name,
        dataset_digest=snap.digest if snap else None,
        dataset_uri=snap.uri if snap else None,
        dataset_reused=bool(snap and not snap.created),
        rows=snap.rows if snap else win.rows,
        trigger=why.__dict__,
        sources=list(win.sources),
        excluded=dict(win.excluded),
        **fields,
    )

