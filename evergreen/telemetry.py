"""Every telemetry channel of the stack, off.

Called by the entry points (CLI, flows, tests) before any heavy library is imported;
explicit values set by the user win.
"""

from __future__ import annotations

import os

TELEMETRY_OFF = {
    # MLflow only honours "true" here, not "1".
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # NannyML posts usage to an analytics host unless this is set (any value).
    "NML_DISABLE_USAGE_LOGGING": "1",
    "GX_ANALYTICS_ENABLED": "false",
    # mlflow server: no job-execution workers we don't use.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


# Not telemetry, but set at the same moments: with the default (active) OpenMP wait policy
# XGBoost on 2 shared cores runs ~20x slower whenever another process is busy. It must be
# set before xgboost is imported.
# MLflow draws a progress bar for every model it downloads: noise in flow-run logs.
RUNTIME_DEFAULTS = {"OMP_WAIT_POLICY": "passive", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def disable_telemetry() -> None:
    """Turn every known telemetry channel off for this process and its children (and set
    the runtime defaults above)."""
    for key, value in {**TELEMETRY_OFF, **RUNTIME_DEFAULTS}.items():
        os.environ.setdefault(key, value)
