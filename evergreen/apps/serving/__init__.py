"""Evergreen's scoring service: MLflow's scoring protocol with a champion/canary split.

Modules: `router` (which alias serves an id), `schema` (request parsing and validation),
`models` (the served snapshot and its refresher), `scoring` (one request on one snapshot),
`predlog` (the prediction log), `metrics` (GET /metrics), `app` (FastAPI app and `serve`,
one process or several workers).

Attributes are imported on first use, so `from evergreen.adapters.predlog import ...` does not
pull in FastAPI.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "create_app": "evergreen.apps.serving.app",
    "serve": "evergreen.apps.serving.app",
    "LogSettings": "evergreen.apps.serving.app",
    "RequestLimits": "evergreen.apps.serving.schema",
    "read_prediction_log": "evergreen.adapters.predlog",
    "compact_day": "evergreen.adapters.predlog",
    "PredictionLogWriter": "evergreen.adapters.predlog",
    "route": "evergreen.decisions.routing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evergreen.apps.serving' has no attribute {name!r}")
