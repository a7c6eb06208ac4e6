"""I/O tasks: reading batches, labels and references. The only tasks with retries."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from evergreen.adapters import io, ledger
from evergreen.config import ModelConfig
from evergreen.engines.validation import ValidationReport
from evergreen.loop import sources


def _transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    """Retry I/O errors, not files that are simply bad: those fail the same way every time."""
    try:
        state.result()
    except io.DataReadError:
        return False
    except Exception:
        return True
    return False


@task(name="load-batch", retries=2, retry_delay_seconds=1, retry_condition_fn=_transient)
def load_batch(path: str, max_rows: int | None = None, datetime_columns: list[str] | None = None) -> pd.DataFrame:
    """Read one production batch (raises DataReadError naming the file when unreadable, and
    before reading its data when it has more than `max_rows` rows)."""
    return io.read_table(path, max_rows=max_rows, datetime_columns=datetime_columns or ())


@task(name="load-monitor-reference", retries=2, retry_delay_seconds=1)
def load_monitor_reference(config: ModelConfig) -> pd.DataFrame:
    """The NannyML reference: the champion's (logged by its retrain run), else the data
    folder's file."""
    return sources.read_monitor_reference(config)


@task(name="load-labels", retries=2, retry_delay_seconds=1)
def load_labels(config: ModelConfig, up_to_day: str) -> pd.DataFrame | None:
    """Labels delivered on or before `up_to_day`."""
    return io.read_labels(config.data.path("labels"), up_to_day=up_to_day)


@task(name="check-config-columns", cache_policy=NO_CACHE)
def check_config_columns(config: ModelConfig) -> None:
    """Fails (ConfigError naming each field) when the config names a column the reference
    tables lack; only their schemas are read."""
    sources.check_config_columns(config)


@task(name="check-label-files", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def check_label_files(config: ModelConfig) -> list[ValidationReport]:
    """Every labels file checked on its own: readable, possible targets, ids that were served."""
    return sources.check_label_files(config)


@task(name="pending-batches")
def pending_batches(config: ModelConfig) -> list[io.BatchFile]:
    """Batches the monitor has not processed yet, in day order."""
    files = io.list_batches(config.data.path("batches"))
    seen = ledger.read_ledger(config.data.path("state"))
    todo = set(seen.unprocessed([f.day for f in files]))
    return [f for f in files if f.day in todo]


@task(name="record-batch", retries=2, retry_delay_seconds=1)
def record_batch(config: ModelConfig, record: ledger.BatchRecord) -> None:
    ledger.record_batch(config.data.path("state"), record)

