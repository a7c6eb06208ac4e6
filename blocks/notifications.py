"""Notifications: a Prefect `Webhook` block and the automations that call it.

`evergreen register --config FILE` saves them when the config has
`notifications.webhook_url` (a SecretStr: the URL lives only in the block, which keeps it
secret, never in prefect.yaml, parameters or logs). Two automations, upserted by name so
re-registering changes nothing:

- `evergreen <model>: promoted or rolled back` on `evergreen.model.promoted` and
  `evergreen.model.rolled_back` for the resource `evergreen.model.<model>`;
- `evergreen <model>: flow run failed` when a flow run of the model (named
  `<flow> · <block name> · <subject>`, tasks/runs.py) ends in a failed state: Failed, Crashed, TimedOut
  or one of the named failures of the flows (DataRejected, GateFailed, ...).

`evergreen unregister` removes the block and both automations (`remove_notifications`).
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
# The one failed-run automation of the single-model design (it called the webhook of
# whichever model was registered last); registering a model removes it.
LEGACY_AUTOMATIONS = ["evergreen: flow run failed"]

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
    return [f"evergreen {model}: promoted or rolled back", f"evergreen {model}: flow run failed"]


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
    run_coro_as_sync(_delete_automations(LEGACY_AUTOMATIONS))
    return [a.name for a in automations]


def remove_notifications(model: str) -> list[str]:
    """Delete the model's webhook block and automations; returns what was deleted
    (`webhook/<block>`, automation names). Nothing to delete is not an error."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.asyncutils import run_coro_as_sync

    removed = run_coro_as_sync(_delete_automations(automation_names(model))) or []
    name = webhook_block_name(model)
    with get_client(sync_client=True) as client:
        try:
            doc = client.read_block_document_by_name(name, "webhook", include_secrets=False)
        except ObjectNotFound:
            return removed
        client.delete_block_document(doc.id)
    return [f"webhook/{name}", *removed]


def _automations(model: str, block_id: Any) -> list[Any]:
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from blocks.model_config import block_document_name
    from tasks.runs import run_name_patterns

    on_model, on_failed = automation_names(model)
    label = block_document_name(model)
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
            description=f"Tell people when a flow run of {model} (named `<flow> · {label} · ...`) ends Failed.",
            trigger=EventTrigger(
                # By name, not by the run's `model:` tag: the server's state events may carry
                # the tags the run was created with only (tasks/runs.py).
                match={"prefect.resource.id": "prefect.flow-run.*", "prefect.resource.name": run_name_patterns(label)},
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


async def _delete_automations(names: list[str]) -> list[str]:
    from prefect.client.orchestration import get_client

    deleted = []
    async with get_client() as client:
        for name in names:
            for automation in await client.read_automations_by_name(name):
                await client.delete_automation(automation.id)
                deleted.append(name)
    return deleted
