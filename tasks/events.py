"""Evergreen's Prefect events (DESIGN.md "Events"): one place that builds and emits them."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.events import emit_event

from blocks.model_config import block_document_name
from evergreen.config import ModelConfig
from evergreen.jsonable import plain

# The resource label naming the model's saved `evergreen-model` block: prefect.yaml's triggers
# match every `evergreen.model.*` resource and pass this label as the run's `config`.
BLOCK_LABEL = "evergreen.block"


def model_resource(config: ModelConfig) -> dict[str, str]:
    """The event resource of a model (DESIGN.md "Events"): its id, name and block name."""
    return {
        "prefect.resource.id": config.resource_id,
        "prefect.resource.name": config.name,
        "evergreen.model": config.name,
        BLOCK_LABEL: block_document_name(config.name),
    }


@task(name="emit-event")
def emit(config: ModelConfig, event: str, payload: dict[str, Any]) -> str | None:
    """Emit an Evergreen event for the model's resource; returns the event id."""
    return PrefectEvents(config).emit(event, payload)


class PrefectEvents:
    """The event sink users run (`evergreen.adapters.ports.EventSink`): Prefect events for
    the model's resource."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def emit(self, event: str, payload: dict[str, Any]) -> str | None:
        body = plain({"model": self.config.name, **payload})
        emitted = emit_event(event=event, resource=model_resource(self.config), payload=body)
        return str(emitted.id) if emitted is not None else None
