"""The `evergreen-model` block as the Prefect UI edits it: an unchanged Save keeps the user's
values.

The UI's form (Prefect 3.9, seen in headless Chromium on the block's Edit page) sends back
the stored values, leaving out every null and every value equal to the default its JSON
schema declares for the field (`merge_existing_data: false`: what it leaves out is gone).
`as_the_ui_saves` does the same to the block document read through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evergreen.config import ModelConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("allOf", []) if "$ref" in s), None)
    return definitions[ref.split("/")[-1]] if ref else schema


def as_the_ui_saves(data: dict[str, Any], schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """`data` as the UI's form sends it back: nulls and values equal to their schema
    default left out, nested sections likewise."""
    out: dict[str, Any] = {}
    properties = _resolve(schema, definitions).get("properties") or {}
    for key, value in data.items():
        prop = properties.get(key, {})
        if value is None or ("default" in prop and prop["default"] == value):
            continue
        target = _resolve(prop, definitions)
        out[key] = as_the_ui_saves(value, target, definitions) if isinstance(value, dict) and target.get("properties") else value
    return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def test_an_unchanged_save_in_the_ui_keeps_the_users_values() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentUpdate

    from blocks.model_config import EvergreenModel

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    # Explicit values equal to the defaults: the user wrote them and means them.
    cfg = cfg.model_copy(update={"canary": cfg.canary.model_copy(update={"traffic_share": 0.2, "window_hours": 24.0})})
    EvergreenModel.register_type_and_schema()
    EvergreenModel.from_config(cfg).save("ui-round-trip", overwrite=True)
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name("ui-round-trip", "evergreen-model")
        schema = doc.block_schema.fields
        saved = as_the_ui_saves(doc.data, schema, schema.get("definitions") or {})
        client.update_block_document(doc.id, BlockDocumentUpdate(data=saved, merge_existing_data=False))
        after = client.read_block_document_by_name("ui-round-trip", "evergreen-model")
    assert _without_nulls(after.data) == _without_nulls(doc.data), "the UI's Save dropped stored values"
    assert after.data["config"]["canary"]["traffic_share"] == 0.2
    assert EvergreenModel.load("ui-round-trip").to_config() == cfg


def test_the_form_has_human_section_titles_and_lists_as_lists() -> None:
    from blocks.model_config import EvergreenModel

    schema = EvergreenModel.model_json_schema()
    definitions = schema["definitions"]
    assert schema["properties"]["config"]["title"] == "Model configuration"
    assert definitions["RetrainPolicyConfig"]["title"] == "Retrain policy"
    assert definitions["ColumnRoles"]["title"] == "Columns"
    assert definitions["ModelConfig"]["properties"]["gate"]["title"] == "Promotion gate"
    features = definitions["ColumnRoles"]["properties"]["features"]
    assert features["type"] == "array" and features["items"] == {"type": "string"}
    # No defaults for the form to fill in and drop; each is named in the description.
    for name, definition in definitions.items():
        for key, prop in (definition.get("properties") or {}).items():
            assert "default" not in prop, f"{name}.{key}"
    assert "(default: 14)" in definitions["RetrainPolicyConfig"]["properties"]["window_days"]["description"]
    # Closed lists carry their values (the default UI renders them as multi-selects).
    assert definitions["MonitoringConfig"]["properties"]["continuous_methods"]["items"]["enum"]
    assert definitions["RetrainPolicyConfig"]["properties"]["signals"]["items"]["enum"]
    assert "retrain.cooldown_hours" in schema["properties"]["switched_off"]["items"]["enum"]


def test_every_setting_that_can_be_switched_off_is_offered_by_the_form() -> None:
    from blocks.model_config import EvergreenModel, switchable_paths, switched_off

    offered = EvergreenModel.model_json_schema()["properties"]["switched_off"]["items"]["enum"]
    assert offered == switchable_paths(ModelConfig)
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    for path in offered:  # each switched off alone (model_copy: no cross-field validation)
        section, key = path.split(".")
        off = cfg.model_copy(update={section: getattr(cfg, section).model_copy(update={key: None})})
        assert switched_off(off) == [path]


def test_a_setting_switched_off_stays_off_after_a_save_in_the_ui() -> None:
    """The form leaves nulls out of what it saves: `cooldown_hours: null` (no cooldown) must
    not come back as the default 168 h."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentUpdate

    from blocks.model_config import EvergreenModel

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    cfg = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"cooldown_hours": None})})
    assert type(cfg.retrain).model_fields["cooldown_hours"].default is not None  # the case that matters
    EvergreenModel.register_type_and_schema()
    EvergreenModel.from_config(cfg).save("ui-switched-off", overwrite=True)
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name("ui-switched-off", "evergreen-model")
        assert doc.data["switched_off"] == ["retrain.cooldown_hours"]
        schema = doc.block_schema.fields
        saved = as_the_ui_saves(doc.data, schema, schema.get("definitions") or {})
        assert "cooldown_hours" not in saved["config"]["retrain"]  # what the form sends
        client.update_block_document(doc.id, BlockDocumentUpdate(data=saved, merge_existing_data=False))
    loaded = EvergreenModel.load("ui-switched-off").to_config()
    assert loaded.retrain.cooldown_hours is None
    assert loaded == cfg
