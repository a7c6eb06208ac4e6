"""The `monitor` flow: validate each new production batch, estimate drift and performance,
emit drift events, publish what was found."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

import dataclasses
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from blocks.model_config import resolve_config
from evergreen.adapters import io
from evergreen.adapters.ledger import BatchRecord
from evergreen.config import ModelConfig
from evergreen.engines.validation import unreadable_report
from evergreen.reports import MonitorResult
from evergreen.telemetry import disable_telemetry
from tasks import data, monitoring
from tasks.events import emit
from tasks.publish import log_monitor_run, publish_artifacts

DATA_REJECTED = "evergreen.data.rejected"
DRIFT_DETECTED = "evergreen.drift.detected"
PERFORMANCE_DEGRADED = "evergreen.performance.degraded"


@flow(name="monitor", log_prints=True)
def monitor(config: str | ModelConfig = "car-loan", batch: str | None = None) -> State:
    """Monitor one batch (`batch`), or every batch of the stream not monitored yet."""
    disable_telemetry()
    cfg = resolve_config(config)
    data.check_config_columns(cfg)
    files = [_batch_file(cfg, batch)] if batch else data.pending_batches(cfg)
    if not files:
        return Completed(message="no new batches to monitor", data=[])

    reference = data.load_monitor_reference(cfg)
    suite = monitoring.derive_suite(reference, cfg)
    fitted = monitoring.fit_monitor(reference, cfg)
    results = [_monitor_batch(cfg, f, suite, fitted) for f in files]

    rejected = [r for r in results if not r.valid]
    if rejected:
        return Failed(
            name="DataRejected",
            message="; ".join(r.message for r in rejected),
            data=results,
        )
    drifted = [r.batch_id for r in results if r.drift_detected or r.performance_degraded]
    summary = f"{len(results)} batch(es) monitored; alerts on {drifted}" if drifted else (
        f"{len(results)} batch(es) monitored; no drift"
    )
    return Completed(message=summary, data=results)


def _batch_file(cfg: ModelConfig, path: str) -> io.BatchFile:
    known = {Path(b.path).resolve(): b for b in io.list_batches(cfg.data.path("batches"))}
    found = known.get(Path(path).resolve())
    return found or io.BatchFile(path=path, day=Path(path).stem, index=len(known))


def _monitor_batch(cfg: ModelConfig, f: io.BatchFile, suite, fitted) -> MonitorResult:  # noqa: ANN001
    logger = get_run_logger()
    run_id = str(flow_run.id) if flow_run.id else None
    try:
        frame = data.load_batch(f.path, cfg.data.max_batch_rows, [cfg.columns.timestamp])
        report = monitoring.validate_batch(frame, suite, f.path)
    except io.DataReadError as exc:
        frame, report = None, unreadable_report(f.path, exc)
    warnings = [w.to_dict() for w in report.warnings]
    if report.success:
        if warnings:
            logger.warning("batch %s accepted with warnings: %s", f.day, report.summary())
        return _estimate(cfg, f, frame, fitted, run_id, warnings)
    message = report.summary()
    failures = [x.to_dict() for x in report.failures]
    logger.error("batch %s rejected: %s", f.day, message)
    event_id = emit(cfg, DATA_REJECTED, {"batch_id": f.day, "path": f.path, "failures": failures, "reason": message})
    result = MonitorResult(
        model=cfg.name, batch_id=f.day, batch_path=f.path, valid=False, message=message,
        failures=failures, warnings=warnings, rows=0 if frame is None else len(frame), metric=cfg.metric,
        events=[DATA_REJECTED], event_ids=[e for e in [event_id] if e],
    )
    return _publish(cfg, f, result, plots={}, chunks=[], run_id=run_id)


def _estimate(cfg: ModelConfig, f: io.BatchFile, frame, fitted, run_id: str | None, warnings: list[dict]) -> MonitorResult:  # noqa: ANN001
    labels = data.load_labels(cfg, f.day)
    report = monitoring.compute_monitor(fitted, frame, labels)
    realized_on = f.day if report.realized_metric is not None else None
    if report.realized_metric is None:
        # Labels arrive late: judge realized performance on the newest labelled batch.
        latest = monitoring.realized_on_latest_labelled(fitted, cfg, f.day, labels)
        if latest is not None:
            realized_on = latest.day
            report = dataclasses.replace(report, realized_metric=latest.metric)
    decision = monitoring.decide_alerts(report, cfg)
    loop_state = monitoring.read_loop_state(cfg, f.day, report.end)
    verdict = monitoring.decide_policy(cfg, f.day, decision, loop_state)
    summary = report.to_dict()
    events, event_ids = [], []
    for name, payload in verdict.events.items():
        event_id = emit(cfg, name, {**payload, "batch_id": f.day, "chunk": f.day, "realized_on": realized_on})
        events.append(name)
        if event_id:
            event_ids.append(event_id)
    est = summary.get("estimated_metric") or {}
    real = summary.get("realized_metric") or {}
    result = MonitorResult(
        model=cfg.name, batch_id=f.day, batch_path=f.path, valid=True,
        message="; ".join([*decision.reasons, *(f"warning: {w['message']}" for w in warnings)]) or "no drift",
        warnings=warnings,
        drift_detected=decision.drift_detected, performance_degraded=decision.performance_degraded,
        features=summary.get("features", {}), multivariate=summary.get("multivariate"),
        estimated_metric=est.get("value"), realized_metric=real.get("value") if real else None,
        realized_on=realized_on,
        metric=cfg.metric, reasons=list(decision.reasons), events=events, event_ids=event_ids,
        rows=len(frame), signals=verdict.fired, policy=verdict.reason,
    )
    return _publish(cfg, f, result, plots=_plots(cfg, report, result), chunks=summary.get("chunks", []), run_id=run_id)


def _plots(cfg: ModelConfig, report, result: MonitorResult) -> dict[str, str]:  # noqa: ANN001
    return {"monitor": monitoring.draw_plots(report, cfg.monitoring.plots, result.drift_detected or result.performance_degraded)}


def _publish(cfg: ModelConfig, f: io.BatchFile, result: MonitorResult, plots: dict, chunks: list, run_id: str | None) -> MonitorResult:
    run = log_monitor_run(cfg, result, f.index, plots, chunks, run_id)
    result = result.model_copy(update={"mlflow_run_id": run.run_id, "mlflow_run_url": run.url})
    publish_artifacts(cfg, result, run)
    data.record_batch(
        cfg,
        BatchRecord(
            day=f.day, path=f.path, valid=result.valid, message=result.message,
            drift_detected=result.drift_detected, performance_degraded=result.performance_degraded,
            events=result.events, signals=result.signals, flow_run_id=run_id,
        ),
    )
    return result
