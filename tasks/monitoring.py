"""Monitor tasks: thin wrappers around evergreen.engines.validation and evergreen.engines.monitoring."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from evergreen.config import ModelConfig
from evergreen.decisions import policy
from evergreen.engines import monitoring, validation
from evergreen.loop import sources

# Inputs are large frames: hashing them for a cache key would cost more than the work.


@task(name="derive-suite", cache_policy=NO_CACHE)
def derive_suite(reference: pd.DataFrame, config: ModelConfig) -> validation.SuiteSpec:
    return validation.derive_suite(reference, config)


@task(name="validate-batch", cache_policy=NO_CACHE)
def validate_batch(
    batch: pd.DataFrame, suite: validation.SuiteSpec, batch_id: str
) -> validation.ValidationReport:
    return validation.validate_batch(batch, suite, batch_id)


# Fitted calculators per (reference digest, settings), for the life of the process: a served
# deployment or a replay runs many monitor flows on the same reference, and fitting NannyML
# costs seconds each time.
_FITTED: dict[str, monitoring.FittedMonitor] = {}
_FITTED_MAX = 4


@task(name="fit-monitor", cache_policy=NO_CACHE)
def fit_monitor(reference: pd.DataFrame, config: ModelConfig) -> monitoring.FittedMonitor:
    from evergreen.engines.snapshot import dataset_digest

    settings = config.model_dump_json(include={"name", "problem_type", "metric", "columns", "monitoring"})
    key = f"{dataset_digest(reference)}:{settings}"
    if key not in _FITTED:
        if len(_FITTED) >= _FITTED_MAX:
            _FITTED.pop(next(iter(_FITTED)))
        _FITTED[key] = monitoring.fit_monitor(reference, config)
    return _FITTED[key]


@task(name="estimate-drift-and-performance", cache_policy=NO_CACHE)
def compute_monitor(
    fitted: monitoring.FittedMonitor, batch: pd.DataFrame, labels: pd.DataFrame | None
) -> monitoring.MonitorReport:
    return monitoring.compute_monitor(fitted, batch, labels)


@task(name="draw-plots", cache_policy=NO_CACHE)
def draw_plots(report: monitoring.MonitorReport, mode: str, alerting: bool) -> str:
    """NannyML's plots of the batch as one HTML page (`MonitorReport.plots_for`)."""
    return report.plots_for(mode, alerting)


@task(name="decide-alerts", cache_policy=NO_CACHE)
def decide_alerts(report: monitoring.MonitorReport, config: ModelConfig) -> monitoring.AlertDecision:
    return monitoring.decide_alerts(report, config)


@task(name="realized-performance", cache_policy=NO_CACHE)
def realized_on_latest_labelled(
    fitted: monitoring.FittedMonitor, config: ModelConfig, day: str, labels: pd.DataFrame | None
) -> sources.LatestRealized | None:
    """The realized metric of the newest batch up to `day` whose labels have arrived
    (`sources.realized_on_latest_labelled` on the batch files)."""
    from evergreen.adapters.store import FileStore

    store = FileStore(config)

    def realize(batch):  # noqa: ANN001, ANN202
        return monitoring.compute_monitor(fitted, store.read_batch(batch), labels).realized_metric

    return sources.realized_on_latest_labelled(config, store, day, labels, realize)


@task(name="read-loop-state", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def read_loop_state(config: ModelConfig, day: str, now: str | None) -> policy.LoopState:
    """The retrain policy's state at this batch (`state.build_loop_state`: the ledger's
    signal history, the registry, the labelled rows delivered so far)."""
    from evergreen.adapters import registry, tracking
    from evergreen.adapters.store import FileStore
    from evergreen.loop import state

    tracking.connect(config.mlflow)
    return state.build_loop_state(
        config, FileStore(config), registry.Registry(config.mlflow.model_name),
        pd.Timestamp(now) if now else None, day,
    )


@task(name="decide-policy", cache_policy=NO_CACHE)
def decide_policy(
    config: ModelConfig, day: str, alerts: monitoring.AlertDecision, loop_state: policy.LoopState
) -> policy.PolicyDecision:
    """The retrain policy on one valid batch (`policy.decide`): the configured signals that
    fired, whether the hysteresis holds them (the events to emit) and whether a retrain may
    start now, with the blocker that holds it."""
    observation = policy.ChunkObservation(chunk=day, valid=True, alerts=alerts)
    return policy.decide(observation, loop_state, policy.Policy.named("default", config.retrain))
