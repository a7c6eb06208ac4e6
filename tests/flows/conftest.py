"""Flow tests: a Prefect test-harness server for the session, a temporary MLflow store and
a generated stream per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from evergreen.config import ModelConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def prefect_server(prefect_harness):  # noqa: ANN001 - the session's harness (tests/conftest.py)
    yield


@pytest.fixture(autouse=True)
def no_outbound_connections():
    """Every flow test runs with non-loopback connections refused; none may be attempted
    (telemetry of Prefect, MLflow, GX and NannyML included)."""
    from tests.egress import refuse_outbound

    with refuse_outbound() as attempts:
        yield
    assert attempts == [], f"outbound connection attempts: {attempts}"


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    """The demo config pointed at a temporary data root and MLflow store."""
    tmp = tmp_path_factory.mktemp("evergreen")
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    return cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"root": str(tmp / "data")}),
            "mlflow": cfg.mlflow.model_copy(
                update={
                    "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                    "artifact_root": str(tmp / "mlartifacts"),
                }
            ),
        }
    )


def model_for(cfg: ModelConfig, name: str, root: str, label_delay: int | None = None) -> ModelConfig:
    """A copy of the config for its own model name and data root (so events, MLflow runs and
    registry versions of different tests don't mix)."""
    data = {"root": root} | ({} if label_delay is None else {"label_delay_days": label_delay})
    return cfg.model_copy(
        update={
            "name": name,
            "data": cfg.data.model_copy(update=data),
            "mlflow": cfg.mlflow.model_copy(update={"model_name": name}),
        }
    )
