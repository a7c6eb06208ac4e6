"""CLI start-up, configuration errors, the Prefect block and telemetry defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evergreen.config import ConfigError, load_config, parse_config
from evergreen.telemetry import TELEMETRY_OFF, disable_telemetry

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"
HEAVY = ("prefect", "mlflow", "nannyml", "great_expectations", "xgboost", "pandas", "fastapi")


def test_cli_imports_nothing_heavy_at_start() -> None:
    code = f"import sys, evergreen.apps.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_help_answers_fast_and_lists_the_commands() -> None:
    exe = Path(sys.executable).parent / "evergreen"
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
        best = min(best, time.perf_counter() - t)
    assert best < 1.5, f"evergreen --help took {best:.2f} s"
    for command in ("demo", "bench", "stream", "monitor", "retrain", "promote", "canary-review", "rollback", "history", "serve"):
        assert command in out


def test_demo_config_loads() -> None:
    cfg = load_config(DEMO)
    assert cfg.resource_id == "evergreen.model.car-loan"
    assert set(cfg.columns.categorical) <= set(cfg.columns.features)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda r: r["columns"].update(categorical=["not_a_feature"]), "columns"),
        (lambda r: r["monitoring"].update(drifted_feature_share=1.5), "monitoring.drifted_feature_share"),
        (lambda r: r["mlflow"].pop("model_name"), "mlflow.model_name"),
        (lambda r: r.update(metric="mae"), "metric"),
        (lambda r: r["canary"].update(traffic_share=-0.1), "canary.traffic_share"),
        (lambda r: r.update(unknown_field=1), "unknown_field"),
        (lambda r: r["monitoring"].update(continuous_methods=["jensen_shanon"]), "monitoring.continuous_methods"),
        (lambda r: r["monitoring"].update(categorical_methods=["kolmogorov_smirnov"]), "monitoring.categorical_methods"),
    ],
)
def test_bad_config_names_the_field(edit, field: str) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    edit(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert field in str(err.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_block_round_trips_the_config() -> None:
    from blocks.model_config import EvergreenModel

    cfg = load_config(DEMO)
    raw = yaml.safe_load(DEMO.read_text())
    raw["notifications"] = {"webhook_url": "http://127.0.0.1:9/hook"}
    cfg = parse_config(raw)
    block = EvergreenModel.from_config(cfg)
    back = block.to_config()
    assert back == cfg
    assert back.notifications.webhook_url.get_secret_value() == "http://127.0.0.1:9/hook"


def test_block_holds_the_whole_config_with_its_secrets_masked() -> None:
    from blocks.model_config import EvergreenModel

    schema = EvergreenModel.model_json_schema()
    # Every ModelConfig field, with no copy here; beside it the settings switched off (null),
    # which the UI's form would otherwise drop on Save.
    assert set(schema["properties"]) == {"config", "switched_off"}
    assert set(schema["secret_fields"]) == {"config.mlflow.password", "config.notifications.webhook_url"}
    # Blocks saved by earlier versions (sections at the top level) still load.
    raw = yaml.safe_load(DEMO.read_text())
    raw["mlflow"]["password"] = "pw"
    assert EvergreenModel.model_validate(raw).to_config() == parse_config(raw)


def test_telemetry_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in TELEMETRY_OFF:
        monkeypatch.delenv(key, raising=False)
    disable_telemetry()
    assert os.environ["DO_NOT_TRACK"] == "true"  # MLflow ignores "1"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "NML_DISABLE_USAGE_LOGGING" in os.environ


def test_prefect_toml_turns_analytics_off() -> None:
    import tomllib

    settings = tomllib.loads((ROOT / "prefect.toml").read_text())
    assert settings["server"]["analytics_enabled"] is False
    assert settings["server"]["ephemeral"]["startup_timeout_seconds"] >= 120


def test_mlflow_and_nannyml_see_telemetry_off() -> None:
    code = (
        "from evergreen.telemetry import disable_telemetry; disable_telemetry()\n"
        "from mlflow.telemetry.utils import is_telemetry_disabled\n"
        "import os\n"
        "print(is_telemetry_disabled(), 'NML_DISABLE_USAGE_LOGGING' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_OFF}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
