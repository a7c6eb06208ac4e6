"""Each run explains itself in the Prefect UI: its domain sentence in the run's log, its own
page (the retrain's version, the gate's checks, the canary's evidence, the rollback's reason)
and the model's story on one page, updated by every flow under stable keys:

- `<model>-status`: champion and canary, the alert episode, the last decisions and batches
  (`evergreen.loop.status.status_markdown`);
- `<model>-alias-history`: `evergreen history` as a table;
- `evergreen-fleet`: every registered model (saved `evergreen-model` block) and its state;
- `<model>-retrain`, `<model>-gate`, `<model>-canary-review`, `<model>-rollback`: the last
  run of that flow (each run's own version is on its page in the UI, Artifacts tab).

Publishing never fails a run: a page that cannot be written is a warning in the run's log."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.model_config import block_document_name
from evergreen.adapters.ports import Ports
from evergreen.config import ModelConfig
from evergreen.loop import status

FLEET_KEY = "evergreen-fleet"


def artifact_key(model: str, kind: str) -> str:
    """`<model>-<kind>` in the characters artifact keys allow (lowercase, digits, dashes)."""
    raw = f"{block_document_name(model)}-{kind}".lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


@task(name="publish-run-page", cache_policy=NO_CACHE, persist_result=False)
def publish_run_page(config: ModelConfig, kind: str, markdown: str, description: str) -> None:
    """This run's own page (`<model>-<kind>`)."""
    try:
        create_markdown_artifact(key=artifact_key(config.name, kind), markdown=markdown, description=description)
    except Exception as exc:  # noqa: BLE001 - a page is never worth failing the run
        get_run_logger().warning("could not publish the %s page of %s: %s", kind, config.name, exc)


@task(name="publish-model-status", cache_policy=NO_CACHE, persist_result=False)
def publish_model_status(config: ModelConfig, ports: Ports) -> status.ModelStory | None:
    """The model's `<model>-status` and `<model>-alias-history` pages, from the ledger and the
    registry; returns the story it rendered (None when it could not be read)."""
    log = get_run_logger()
    try:
        story = status.read_story(config.name, config.metric, ports.store, ports.registry)
        create_markdown_artifact(
            key=artifact_key(config.name, "status"),
            markdown=status.status_markdown(story),
            description=f"{config.name}: {status.model_state(story)}",
        )
        create_markdown_artifact(
            key=artifact_key(config.name, "alias-history"),
            markdown=status.history_markdown(config.name, story.history),
            description=f"{config.name}: every alias move (who, when, why)",
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("could not publish the status page of %s: %s", config.name, exc)
        return None
    return story


@task(name="publish-fleet", cache_policy=NO_CACHE, persist_result=False)
def publish_fleet(config: ModelConfig, story: status.ModelStory | None) -> None:
    """The `evergreen-fleet` table: one row per saved `evergreen-model` block. This run
    refreshes its own model's row; the others keep what their own last run wrote
    (`status.merge_fleet`), so a run reads one model whatever the size of the fleet."""
    log = get_run_logger()
    try:
        from prefect.artifacts import Artifact

        from tasks.fleet import list_registered_models

        own = block_document_name(config.name)
        registered = list_registered_models.fn()
        name = own if own in registered or story is None else own + " (not registered)"
        row = status.fleet_row(name, story) if story is not None else status.fleet_row(name, None, "see the run's log")
        previous = Artifact.get(FLEET_KEY)
        rows = status.merge_fleet(_table_rows(previous), registered, row)
        create_table_artifact(key=FLEET_KEY, table=rows, description="every registered model and its state")
    except Exception as exc:  # noqa: BLE001
        log.warning("could not publish the fleet overview: %s", exc)


def _table_rows(artifact: Any) -> list[dict[str, Any]]:  # noqa: ANN401 - an ArtifactResponse or None
    """The rows of a table artifact as Prefect stores them (a JSON list of objects)."""
    import json

    if artifact is None or not artifact.data:
        return []
    try:
        data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    except ValueError:
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def explain_run(config: ModelConfig, ports: Ports, message: str, page: tuple[str, str] | None = None) -> None:
    """What a flow does last: log its domain sentence (the final state's message) at INFO,
    publish its own page (`page`: kind, markdown) and update the model's status and the
    fleet overview."""
    get_run_logger().info("%s", message)
    if page is not None:
        kind, markdown = page
        publish_run_page(config, kind, markdown, message[:500])
    story = publish_model_status(config, ports)
    publish_fleet(config, story)


def outcome_page(kind: str, outcome: Any) -> tuple[str, str]:
    """The page of a promote / canary-review / rollback outcome."""
    render = {"gate": status.gate_markdown, "canary-review": status.canary_markdown, "rollback": status.rollback_markdown}[kind]
    return kind, render(outcome.result, outcome.message)
