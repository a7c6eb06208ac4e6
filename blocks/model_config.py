"""The configuration of a monitored model as a Prefect block (editable in the Prefect UI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, ValidationError

from evergreen.config import (
    CanaryConfig,
    ColumnRoles,
    ConfigError,
    DataConfig,
    GateConfig,
    MlflowConfig,
    ModelConfig,
    MonitoringConfig,
    NotificationConfig,
    ProblemType,
    RetrainPolicyConfig,
    TrainingConfig,
    config_error,
    load_config,
    parse_config,
)


class EvergreenModel(Block):
    """One monitored model: columns, data locations, thresholds, retrain policy, gate, canary
    and registry. Flows take the name of a saved block of this type (or a YAML path)."""

    _block_type_name: ClassVar[str] = "Evergreen Model"
    _block_type_slug: ClassVar[str] = "evergreen-model"
    _description: ClassVar[str] = "Configuration of a model monitored and retrained by Evergreen."

    name: str = Field(description="Model name; also the MLflow registered model and event resource.")
    problem_type: ProblemType = "binary_classification"
    metric: str = "roc_auc"
    columns: ColumnRoles
    data: DataConfig = Field(default_factory=DataConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    retrain: RetrainPolicyConfig = Field(default_factory=RetrainPolicyConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    mlflow: MlflowConfig
    notifications: NotificationConfig = Field(default_factory=NotificationConfig)

    def to_config(self) -> ModelConfig:
        """The plain typed config (validated again, so block edits in the UI are checked)."""
        fields = {name: getattr(self, name) for name in ModelConfig.model_fields}
        return parse_config(
            {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in fields.items()}
            | _secrets(fields)
        )

    @classmethod
    def from_config(cls, config: ModelConfig) -> EvergreenModel:
        return cls(**{name: getattr(config, name) for name in ModelConfig.model_fields})

    @classmethod
    def from_yaml(cls, path: str | Path) -> EvergreenModel:
        return cls.from_config(load_config(path))


def _secrets(fields: dict[str, Any]) -> dict[str, Any]:
    # model_dump() masks SecretStr values; keep the secret objects themselves.
    out: dict[str, Any] = {}
    mlflow = fields["mlflow"].model_dump()
    mlflow["password"] = fields["mlflow"].password
    out["mlflow"] = mlflow
    out["notifications"] = {"webhook_url": fields["notifications"].webhook_url}
    return out


def block_document_name(model_name: str) -> str:
    """Block document names allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in model_name.lower())


def resolve_config(ref: str | ModelConfig) -> ModelConfig:
    """A config from a YAML path, or from the saved `evergreen-model` block of that name."""
    if isinstance(ref, ModelConfig):
        return ref
    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        return load_config(ref)
    try:
        block = EvergreenModel.load(ref)
    except ValidationError as exc:  # a block edited into an invalid state
        raise config_error(exc, f" in block evergreen-model/{ref}") from None
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise ConfigError(
            f"config {ref!r}: no YAML file of that name and no saved evergreen-model block named "
            f"{ref!r} on the Prefect server; save one with `evergreen register --config FILE` or "
            "pass the path of a YAML config"
        ) from None
    return block.to_config()
