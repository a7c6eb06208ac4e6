"""Bad configuration fails when it is loaded, before any work, with a message naming the
field: unknown keys and thresholds out of range when the YAML (or block) is parsed; columns
the data does not have when a flow starts (only the reference tables' schemas are read);
a model that is not there (no such block, no such registered model) when a flow resolves it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from evergreen.config import ConfigError, ModelConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


@pytest.fixture(autouse=True)
def no_outbound_connections():
    """Non-loopback connections are refused and counted; none may be attempted."""
    from tests.egress import refuse_outbound

    with refuse_outbound() as attempts:
        yield
    assert attempts == [], f"outbound connection attempts: {attempts}"


def _raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


@pytest.mark.parametrize(
    ("section", "key", "value", "field"),
    [
        ("monitoring", "drifted_feature_share", 1.5, "monitoring.drifted_feature_share"),
        ("monitoring", "performance_drop", -0.1, "monitoring.performance_drop"),
        ("gate", "margin", 2.0, "gate.margin"),
        ("gate", "confidence", 0.4, "gate.confidence"),
        ("gate", "min_rows", 0, "gate.min_rows"),
        ("canary", "traffic_share", 1.2, "canary.traffic_share"),
        ("retrain", "cooldown_hours", -1, "retrain.cooldown_hours"),
        ("data", "max_batch_rows", 0, "data.max_batch_rows"),
        ("data", "max_unknown_label_fraction", 3, "data.max_unknown_label_fraction"),
        ("training", "validation_fraction", 0.95, "training.validation_fraction"),
    ],
)
def test_threshold_out_of_range_names_the_field(section: str, key: str, value, field: str) -> None:  # noqa: ANN001
    raw = _raw()
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda r: r["monitoring"].update(drift_threshold=0.2), "monitoring.drift_threshold"),
        (lambda r: r.update(colums=r["columns"]), "colums"),
        (lambda r: r["retrain"].update(hysteresis_k=3, hysteresis_n=2), "retrain.hysteresis_k"),
        (lambda r: r["columns"].update(slices=["zip_code"]), "columns.slices"),
    ],
)
def test_unknown_or_inconsistent_key_names_the_field(edit, field: str) -> None:  # noqa: ANN001
    raw = _raw()
    edit(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert field in str(err.value)


def test_cli_refuses_a_bad_config_with_the_field(tmp_path: Path) -> None:
    raw = _raw()
    raw["monitoring"]["drifted_feature_share"] = 1.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    exe = Path(sys.executable).parent / "evergreen"
    out = subprocess.run(
        [str(exe), "monitor", "--config", str(bad)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "monitoring.drifted_feature_share" in out.stderr


# ----------------------------------------------------------------------------- in the flows


def _config(tmp_path: Path, name: str, **columns) -> ModelConfig:  # noqa: ANN003
    """The demo config on its own data root and MLflow store, with a reference table that
    has the demo's columns (only its schema matters to the load-time check)."""
    cfg = load_config(DEMO)
    cfg = cfg.model_copy(
        update={
            "name": name,
            "columns": cfg.columns.model_copy(update=columns),
            "data": cfg.data.model_copy(update={"root": str(tmp_path / "data")}),
            "mlflow": cfg.mlflow.model_copy(
                update={
                    "model_name": name,
                    "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                    "artifact_root": str(tmp_path / "mlartifacts"),
                }
            ),
        }
    )
    good = load_config(DEMO).columns
    row = {good.id: [1], good.timestamp: [pd.Timestamp("2019-01-01")], good.target: [1],
           good.prediction: [1], good.probability: [0.9], **{f: [1.0] for f in good.features}}
    for table in ("monitor_reference", "training_reference"):
        path = Path(cfg.data.path(table))
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(row).to_parquet(path)
    return cfg


def _failed_with(state, *needles: str) -> str:  # noqa: ANN001
    assert state.is_failed(), state
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ConfigError), repr(error)
    for needle in needles:
        assert needle in str(error), (needle, str(error))
    return str(error)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_unknown_column_fails_the_flows_at_load_naming_the_field(tmp_path: Path) -> None:
    from flows.monitor import monitor
    from flows.retrain import retrain

    features = ["car_valu", *load_config(DEMO).columns.features[1:]]
    cfg = _config(tmp_path, "loan-bad-column", features=features)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    _failed_with(monitor(config=cfg, return_state=True), "columns.features[0]", "'car_valu'", "did you mean 'car_value'")
    message = _failed_with(retrain(config=cfg, return_state=True), "columns.features[0]")
    assert "monitor_reference" in message
    # Nothing was started: no ledger, no snapshot, no MLflow store.
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    cfg = _config(tmp_path / "target", "loan-bad-target", target="repayed")
    _failed_with(retrain(config=cfg, return_state=True), "columns.target", "did you mean 'repaid'")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_missing_block_fails_naming_it() -> None:
    from flows.monitor import monitor

    _failed_with(monitor(config="no-such-model", return_state=True), "'no-such-model'", "evergreen register")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_model_not_in_registry_fails_promote_and_rollback_naming_the_field(tmp_path: Path) -> None:
    import mlflow

    from flows.promote import promote
    from flows.rollback import rollback

    cfg = _config(tmp_path, "loan-not-registered")
    _failed_with(rollback(config=cfg, return_state=True), "mlflow.model_name", "'loan-not-registered'")
    _failed_with(promote(config=cfg, return_state=True), "mlflow.model_name")
    client = mlflow.MlflowClient(cfg.mlflow.resolved_tracking_uri(), cfg.mlflow.resolved_tracking_uri())
    assert client.search_registered_models() == []  # nothing was created under the wrong name
