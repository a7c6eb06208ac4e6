"""The backtest on a small generated stream: real GX, NannyML, XGBoost, gate and a temporary
MLflow store; figures checked, not just shapes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from evergreen.apps.backtest import format_table, plot, run_backtest
from evergreen.config import ModelConfig

pytestmark = pytest.mark.slow

CHUNKS, ROWS, DRIFT_AT, DELAY = 8, 400, 4, 1


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> ModelConfig:
    from tests.support import write_toy_drift_stream
    from tests.unit.conftest import _config

    root = tmp_path_factory.mktemp("stream")
    base = _config()
    cfg = base.model_copy(
        update={
            "data": base.data.model_copy(
                update={"root": str(root), "rows_per_batch": ROWS, "label_delay_days": DELAY}
            ),
            "mlflow": base.mlflow.model_copy(update={"model_name": "toy"}),
        }
    )
    write_toy_drift_stream(cfg, str(root), CHUNKS, ROWS, DRIFT_AT)
    return cfg


@pytest.fixture(scope="module")
def result(stream: ModelConfig, tmp_path_factory):
    return run_backtest(stream, ["default"], log=lambda _: None)


def test_report_holds_every_policy_and_chunk(result) -> None:
    report = json.loads(json.dumps(result.to_dict()))
    assert set(report["policies"]) == {"default", "never", "always", "schedule:7"}
    for body in report["policies"].values():
        assert {
            "mean_metric",
            "worst_metric",
            "retrains",
            "promotions",
            "rollbacks",
            "chunks",
            "wall_seconds",
        } <= set(body)
        assert len(body["chunks"]) == CHUNKS
        chunk = body["chunks"][0]
        assert {
            "chunk",
            "start",
            "end",
            "rows",
            "serving_version",
            "valid",
            "drifted_features",
            "estimated_metric",
            "realized_metric",
            "decision",
            "reason",
        } <= set(chunk)
        assert chunk["rows"] == ROWS and chunk["start"] < chunk["end"]
    assert (
        report["stream"]["chunks"] == CHUNKS and report["stream"]["drift_start_index"] == DRIFT_AT
    )
    table = format_table(result)
    assert all(name in table for name in report["policies"])


def test_never_keeps_the_first_model_and_always_retrains_every_chunk(result) -> None:
    never, always = result.policies["never"], result.policies["always"]
    assert never.retrains == never.promotions == 0
    assert {c.serving_version for c in never.chunks} == {"1"}
    # Issue 16 (changed on purpose): on the first chunk no label has arrived yet (labels come a
    # day late), so its window is the bootstrap's data and the retrain is skipped, not registered
    # a second time; every later chunk brings new labels and retrains.
    assert [c.decision for c in always.chunks[:DELAY]] == ["same_data"] * DELAY
    # Issue 17 (changed on purpose): "always" does not replace a canary under review with a new
    # challenger (it would never promote anything); every other later chunk retrains.
    later = always.chunks[DELAY:]
    assert all(c.decision in {"retrain", "candidate_pending"} for c in later), [c.decision for c in later]
    assert all(c.retrained_version for c in later if c.decision == "retrain")
    assert all("under review" in c.reason for c in later if c.decision == "candidate_pending")
    assert always.retrains == sum(c.decision == "retrain" for c in later) >= CHUNKS // 2
    metrics = [c.realized_metric for c in never.chunks]
    assert never.mean_metric == pytest.approx(np.mean(metrics))
    assert never.worst_metric == min(metrics)


def test_the_injected_shift_costs_the_first_model(result) -> None:
    never = result.policies["never"].chunks
    before = np.mean([c.realized_metric for c in never[:DRIFT_AT]])
    after = np.mean([c.realized_metric for c in never[DRIFT_AT:]])
    assert before - after > 0.02, (before, after)


def test_default_policy_detects_the_shift_and_retrains(result, stream: ModelConfig) -> None:
    default = result.policies["default"].chunks
    assert not any(c.alert for c in default[:DRIFT_AT]), [c.reason for c in default[:DRIFT_AT]]
    first = next(c for c in default[DRIFT_AT:] if c.alert)
    assert first.index - DRIFT_AT <= 2
    assert "feature_drift" in first.fired and "x1" in first.drifted_features
    assert "evergreen.drift.detected" in first.events
    # The episode opens on the first alert; its retrain waits for labelled rows from after
    # the change (they arrive DELAY chunks later), then goes once.
    assert first.decision == "deferred" and "post-change" in first.reason
    # Labels of chunks first..k arrive at chunk k + DELAY: the retrain goes on the first chunk
    # whose labelled post-change rows reach the episode's evidence rule, not a chunk later.
    from evergreen.loop.state import post_change_needed

    needed = post_change_needed(stream)
    retrained = next(c for c in default[DRIFT_AT:] if c.decision == "retrain")
    assert retrained.index == first.index + DELAY + math.ceil(needed / ROWS) - 1, needed
    assert retrained.retrained_version == "2"
    assert "evergreen.retrain.requested" in retrained.events
    assert sum("evergreen.drift.detected" in c.events for c in default) <= 2  # per episode, not per chunk
    assert result.policies["default"].retrains < CHUNKS


def test_labels_are_revealed_after_the_delay(result) -> None:
    days = [c.chunk for c in result.policies["never"].chunks]
    for i, c in enumerate(result.policies["never"].chunks):
        assert c.valid, c.validation
        if i < DELAY:
            assert c.realized_signal is None
        else:
            assert c.realized_signal["chunk"] == days[i - DELAY]
            assert c.realized_signal["value"] == pytest.approx(
                result.policies["never"].chunks[i - DELAY].realized_metric
            )


def test_plot_is_written(result, tmp_path) -> None:
    path = tmp_path / "backtest.png"
    plot(result, str(path))
    assert path.stat().st_size > 10_000


def test_cli_writes_the_report(stream: ModelConfig, tmp_path) -> None:
    import yaml

    from evergreen.apps.cli import app

    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(stream.model_dump(mode="json")), encoding="utf-8")
    out = tmp_path / "report.json"
    run = CliRunner().invoke(
        app,
        [
            "backtest",
            "--config",
            str(config),
            "--out",
            str(out),
            "--policy",
            "never",
            "--only",
            "--max-chunks",
            "3",
        ],
    )
    assert run.exit_code == 0, run.output
    report = json.loads(out.read_text())
    assert list(report["policies"]) == ["never"] and len(report["policies"]["never"]["chunks"]) == 3
    assert "never" in run.output
    bad = CliRunner().invoke(
        app, ["backtest", "--config", str(config), "--out", str(out), "--policy", "sometimes"]
    )
    assert bad.exit_code == 2 and "sometimes" in bad.output
