"""The configuration of a monitored model as a Prefect block (editable in the Prefect UI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, get_args

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, ValidationError, model_validator

from evergreen.config import ConfigError, ModelConfig, config_error, load_config

# Human titles of the config's sections in the Prefect UI (the schema's are class names).
SECTION_TITLES: dict[str, tuple[str, str]] = {
    "ModelConfig": ("Model configuration", "One monitored model: the sections of its YAML config."),
    "ColumnRoles": ("Columns", "The roles of the data's columns: id, timestamp, target, the serving model's outputs, features."),
    "DataConfig": ("Data locations", "Where the model's data lives; relative paths resolve against root."),
    "MonitoringConfig": ("Monitoring thresholds", "Drift and performance thresholds; the monitor flow decides on them."),
    "RetrainPolicyConfig": ("Retrain policy", "When a retrain may start: window, cooldown, hysteresis, budget, alert episodes."),
    "TrainingConfig": ("Training", "XGBoost training settings (seeded)."),
    "GateConfig": ("Promotion gate", "What a challenger must show against the champion to become canary."),
    "CanaryConfig": ("Canary", "The canary's traffic share, evidence and window before the review decides."),
    "ColumnLimits": ("Column limits", "Impossible values of one feature (a batch holding one is rejected)."),
    "ValidationConfig": ("Data validation", "Integrity rules that reject a batch; distribution checks that only warn."),
    "MlflowConfig": ("MLflow registry and tracking", "Where the model's versions, aliases and runs live."),
    "NotificationConfig": ("Notifications", "Where the loop's events are sent (webhook)."),
}
FIELD_TITLES = {
    "name": "Model name",
    "problem_type": "Problem type",
    "metric": "Metric",
    "columns": "Columns",
    "data": "Data locations",
    "monitoring": "Monitoring thresholds",
    "retrain": "Retrain policy",
    "training": "Training",
    "gate": "Promotion gate",
    "canary": "Canary",
    "validation": "Data validation",
    "mlflow": "MLflow registry and tracking",
    "notifications": "Notifications",
}


def _move_default_to_description(prop: dict[str, Any]) -> None:
    if "default" not in prop:
        return
    default = prop.pop("default")
    if default is None or default == [] or default == {}:
        return
    shown = json.dumps(default) if isinstance(default, (list, dict, bool)) else str(default)
    said = prop.get("description") or ""
    if "default:" not in said:
        prop["description"] = f"{said} (default: {shown})".strip()



def switchable_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every path `switched_off` can hold: the fields that may be None and default to
    something else, through the sections (`retrain.cooldown_hours`, ...)."""
    paths: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        kinds = (field.annotation, *get_args(field.annotation))
        nullable = type(None) in kinds
        if nullable and not field.is_required() and field.get_default(call_default_factory=True) is not None:
            paths.append(path)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                paths += switchable_paths(kind, path + ".")
    return paths


