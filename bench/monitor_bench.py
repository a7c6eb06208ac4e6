"""The monitor flow against the same GX validation and NannyML calls made directly.

Baseline: read the monitor reference, derive the suite, fit NannyML, read the batch,
validate it with GX (`Validator(...).validate`), read its labels, compute drift and
estimated/realized performance, decide alerts and draw NannyML's plots as the flow does
(`MonitorReport.plots_for`, timed under the flow's `log-monitor-run`, where the flow draws
them) — no Prefect, no MLflow.
Flow: `flows.monitor.monitor(config=cfg, batch=path)` against a local Prefect server: the
monitor step (`evergreen.loop.monitor.monitor`) with its parts as Prefect tasks, which does
the same and, around it, Prefect task runs, the MLflow monitoring run (metrics and
the plots page as an artifact), Prefect artifacts, the batch ledger and events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import (
    PRELOAD_DATA,
    PRELOAD_GX,
    PRELOAD_MLFLOW,
    PRELOAD_NANNYML,
    PRELOAD_PLOTLY,
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
    *PRELOAD_GX,
    *PRELOAD_NANNYML,
    *PRELOAD_PLOTLY,
    "evergreen.adapters.io",
    "evergreen.engines.validation",
    "evergreen.engines.monitoring",
)
_FLOW_MODULES = (
    *_BASELINE_MODULES,
    *PRELOAD_MLFLOW,
    *PRELOAD_PREFECT,
    "flows.monitor",
)


def arguments(dataset: Dataset, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments of one run: the config with a fresh per-run store, and the batch."""
    return {"config_json": run_config_json(dataset, run_dir), "batch": dataset.batch_path}


def run_baseline(config_json: str, batch: str) -> dict[str, Any]:
    """The monitor's GX and NannyML work on one batch, called directly."""
    from evergreen.adapters import io
    from evergreen.decisions import alerts
    from evergreen.engines import monitoring, validation

    cfg = load_run_config(config_json)
    day = Path(batch).stem
    step = StepTimer()
    with step("load-monitor-reference"):
        reference = io.read_table(cfg.data.path("monitor_reference"))
    with step("derive-suite"):
        suite = validation.derive_suite(reference, cfg)
    with step("fit-monitor"):
        fitted = monitoring.fit_monitor(reference, cfg)
    with step("load-batch"):
        frame = io.read_table(batch)
    with step("validate-batch"):
        report = validation.Validator(suite).validate(frame, day)
    if not report.success:
        raise BenchError(f"baseline: batch {batch} failed validation: {report.summary()}")
    with step("load-labels"):
        labels = io.read_labels(cfg.data.path("labels"), up_to_day=day)
    with step("estimate-drift-and-performance"):
        result = monitoring.compute_monitor(fitted, frame, labels)
    with step("decide-alerts"):
        decision = alerts.decide_alerts(result, cfg)
    with step("log-monitor-run"):
        # The same NannyML plot calls the flow makes (all plots when the batch alerts), as
        # one HTML page. The flow draws it in its `log-monitor-run` part
        # (`MlflowRunLog.publish_monitor`) and logs it to MLflow; the baseline keeps it, so
        # its step of that name is the drawing alone.
        result.plots_for(cfg.monitoring.plots, decision.drift_detected or decision.performance_degraded)
    return {
        "rows": len(frame),
        "valid": report.success,
        "drift_detected": decision.drift_detected,
        "performance_degraded": decision.performance_degraded,
        "drifted_features": sorted(result.drifted_features),
        "estimated": result.estimated_metric.value,
        "realized": result.realized_metric.value if result.realized_metric else None,
        "steps": step.seconds,
    }


def run_flow(config_json: str, batch: str) -> dict[str, Any]:
    """The monitor flow on one batch (needs PREFECT_API_URL)."""
    from flows.monitor import monitor

    cfg = load_run_config(config_json)
    state = monitor(config=cfg, batch=batch, return_state=True)
    results = state.result(raise_on_failure=False)
    if isinstance(results, BaseException) or not state.is_completed():
        raise BenchError(f"monitor flow did not complete on {batch}: {state.message or results}")
    r = results[0]
    return {
        "rows": r.rows,
        "valid": r.valid,
        "drift_detected": r.drift_detected,
        "performance_degraded": r.performance_degraded,
        "drifted_features": sorted(n for n, f in r.features.items() if f.get("alert")),
        "estimated": r.estimated_metric,
        "realized": r.realized_metric,
        "mlflow_run_id": r.mlflow_run_id,
        "flow_run_id": str(state.state_details.flow_run_id),
    }


BENCHMARK = Benchmark(
    name="monitor",
    title="Monitor flow",
    baseline=Variant("baseline", "bench.monitor_bench:run_baseline", _BASELINE_MODULES),
    flow=Variant("flow", "bench.monitor_bench:run_flow", _FLOW_MODULES, uses_prefect=True),
    arguments=arguments,
    compare=(
        "rows",
        "valid",
        "drift_detected",
        "performance_degraded",
        "drifted_features",
        "estimated",
        "realized",
    ),
    description=__doc__ or "",
)
