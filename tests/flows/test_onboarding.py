"""A new user's own model and data, through the CLI only: `init` -> `bootstrap` -> `backtest`
-> `monitor` -> `retrain` -> `promote` -> `serve`, on streams Evergreen never generated
(NannyML's titanic, regression, multiclass and data-quality tables cut into batch files and
delayed label files the way a user's pipeline would write them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import flows.bootstrap  # noqa: F401 - Prefect's log handlers bind to the session's stderr, not the CliRunner's
from evergreen.apps.cli import app
from evergreen.config import load_config
from tests import user_streams

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    name: str
    write: Any
    problem_type: str
    id_column: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    scored_by_champion: bool = False  # the batches carry no serving predictions
    features_left_out: tuple[str, ...] = ()


CASES = [
    Case("titanic", user_streams.titanic, "binary_classification", "PassengerId",
         {"rows_per_batch": 60}, scored_by_champion=True, features_left_out=("Name", "Ticket", "Cabin")),
    Case("used-cars", user_streams.regression, "regression", "id",
         {"every": pd.Timedelta(days=1), "max_batches": 8}),
    Case("cards", user_streams.multiclass, "multiclass_classification", "id",
         {"every": pd.Timedelta(days=7), "max_batches": 8}),
    Case("car-loan-dq", user_streams.car_loan_dq, "binary_classification", "id",
         {"every": pd.Timedelta(days=30), "max_batches": 8, "label_delay_batches": 1}),  # monthly
]


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_new_user_gets_from_their_data_to_a_served_monitored_model(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evergreen.adapters import registry, tracking

    monkeypatch.chdir(tmp_path)
    stream = case.write(tmp_path / "data", **case.kwargs)
    since = datetime.now(UTC) - timedelta(seconds=5)

    # 1. init: the config from the data, every guess printed
    r = _cli("init", str(stream.reference), "--target", stream.target, "--batches", str(stream.batches),
             "--labels", str(stream.labels), "--name", case.name, "--out", "model.yaml")
    assert r.exit_code == 0, r.output
    assert "wrote model.yaml" in r.output and "columns.features:" in r.output
    cfg = load_config(tmp_path / "model.yaml")
    assert cfg.problem_type == case.problem_type and cfg.columns.id == case.id_column
    assert cfg.columns.target == stream.target and cfg.columns.timestamp == "timestamp"
    for left_out in case.features_left_out:
        assert left_out not in cfg.columns.features
    assert cfg.data.path("batches") == str(stream.batches)

    # 2. bootstrap: the first champion from the reference; nothing demo-only is needed
    r = _cli("bootstrap", "--config", "model.yaml", "--out", "boot.json")
    assert r.exit_code == 0, r.output
    boot = _json(tmp_path / "boot.json")
    assert boot["status"] == "registered" and boot["version"] == "1" and boot["bootstrap"]
    tracking.connect(cfg.mlflow)
    assert registry.version_by_alias(cfg.mlflow.model_name, registry.CHAMPION).version == "1"
    r = _cli("bootstrap", "--config", "model.yaml")
    assert r.exit_code == 0 and "already has champion v1" in r.output

    # 3. backtest on the user's stream (the default policy alone, to keep it short); it
    #    replays in memory and leaves the user's files as they were
    before = _digests(tmp_path / "data")
    r = _cli("backtest", "--config", "model.yaml", "--out", "bt.json", "--policy", "default", "--only")
    assert r.exit_code == 0, r.output
    report = _json(tmp_path / "bt.json")
    policy = report["policies"]["default"]
    assert [c["chunk"] for c in policy["chunks"]] == stream.batch_days
    assert any(c["realized_metric"] is not None for c in policy["chunks"]), policy["chunks"][:2]
    assert policy["mean_metric"] is not None
    assert _digests(tmp_path / "data") == before

    # 4. monitor every batch: none locked out, each estimated (and scored by the champion
    #    when the batches carry no predictions)
    r = _cli("monitor", "--config", "model.yaml", "--out", "monitor.json")
    results = _json(tmp_path / "monitor.json")["batches"]
    assert [b["batch_id"] for b in results] == stream.batch_days
    valid = [b for b in results if b["valid"]]
    assert valid, [b["message"] for b in results]
    for b in valid:
        assert b["estimated_metric"] is not None, b
        assert (b["scored_by"] == "1") is case.scored_by_champion, b
    for b in results:
        if not b["valid"]:
            assert b["failures"] and all(f.get("column") or f.get("expectation_type") for f in b["failures"]), b
    assert r.exit_code == (0 if len(valid) == len(results) else 1), r.output

    # 5. retrain on the labelled batches, 6. the gate against the champion
    r = _cli("retrain", "--config", "model.yaml", "--out", "retrain.json")
    assert r.exit_code == 0, r.output
    retrained = _json(tmp_path / "retrain.json")
    assert retrained["status"] == "registered" and retrained["version"] == "2", retrained
    assert retrained["sources"], retrained  # trained on production batches, not the reference alone
    r = _cli("promote", "--config", "model.yaml", "--out", "promote.json")
    gate = _json(tmp_path / "promote.json")
    assert gate["decision"] in ("passed", "failed") and gate["reasons"], gate
    v2 = registry.get_version(cfg.mlflow.model_name, "2")
    assert v2.status == ("canary" if gate["decision"] == "passed" else "rejected")
    assert r.exit_code == (0 if gate["decision"] == "passed" else 1)

    # 7. serve: the champion (and canary) answer a batch of the user's rows
    _serve_a_batch(cfg, stream)

    # the loop's events went out for this model
    from tests.support import read_model_events

    registered = read_model_events(cfg.name, ["evergreen.model.registered"], since, expect=2)
    assert {e.payload["version"] for e in registered} >= {"1", "2"}


def _digests(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _serve_a_batch(cfg, stream) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from evergreen.adapters import io
    from evergreen.apps.serving.app import create_app

    batch = io.read_table(str(stream.batches / f"{stream.batch_days[-1]}.parquet"))
    rows = batch[[cfg.columns.id, cfg.columns.timestamp, *cfg.columns.features]].head(20)
    rows[cfg.columns.timestamp] = rows[cfg.columns.timestamp].astype(str)
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    with TestClient(create_app(cfg, refresh_seconds=0.2)) as client:
        for _ in range(100):
            answer = client.post("/invocations", json=body)
            if answer.status_code != 503:
                break
            import time

            time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert len(out["predictions"]) == len(rows)
    assert set(out["versions"]) <= {"1", "2"}
