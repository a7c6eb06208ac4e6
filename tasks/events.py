"""Evergreen's Prefect events (DESIGN.md "Events"): one place that builds and emits them."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.events import emit_event

from evergreen.config import ModelConfig
from evergreen.jsonable import plain


def model_resource(config: ModelConfig) -> dict[str, str]:
    return {
        "prefect.resource.id": config.resource_id,
        "prefect.resource.name": config.name,
        "evergreen.model": config.name,
    }


@task(name="emit-event")
def emit(config: ModelConfig, event: str, payload: dict[str, Any]) -> str | None:
    """Emit an Evergreen event for the model's resource; returns the event id."""
    body = plain({"model": config.name, **payload})
    emitted = emit_event(event=event, resource=model_resource(config), payload=body)
    return str(emitted.id) if emitted is not None else None
