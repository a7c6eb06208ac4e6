"""The monitor step: validate each new production batch, estimate drift and performance,
decide the retrain policy, emit its events, record what was found. The `monitor` flow runs
it with Prefect tasks; the backtest with plain calls on its replay's ports.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from evergreen import events
from evergreen.adapters import io, registry
from evergreen.adapters.ledger import BatchRecord
from evergreen.adapters.ports import Ports
from evergreen.config import ModelConfig
from evergreen.decisions import policy
from evergreen.decisions.alerts import decide_alerts
from evergreen.decisions.episodes import with_request
from evergreen.engines import validation
from evergreen.loop import sources, state
from evergreen.loop.runner import DIRECT, Runner
from evergreen.reports import DistributionFinding, MonitorResult

# Fitted NannyML calculators per (reference digest, settings), for the life of the process:
# a served deployment or a replay monitors many batches on the same reference, and fitting
# costs seconds each time.
_FITTED: dict[str, Any] = {}
_FITTED_MAX = 4


def monitor(
    ports: Ports, config: ModelConfig, batch: str | None = None, *, run: Runner = DIRECT, flow_run_id: str | None = None
) -> list[MonitorResult]:
    """Monitor one batch (`batch`, a path), or every batch not monitored yet, in day order."""
    run.part("check-config-columns", sources.check_config_columns, config)
    files = [find_batch(ports, batch)] if batch else run.part("pending-batches", pending_batches, ports, io=True)
    if not files:
        return []
    reference = run.part("load-monitor-reference", sources.read_monitor_reference, config, ports.registry, io=True)
    suite = run.part("derive-suite", validation.derive_suite, reference, config)
    fitted = run.part("fit-monitor", fit_monitor, reference, config)
    return [monitor_batch(ports, config, f, suite, fitted, run=run, flow_run_id=flow_run_id) for f in files]


def monitor_batch(
    ports: Ports,
    config: ModelConfig,
    batch: io.BatchFile,
    suite: Any,
    fitted: Any,
    *,
    run: Runner = DIRECT,
    flow_run_id: str | None = None,
) -> MonitorResult:
    """One batch: read and validate it; a batch that passes the integrity checks gets drift,
    estimated and realized performance, the policy's decision and its events, whatever its
    distribution findings (values beyond the reference range, unseen categories: reported
    and counted as drift of their feature); every batch is published and recorded in the
    ledger."""
    from evergreen.engines.validation import unreadable_report

    scored_by = None
    try:
        rows = run.part("load-batch", sources.BatchRows.open, ports.store, batch, config, io=True)
        if rows.lacks_predictions():
            # A model served elsewhere may report no predictions: the champion scores the batch.
            champion = run.part("load-champion", sources.load_champion, ports.registry, config, io=True)
            rows = run.part("score-batch", rows.scored, champion)
            scored_by = champion.version.version
        report = run.part(
            "validate-batch", validation.validate_chunks, rows, suite, batch.path, rows=config.data.memory_rows
        )
    except io.DataReadError as exc:
        rows, report = None, unreadable_report(batch.path, exc)
    warnings = [w.to_dict() for w in report.warnings]
    findings = list(report.findings)
    if report.success:
        if warnings or findings:
            run.log("batch %s accepted with findings: %s", batch.day, report.summary(), level="warning")
        if scored_by is not None:
            run.log("batch %s has no predictions: scored with champion v%s", batch.day, scored_by)
        return _estimate(ports, config, batch, rows, fitted, run, flow_run_id, warnings, findings, scored_by)
    message = report.summary()
    failures = [x.to_dict() for x in report.failures]
    run.log("batch %s rejected: %s", batch.day, message, level="error")
    event_id = run.part(
        "emit-event", ports.events.emit, events.DATA_REJECTED,
        {"batch_id": batch.day, "path": batch.path, "failures": failures, "reason": message},
        io=True,
    )
    result = MonitorResult(
        model=config.name, batch_id=batch.day, batch_path=batch.path, valid=False, message=message,
        failures=failures, warnings=warnings, distribution_findings=findings,
        rows=report.rows, metric=config.metric,
        events=[events.DATA_REJECTED], event_ids=[e for e in [event_id] if e], decision="invalid",
    )
    return _publish(ports, config, batch, result, None, run, flow_run_id)


def _estimate(
    ports: Ports, config: ModelConfig, batch: io.BatchFile, rows: sources.BatchRows, fitted: Any,
    run: Runner, flow_run_id: str | None, warnings: list[dict], findings: list[DistributionFinding],
    scored_by: str | None = None,
) -> MonitorResult:
    from evergreen.engines import monitoring

    labels = run.part("load-labels", ports.store.read_labels, batch.day, io=True)
    report = run.part(
        "estimate-drift-and-performance", monitoring.compute_monitor_chunks, fitted, rows, labels,
        rows=config.data.memory_rows,
    )
    realized_on = batch.day if report.realized_metric is not None else None
    realized_start = None
    if report.realized_metric is None:
        # Labels arrive late: judge realized performance on the newest labelled batch.
        latest = run.part(
            "realized-performance", realized_on_latest_labelled, ports, config, fitted, batch.day, labels, io=True
        )
        if latest is not None:
            realized_on, realized_start = latest.day, _timestamp(latest.start)
            report = dataclasses.replace(report, realized_metric=latest.metric)
    alerts = run.part("decide-alerts", decide_alerts, report, config, findings)
    now = pd.Timestamp(report.end) if report.end else None
    loop_state = run.part(
        "read-loop-state", state.build_loop_state, config, ports.store, ports.registry, now, batch.day, io=True
    )
    verdict = run.part(
        "decide-policy", decide_policy, config, batch.day, alerts, loop_state, _timestamp(report.start), realized_on,
        realized_start,
    )
    episode = verdict.episode
    if verdict.retrain and episode is not None:
        episode = with_request(episode, loop_state.post_change_rows or 0, batch.day)
    emitted, event_ids = [], []
    for name, payload in verdict.events.items():
        event_id = run.part(
            "emit-event", ports.events.emit, name,
            {**payload, "batch_id": batch.day, "chunk": batch.day, "realized_on": realized_on}, io=True,
        )
        emitted.append(name)
        if event_id:
            event_ids.append(event_id)
    summary = report.to_dict()
    est = summary.get("estimated_metric") or {}
    real = summary.get("realized_metric") or {}
    scored = [f"scored with champion v{scored_by} (the batch has no predictions)"] if scored_by else []
    result = MonitorResult(
        model=config.name, batch_id=batch.day, batch_path=batch.path, valid=True, scored_by=scored_by,
        message="; ".join(
            [
                *alerts.reasons,
                *alerts.notes,
                *(f"{f.column}: {f.message}" for f in findings),
                *(f"warning: {w['message']}" for w in warnings),
                *scored,
            ]
        ) or "no drift",
        warnings=warnings, distribution_findings=findings,
        drift_detected=alerts.drift_detected, performance_degraded=alerts.performance_degraded,
        features=summary.get("features", {}), multivariate=summary.get("multivariate"),
        estimated_metric=est.get("value"), realized_metric=real.get("value") if real else None,
        realized_on=realized_on,
        metric=config.metric, reasons=list(alerts.reasons), events=emitted, event_ids=event_ids,
        rows=report.rows, signals=verdict.fired, policy=verdict.reason,
        alert=verdict.alert, decision="retrain" if verdict.retrain else (verdict.blocked_by or "none"),
        episode=None if episode is None else {**episode.to_dict(), "transition": verdict.transition},
    )
    return _publish(
        ports, config, batch, result, report, run, flow_run_id, chunks=summary.get("chunks", []),
        episode=None if episode is None else episode.to_dict(),
    )


def _publish(
    ports: Ports, config: ModelConfig, batch: io.BatchFile, result: MonitorResult, report: Any,
    run: Runner, flow_run_id: str | None, chunks: list | None = None, episode: dict | None = None,
) -> MonitorResult:
    """The run log (an MLflow run with the batch's figures and plots, Prefect artifacts)
    and the ledger (the next monitor skips the batch; the hysteresis reads its signals)."""
    run_id, url = run.part(
        "log-monitor-run", ports.runs.publish_monitor, config, result, batch.index, report, chunks or [], flow_run_id,
        io=True,
    )
    result = result.model_copy(update={"mlflow_run_id": run_id, "mlflow_run_url": url})
    record = BatchRecord(
        day=batch.day, path=batch.path, valid=result.valid, message=result.message,
        drift_detected=result.drift_detected, performance_degraded=result.performance_degraded,
        events=result.events, signals=result.signals, flow_run_id=flow_run_id,
        metric=result.metric, estimated_metric=result.estimated_metric, realized_metric=result.realized_metric,
        realized_on=result.realized_on, drift_share=drift_share(result), decision=result.decision, policy=result.policy,
    )
    run.part("record-batch", ports.store.record_batch, record, episode, io=True)
    return result


def drift_share(result: MonitorResult) -> float | None:
    """Share of the batch's features whose univariate drift alerted (None: none measured)."""
    if not result.features:
        return None
    return sum(1 for f in result.features.values() if f.get("alert")) / len(result.features)


def decide_policy(
    config: ModelConfig, day: str, alerts: Any, loop_state: policy.LoopState, start: Any = None,
    realized_on: str | None = None, realized_start: Any = None,
) -> policy.PolicyDecision:
    """The retrain policy on one valid batch (`policy.decide`): the configured signals that
    fired, whether the hysteresis holds them, what that does to the alert episode (the
    events to emit) and whether its retrain may start now, with the blocker that holds it.
    `start`: the batch's first timestamp (the change point of an episode it opens);
    `realized_on`, `realized_start`: the batch the realized metric was measured on and, when
    it is an earlier one (labels arrive late), its first timestamp (`policy.change_began`)."""
    observation = policy.ChunkObservation(
        chunk=day, valid=True, alerts=alerts, start=start, realized_on=realized_on, realized_start=realized_start
    )
    return policy.decide(observation, loop_state, policy.Policy.named("default", config.retrain))


def check_episode(ports: Ports, config: ModelConfig, *, run: Runner = DIRECT) -> policy.StartCheck | None:
    """Between batches: has the open alert episode's evidence arrived? Labels land without a
    new batch; when the episode's retrain may now start, `evergreen.retrain.requested` goes
    out (the retrain deployment's automation starts it). None without an open episode."""
    now = run.part("read-data-clock", state.data_clock, config, ports.store, io=True)
    loop_state = run.part("read-loop-state", state.build_loop_state, config, ports.store, ports.registry, now, io=True)
    episode = loop_state.episode
    if episode is None or not episode.open:
        return None
    check = run.part("decide-episode-retrain", policy.decide_episode_retrain, loop_state, config.retrain)
    if check.allowed:
        rows = loop_state.post_change_rows or 0
        run.part(
            "emit-event", ports.events.emit, events.RETRAIN_REQUESTED,
            {
                "chunk": episode.last_alert, "post_change_rows": rows, "reason": check.reason, "metric": config.metric,
                "episode": {**episode.to_dict(), "transition": "retrain"},
            },
            io=True,
        )
        stamp = str(now) if now is not None else episode.last_alert
        run.part("record-episode", ports.store.record_episode, with_request(episode, rows, stamp).to_dict(), io=True)
    run.log("episode %s: %s", episode.id, check.reason)
    return check


def realized_on_latest_labelled(
    ports: Ports, config: ModelConfig, fitted: Any, day: str, labels: pd.DataFrame | None
) -> sources.LatestRealized | None:
    """The realized metric of the champion on the newest batch up to `day` whose labels have
    arrived (`sources.realized_on_latest_labelled`), computed by the monitor's calculators on
    the rows the champion served. A batch the champion served none of ends the search: an
    earlier model's realized metric says nothing of the one serving now."""
    from evergreen.engines import monitoring

    champion = ports.registry.version_by_alias(registry.CHAMPION)
    serving = champion.version if champion is not None else None

    def realize(batch: io.BatchFile) -> Any:
        rows = sources.BatchRows.open(ports.store, batch, config)
        if rows.lacks_predictions():
            rows = rows.scored(sources.load_champion(ports.registry, config))
        else:
            rows = rows.served_by(serving)
        return monitoring.compute_monitor_chunks(fitted, rows, labels, rows=config.data.memory_rows)

    known = {v.version for v in ports.registry.list_versions()}
    return sources.realized_on_latest_labelled(config, ports.store, day, labels, realize, serving, known)


def pending_batches(ports: Ports) -> list[io.BatchFile]:
    """Batches the monitor has not processed yet, in day order."""
    files = ports.store.list_batches()
    todo = set(ports.store.read_ledger().unprocessed([f.day for f in files]))
    return [f for f in files if f.day in todo]


def find_batch(ports: Ports, path: str) -> io.BatchFile:
    """The stream's batch file at `path` (any other file counts as a batch of its own)."""
    known = {_key(b.path): b for b in ports.store.list_batches()}
    return known.get(_key(path)) or io.BatchFile(path=path, day=Path(path).stem, index=len(known))


def fit_monitor(reference: pd.DataFrame, config: ModelConfig) -> Any:
    """NannyML's calculators fitted on `reference` (kept for the process: see _FITTED)."""
    from evergreen.engines import monitoring
    from evergreen.engines.snapshot import dataset_digest

    settings = config.model_dump_json(include={"name", "problem_type", "metric", "columns", "monitoring"})
    key = f"{dataset_digest(reference)}:{settings}"
    if key not in _FITTED:
        if len(_FITTED) >= _FITTED_MAX:
            _FITTED.pop(next(iter(_FITTED)))
        _FITTED[key] = monitoring.fit_monitor(reference, config)
    return _FITTED[key]


def _key(path: str) -> str:
    return path if "://" in path and not path.startswith("file://") else str(Path(path).resolve())


def _timestamp(value: Any) -> Any:
    """A report's start or end (ISO text or a timestamp) as a datetime, None when unknown."""
    return pd.Timestamp(value).to_pydatetime() if value else None
