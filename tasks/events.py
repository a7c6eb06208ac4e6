"""Evergreen's Prefect events (DESIGN.md "Events"): one place that builds and emits them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

from prefect import task
from prefect.events import emit_event

from evergreen.config import ModelConfig


def jsonable(value: Any) -> Any:
    """Plain JSON types only: Prefect silently drops events whose payload holds numpy scalars."""
    import numpy as np

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def model_resource(config: ModelConfig) -> dict[str, str]:
    return {
        "prefect.resource.id": config.resource_id,
        "prefect.resource.name": config.name,
        "evergreen.model": config.name,
    }


@task(name="emit-event")
def emit(config: ModelConfig, event: str, payload: dict[str, Any]) -> str | None:
    """Emit an Evergreen event for the model's resource; returns the event id."""
    body = jsonable({"model": config.name, **payload})
    emitted = emit_event(event=event, resource=model_resource(config), payload=body)
    return str(emitted.id) if emitted is not None else None
