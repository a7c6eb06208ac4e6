"""MLflow tracking plumbing: where runs go, and links people can open.

mlflow is imported inside the functions: it costs ~6 s and the CLI and scoring service
must not pay it unless they log something.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evergreen.config import ConfigError, MlflowConfig


def connect(cfg: MlflowConfig) -> str:
    """Point this process's MLflow client at the configured tracking server / store.

    Returns the tracking URI as clients should use it (relative SQLite paths made absolute).
    """
    import mlflow

    uri = cfg.resolved_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if cfg.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = cfg.username
    if cfg.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = cfg.password.get_secret_value()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def check_registered_model(cfg: MlflowConfig) -> None:
    """ConfigError naming `mlflow.model_name` when the registry holds no model of that name
    (a flow that acts on an existing model must not create one or quietly do nothing)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = connect(cfg)
    client = MlflowClient(uri, uri)
    try:
        client.get_registered_model(cfg.model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise ConfigError(
            f"invalid Evergreen config:\n  mlflow.model_name: no registered model "
            f"{cfg.model_name!r} in the registry at {uri} (it has {names}); fix the name, "
            "or run a retrain first to register the model"
        ) from None


def ensure_experiment(cfg: MlflowConfig, name: str) -> str:
    """Id of the named experiment, created with an explicit artifact location if missing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = f"{cfg.resolved_artifact_root().rstrip('/')}/{name}"
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        # Another process created it between our read and our write.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def run_url(cfg: MlflowConfig, experiment_id: str, run_id: str) -> str:
    """Link to a run in the MLflow UI."""
    uri = cfg.resolved_tracking_uri()
    base = uri if uri.startswith(("http://", "https://")) else cfg.ui_url
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def safe_metric_name(name: str) -> str:
    """MLflow metric keys allow alphanumerics, _ - . space / only."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Log the finite numeric values of a mapping to the active run."""
    import math

    import mlflow

    clean = {
        safe_metric_name(k): float(v)
        for k, v in metrics.items()
        if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
    }
    if clean:
        mlflow.log_metrics(clean, step=step)


# Enough rows, spread over the whole frame, for MLflow to see every column's type.
SCHEMA_SAMPLE_ROWS = 10_000


def pandas_dataset(frame: Any, source: str, targets: str | None, name: str, digest: str) -> Any:
    """`mlflow.data.from_pandas`, with the column schema inferred from a sample.

    MLflow infers a dataset's schema with a Python loop over every cell (~37 s per million
    rows here, most of a retrain's logging); the schema depends on the column types, which
    a few thousand rows spread over the frame show as well (the window has been validated:
    one type per column). The profile (rows, elements) and the digest are of the whole frame.
    """
    import mlflow
    from mlflow.models import infer_signature

    dataset = mlflow.data.from_pandas(frame, source=source, targets=targets, name=name, digest=digest)
    step = max(1, len(frame) // SCHEMA_SAMPLE_ROWS)
    # PandasDataset.schema is a functools.cached_property: fill its cache with the sample's.
    dataset.__dict__["schema"] = infer_signature(frame.iloc[::step]).inputs
    return dataset
