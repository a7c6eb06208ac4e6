"""The fan-out's plan (one run per registered model, none for a model whose previous run is
unfinished) and the model label runs are named and tagged by, read from a `config` parameter
of any form without the server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blocks.model_config import model_label
from evergreen.config import load_config
from tasks.fleet import FanOutResult, plan_fan_out

ROOT = Path(__file__).resolve().parents[2]


def test_one_run_per_model_except_one_still_running() -> None:
    plan = plan_fan_out(["car-loan", "churn", "fraud"], {"churn": "run-1"}, "monitor")
    assert plan.start == ["car-loan", "fraud"]
    assert plan.skip == {"churn": "its previous monitor run has not finished (flow run run-1)"}


def test_a_yaml_config_is_planned_under_its_models_label(tmp_path: Path) -> None:
    path = tmp_path / "any-file-name.yaml"
    path.write_text(yaml.safe_dump({"name": "Churn_V2"}))
    assert plan_fan_out([str(path)], {"churn-v2": "r"}, "retrain").start == []
    assert plan_fan_out([str(path)], {}, "retrain").start == [str(path)]


def test_the_result_message_names_every_model() -> None:
    result = FanOutResult("retrain/retrain", started={"a": "retrain/a/schedule (1)", "b": "x"}, skipped={"c": "busy"}, failed={"d": "API down"})
    assert result.message == "started retrain for 2 model(s): a, b; skipped c: busy; could not start d: API down"
    assert FanOutResult("monitor/monitor").message == "started monitor for 0 model(s)"


@pytest.mark.parametrize(
    "ref,label",
    [
        (None, None),
        ("car-loan", "car-loan"),
        ({"name": "Fraud.Model"}, "fraud-model"),
        (str(ROOT / "configs" / "demo.yaml"), "car-loan"),
        ("/no/such/file.yaml", "file"),
    ],
)
def test_model_label_of_every_config_form(ref: object, label: str | None) -> None:
    assert model_label(ref) == label  # type: ignore[arg-type]


def test_model_label_of_a_config_object() -> None:
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert model_label(cfg.model_copy(update={"name": "My_Model"})) == "my-model"
