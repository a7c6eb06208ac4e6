"""Notifications: a Prefect `Webhook` block and the automations that call it.

`evergreen register --config FILE` saves them when the config has
`notifications.webhook_url` (a SecretStr: the URL lives only in the block, which keeps it
secret, never in prefect.yaml, parameters or logs). Two automations, upserted by name so
re-registering changes nothing:

- `evergreen <model>: promoted or rolled back` on `evergreen.model.promoted` and
  `evergreen.model.rolled_back` for the resource `evergreen.model.<model>`;
- `evergreen: flow run failed` when any flow run tagged `evergreen` (every deployment in
  prefect.yaml carries the tag) ends in a failed state: Failed, Crashed, TimedOut or one of
  the named failures of the flows (DataRejected, GateFailed, ...).
"""

from __future__ import annotations

from typing import Any

from evergreen import events
from evergreen.config import ModelConfig

MODEL_EVENTS = [events.MODEL_PROMOTED, events.MODEL_ROLLED_BACK]
# A flow run's state event is named after the state's *name*: a run ending in
# Failed(name="GateFailed") emits `prefect.flow-run.GateFailed`, not `...Failed`. So the
# trigger lists Prefect's own failure states and every named failure our flows return
# (tests/unit/test_notifications.py keeps this list in step with flows/).
FAILED_STATE_NAMES = ["Failed", "Crashed", "TimedOut", "DataRejected", "TrainingDataRejected", "GateFailed", "NotEnoughData"]
FAILED_RUN_EVENTS = [f"prefect.flow-run.{name}" for name in FAILED_STATE_NAMES]
TAG = "evergreen"

MODEL_PAYLOAD = """{
  "event": "{{ event.event }}",
  "model": "{{ event.resource.id }}",
  "occurred": "{{ event.occurred }}",
  "payload": {{ event.payload | tojson }}
}"""

FAILED_PAYLOAD = """{
  "event": "{{ event.event }}",
  "flow_run": "{{ event.resource.name }}",
  "flow_run_id": "{{ event.resource.id }}",
  "occurred": "{{ event.occurred }}",
  "state": "{{ event.payload.validated_state.name }}",
  "message": {{ (event.payload.validated_state.message or '') | tojson }}
}"""


def webhook_block_name(model: str) -> str:
    return f"evergreen-{model}-notify".lower().replace("_", "-").replace(".", "-")


def automation_names(model: str) -> list[str]:
    return [f"evergreen {model}: promoted or rolled back", "evergreen: flow run failed"]


def save_notifications(config: ModelConfig) -> list[str]:
    """Save the webhook block and upsert both automations; returns the automation names.
    Does nothing (returns []) without `notifications.webhook_url`."""
    from prefect.blocks.webhook import Webhook

    url = config.notifications.webhook_url
    if url is None:
        return []
    block = Webhook(url=url, method="POST")
    block_id = block.save(webhook_block_name(config.name), overwrite=True)
    automations = _automations(config.name, block_id)
    from prefect.utilities.asyncutils import run_coro_as_sync

    run_coro_as_sync(_upsert(automations))
    return [a.name for a in automations]


def _automations(model: str, block_id: Any) -> list[Any]:
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    on_model, on_failed = automation_names(model)
    return [
        AutomationCore(
            name=on_model,
            description="Tell people when Evergreen promoted or rolled back a model.",
            trigger=EventTrigger(
                match={"prefect.resource.id": f"evergreen.model.{model}"},
                expect=set(MODEL_EVENTS),
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[CallWebhook(block_document_id=block_id, payload=MODEL_PAYLOAD)],
        ),
        AutomationCore(
            name=on_failed,
            description="Tell people when an Evergreen flow run (tag `evergreen`) ends Failed.",
            trigger=EventTrigger(
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"},
                expect=set(FAILED_RUN_EVENTS),
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[CallWebhook(block_document_id=block_id, payload=FAILED_PAYLOAD)],
        ),
    ]


async def _upsert(automations: list[Any]) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        for automation in automations:
            existing = await client.read_automations_by_name(automation.name)
            if existing:
                await client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:
                    await client.delete_automation(extra.id)
            else:
                await client.create_automation(automation)