class EvergreenModel(Block):
    """One monitored model: columns, data locations, thresholds, retrain policy, gate, canary
    and registry. Flows take the name of a saved block of this type (or a YAML path)."""

    _block_type_name: ClassVar[str] = "Evergreen Model"
    _block_type_slug: ClassVar[str] = "evergreen-model"
    _description: ClassVar[str] = "Configuration of a model monitored and retrained by Evergreen."

    # The whole typed config in one field: a field added to ModelConfig is in the block (its
    # schema, the UI form, validation) with no edit here. SecretStr fields inside it stay
    # secret: Prefect finds them in nested models, stores them encrypted, masks them in the
    # UI and API reads and hands them back on `load`.
    config: ModelConfig = Field(
        description="The model's configuration, with the sections of a YAML config "
        "(columns, data, monitoring, retrain, training, gate, canary, validation, mlflow, notifications)."
    )

    # The Prefect UI's form leaves every null out of what it saves, so a setting the user
    # switched off (`cooldown_hours: null` where the default is 168) would come back on at the
    # first Save. The paths of such settings are kept here, a list the form keeps, and a
    # path whose value the saved document lacks reads as null again.
    switched_off: list[str] = Field(
        default_factory=list,
        title="Settings switched off",
        description="Settings set to null (off) in the config, as section.field paths, e.g. "
        "retrain.cooldown_hours: left empty in this form, they stay off instead of taking their default.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_sections_at_top_level(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        # Blocks saved by earlier versions held the config's sections as top-level fields.
        if isinstance(data, dict) and "config" not in data and "name" in data:
            return {"config": {k: v for k, v in data.items() if k in ModelConfig.model_fields}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _restore_switched_off(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            return data
        paths = data.get("switched_off") or []
        config = dict(data["config"])
        for path in paths:
            *sections, key = str(path).split(".")
            node = config
            for section in sections:
                child = node.get(section)
                if child is None:
                    child = {}
                elif not isinstance(child, dict):
                    break
                node[section] = child = dict(child)
                node = child
            else:
                node.setdefault(key, None)
        return {**data, "config": config}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The block's schema as the Prefect UI builds its form from it: sections with human
        titles, and no `default`s (each default is named in the field's description instead).

        The UI fills a field that has a default with it when the stored value is missing, and
        leaves out of what it saves every value equal to its default: one unchanged Save
        dropped the user's explicit values (an explicit `null` where the default is a number
        came back as that number). Without defaults in the schema the form shows and saves
        the stored values as they are, and a value left empty still gets the config's
        default when the block is loaded."""
        schema = super().model_json_schema(*args, **kwargs)
        definitions = schema.get("definitions") or {}
        for name, definition in definitions.items():
            if name in SECTION_TITLES:
                definition["title"], definition["description"] = SECTION_TITLES[name]
            for prop in (definition.get("properties") or {}).values():
                _move_default_to_description(prop)
        config = schema.get("properties", {}).get("config")
        if config is not None:
            config["title"] = "Model configuration"
        # A closed list: the default UI then offers it as a multi-select, not a JSON editor.
        off = schema.get("properties", {}).get("switched_off")
        if off is not None:
            off["items"] = {"type": "string", "enum": switchable_paths(ModelConfig)}
        model = definitions.get("ModelConfig", {}).get("properties", {})
        for key, prop in model.items():
            if key in FIELD_TITLES:
                prop["title"] = FIELD_TITLES[key]
        return schema

    def to_config(self) -> ModelConfig:
        """The plain typed config (validated when the block was loaded or built, so block
        edits in the UI are checked)."""
        return self.config

    @classmethod
    def from_config(cls, config: ModelConfig) -> EvergreenModel:
        return cls(config=config, switched_off=switched_off(config))

    @classmethod
    def from_yaml(cls, path: str | Path) -> EvergreenModel:
        return cls.from_config(load_config(path))


def switched_off(model: BaseModel, prefix: str = "") -> list[str]:
    """Paths of the fields set to None whose default is not None (settings switched off)."""
    paths: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            paths += switched_off(value, path + ".")
        elif value is None and not field.is_required() and field.get_default(call_default_factory=True) is not None:
            paths.append(path)
    return paths


def block_document_name(model_name: str) -> str:
    """Block document names allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in model_name.lower())


NO_MODEL = (
    "no model given: pass the flow's `config` parameter, the name of a saved evergreen-model block "
    "(`evergreen register --config FILE` saves one; `prefect block ls` lists them) or the path of a YAML config"
)


def is_yaml_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or Path(ref).is_file()


def model_label(ref: str | ModelConfig | dict[str, Any] | None) -> str | None:
    """The model a flow's `config` parameter names, as its block name (`car-loan`), read
    without the server: the block name itself, or the `name` of a config or YAML file. None
    when no model is given. Names and tags flow runs by model."""
    if ref is None:
        return None
    if isinstance(ref, ModelConfig):
        return block_document_name(ref.name)
    if isinstance(ref, dict):
        return block_document_name(str(ref.get("name") or "unnamed"))
    if is_yaml_path(ref):
        import yaml

        try:
            name = (yaml.safe_load(Path(ref).read_text(encoding="utf-8")) or {}).get("name")
        except (OSError, yaml.YAMLError, AttributeError):
            name = None
        return block_document_name(str(name or Path(ref).stem))
    return ref


def resolve_config(ref: str | ModelConfig | None) -> ModelConfig:
    """A config from a YAML path, or from the saved `evergreen-model` block of that name."""
    if isinstance(ref, ModelConfig):
        return ref
    if ref is None or not ref.strip():
        raise ConfigError(NO_MODEL)
    if is_yaml_path(ref):
        return load_config(ref)
    try:
        block = EvergreenModel.load(ref)
    except RuntimeError as exc:  # a block edited into an invalid state
        # Prefect's `load` wraps the pydantic error in a RuntimeError that names no field.
        if not isinstance(exc.__cause__, ValidationError):
            raise
        raise config_error(exc.__cause__, f" in block evergreen-model/{ref}") from None
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise ConfigError(
            f"config {ref!r}: no YAML file of that name and no saved evergreen-model block named "
            f"{ref!r} on the Prefect server; save one with `evergreen register --config FILE` or "
            "pass the path of a YAML config"
        ) from None
    return block.to_config()
