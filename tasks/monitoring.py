"""Monitor tasks: thin wrappers around evergreen.validation and evergreen.monitoring."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from evergreen import monitoring, validation
from evergreen.config import ModelConfig

# Inputs are large frames: hashing them for a cache key would cost more than the work.


@task(name="derive-suite", cache_policy=NO_CACHE)
def derive_suite(reference: pd.DataFrame, config: ModelConfig) -> validation.SuiteSpec:
    return validation.derive_suite(reference, config)


@task(name="validate-batch", cache_policy=NO_CACHE)
def validate_batch(
    batch: pd.DataFrame, suite: validation.SuiteSpec, batch_id: str
) -> validation.ValidationReport:
    return validation.validate_batch(batch, suite, batch_id)


@task(name="fit-monitor", cache_policy=NO_CACHE)
def fit_monitor(reference: pd.DataFrame, config: ModelConfig) -> monitoring.FittedMonitor:
    return monitoring.fit_monitor(reference, config)


@task(name="estimate-drift-and-performance", cache_policy=NO_CACHE)
def compute_monitor(
    fitted: monitoring.FittedMonitor, batch: pd.DataFrame, labels: pd.DataFrame | None
) -> monitoring.MonitorReport:
    return monitoring.compute_monitor(fitted, batch, labels)


@task(name="decide-alerts", cache_policy=NO_CACHE)
def decide_alerts(report: monitoring.MonitorReport, config: ModelConfig) -> monitoring.AlertDecision:
    return monitoring.decide_alerts(report, config)
