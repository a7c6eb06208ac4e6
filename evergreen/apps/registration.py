"""What `evergreen register` adds to the Prefect server for one model and `evergreen
unregister` removes: the model's `evergreen-model` block (the name prefect.yaml's triggers
and fan-outs pass as `config`), its per-model global concurrency limits (the registry lock and
one single-flight slot per flow, tasks/registry.py) and, with a webhook URL, its notification
webhook block and automations. prefect.yaml itself is never edited: its deployments serve every
registered model. Both are idempotent. The model's MLflow registry is never touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evergreen.config import ModelConfig


@dataclass
class Registration:
    """The Prefect objects of one registered model."""

    model: str
    block: str
    limits: list[str]
    created_limits: list[str] = field(default_factory=list)
    automations: list[str] = field(default_factory=list)
    webhook_block: str | None = None


@dataclass
class Removal:
    """What `unregister` deleted; `registry` names the MLflow registry it left alone."""

    model: str
    block: str | None = None
    limits: list[str] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    registry: str | None = None

    @property
    def removed(self) -> list[str]:
        return [*([f"evergreen-model/{self.block}"] if self.block else []), *self.limits, *self.notifications]


def register_model(config: ModelConfig) -> Registration:
    """Save (or update) the model's block, create its concurrency limits that are missing and
    save its notifications (when the config has `notifications.webhook_url`)."""
    from prefect.exceptions import ObjectAlreadyExists

    from blocks.model_config import EvergreenModel, block_document_name
    from blocks.notifications import save_notifications, webhook_block_name
    from tasks.registry import ensure_limits, model_limit_names

    block = block_document_name(config.name)
    try:
        EvergreenModel.register_type_and_schema()
    except ObjectAlreadyExists:
        # Two models registered at once on a new server: the other process created the block
        # type or schema between this one's read and write; the second pass finds it.
        EvergreenModel.register_type_and_schema()
    EvergreenModel.from_config(config).save(block, overwrite=True)
    limits = model_limit_names(config.name)
    created = ensure_limits(limits)
    automations = save_notifications(config)
    webhook = webhook_block_name(config.name) if automations else None
    return Registration(config.name, block, limits, created, automations, webhook)


def unregister_model(name: str) -> Removal:
    """Delete what `register_model` made for the model `name` (its config's name or its block
    name): the block, the concurrency limits, the webhook block and automations. What is
    already gone is skipped. The MLflow registered model stays."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from blocks.model_config import block_document_name, resolve_config
    from blocks.notifications import remove_notifications
    from tasks.fleet import MODEL_BLOCK_TYPE
    from tasks.registry import model_limit_names

    block = block_document_name(name)
    removal = Removal(model=name)
    models = {name}
    with get_client(sync_client=True) as client:
        try:
            doc = client.read_block_document_by_name(block, MODEL_BLOCK_TYPE, include_secrets=False)
        except ObjectNotFound:
            doc = None
        if doc is not None:
            try:
                config = resolve_config(block)
                models.add(config.name)  # the limits and notifications carry the config's name
                removal.model = config.name
                removal.registry = config.mlflow.model_name
            except Exception:  # noqa: BLE001 - an invalid block is still removed
                pass
            client.delete_block_document(doc.id)
            removal.block = block
        for model in sorted(models):
            for limit in model_limit_names(model):
                try:
                    client.delete_global_concurrency_limit_by_name(limit)
                    removal.limits.append(limit)
                except ObjectNotFound:
                    pass
    for model in sorted(models):
        removal.notifications += remove_notifications(model)
    return removal
