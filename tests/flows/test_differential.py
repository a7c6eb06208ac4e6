"""Differential test: the real flows and the backtest, over the same stream and config, make
the same decision on every chunk (alert, retrain go/skip and its blocker, gate pass/fail).

The flows run on the Prefect test harness and a temporary MLflow store, driven as the
deployments would: each chunk is served by the registry's champion (as the scoring service
does) and written as a batch file, the labels files of the day are delivered, the `monitor`
flow runs, an alert event starts the `retrain` flow (trigger `event`), a registered version
starts the `promote` flow. The backtest replays the same stream with its own store and
registry. The gate is set so that no challenger passes (mode `improvement` by 0.5): the
champion stays the same model on both sides, and canary serving (which the backtest replays
as a shadow review) does not enter the comparison.

Mutation check: the same drive with the production start rule alone changed (the retrain
flow's cooldown ignored) must disagree with the backtest.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from evergreen.adapters import io, registry, tracking
from evergreen.apps.backtest import run_backtest
from evergreen.config import ModelConfig
from evergreen.events import ALERT_EVENTS
from evergreen.simulation.serving import serve_batch
from evergreen.simulation.stream import write_stream_from_frames

pytestmark = pytest.mark.slow

CHUNKS, ROWS, DRIFT_AT, DELAY = 10, 400, 3, 1


@dataclass(frozen=True)
class ChunkDecision:
    chunk: str
    valid: bool
    alert: bool
    retrain: str  # "retrain" (it went), a blocker name, or "-" (no alert, nothing started)
    gate: str  # "passed", "failed", "not run" or "-"


def _config(root: Path, name: str) -> ModelConfig:
    from tests.unit.conftest import _config as toy

    base = toy()
    return base.model_copy(
        update={
            "name": name,
            "data": base.data.model_copy(
                update={"root": str(root), "rows_per_batch": ROWS, "label_delay_days": DELAY}
            ),
            "retrain": base.retrain.model_copy(
                update={"cooldown_hours": 48, "max_retrains_per_period": 2, "min_new_rows": 100}
            ),
            "gate": base.gate.model_copy(
                update={"mode": "improvement", "margin": 0.5, "min_rows": 50, "max_latency_ms": 1e9}
            ),
            "mlflow": base.mlflow.model_copy(
                update={
                    "model_name": name,
                    "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                    "artifact_root": str(root / "mlartifacts"),
                }
            ),
        }
    )


@pytest.fixture(scope="module")
def stream_root(tmp_path_factory) -> Path:
    from tests.unit.conftest import _make_frame

    root = tmp_path_factory.mktemp("diff-stream")
    cfg = _config(root, "diff-stream")
    reference, analysis = _make_frame(3000, seed=1), _make_frame(CHUNKS * ROWS, seed=2)
    analysis["id"] += 1_000_000
    write_stream_from_frames(
        cfg,
        reference.drop(columns="p_true"),
        analysis.drop(columns="p_true"),
        str(root),
        drift="covariate",
        drift_start=DRIFT_AT,
        drift_params={"features": ["x1"], "method": "additive", "strength": 2.0},
    )
    return root


def _backtest_decisions(cfg: ModelConfig, workdir: str) -> list[ChunkDecision]:
    result = run_backtest(cfg, ["default"], baselines=False, workdir=workdir, validation_workers=0, log=lambda _: None)
    out = []
    for row in result.policies["default"].chunks:
        gate = "-"
        for action in row.actions:
            if action.startswith("gate passed"):
                gate = "passed"
            elif action.startswith("gate failed"):
                gate = "failed"
            elif action.startswith("gate not run"):
                gate = "not run"
        retrain = row.decision if row.alert else "-"
        out.append(ChunkDecision(row.chunk, row.valid, row.alert, retrain, gate))
    return out


def _flow_decisions(stream: ModelConfig, root: Path, name: str) -> list[ChunkDecision]:
    """The flows driven chunk by chunk over a copy of the stream delivered day by day."""
    from flows.monitor import monitor
    from flows.promote import promote
    from flows.retrain import retrain

    cfg = _config(root, name)
    data = cfg.data
    for table in ("training_reference", "monitor_reference"):
        target = Path(data.path(table))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(stream.data.path(table), target)
    batches = io.list_batches(stream.data.path("batches"))
    labels = io.list_batches(stream.data.path("labels"))
    Path(data.path("batches")).mkdir(parents=True, exist_ok=True)
    Path(data.path("labels")).mkdir(parents=True, exist_ok=True)

    boot = retrain(config=cfg, trigger="manual", return_state=True)
    assert boot.is_completed(), boot.message
    promote(config=cfg, return_state=True)  # the bootstrap: challenger is already champion

    out = []
    for batch in batches:
        for f in labels:
            if f.day <= batch.day and not Path(data.path("labels"), Path(f.path).name).exists():
                shutil.copy(f.path, data.path("labels"))
        tracking.connect(cfg.mlflow)
        champion = registry.load_alias(cfg.mlflow.model_name, registry.CHAMPION)
        raw = io.read_table(batch.path)
        served, _ = serve_batch(champion.model, raw, champion.version.version, cfg.columns)
        path = f"{data.path('batches')}/{batch.day}.parquet"
        io.write_table(served, path)

        state = monitor(config=cfg, batch=path, return_state=True)
        (result,) = state.result(raise_on_failure=False)
        alert = any(e in ALERT_EVENTS for e in result.events)
        retrain_outcome, gate = "-", "-"
        if alert:
            run = retrain(config=cfg, trigger="event", event_id=f"evt-{batch.day}", return_state=True)
            outcome = run.result(raise_on_failure=False)
            retrain_outcome = (outcome.blocked_by or "skipped") if outcome.status == "skipped" else "retrain"
            if outcome.status == "registered":
                gated = promote(config=cfg, version=outcome.version, return_state=True)
                decision = gated.result(raise_on_failure=False)
                gate = {"passed": "passed", "failed": "failed"}[decision.decision]
                if gated.name == "NotEnoughData":
                    gate = "not run"
        out.append(ChunkDecision(batch.day, result.valid, alert, retrain_outcome, gate))
    return out


def _differences(a: list[ChunkDecision], b: list[ChunkDecision]) -> list[str]:
    assert len(a) == len(b) == CHUNKS
    return [f"{x.chunk}: backtest {x} != flows {y}" for x, y in zip(a, b, strict=True) if x != y]


@pytest.fixture(scope="module")
def backtest(stream_root: Path, tmp_path_factory) -> list[ChunkDecision]:
    cfg = _config(stream_root, "diff-stream")
    return _backtest_decisions(cfg, str(tmp_path_factory.mktemp("diff-backtest")))


def test_flows_and_backtest_decide_alike_on_every_chunk(stream_root: Path, backtest, tmp_path_factory) -> None:
    stream = _config(stream_root, "diff-stream")
    flows = _flow_decisions(stream, tmp_path_factory.mktemp("diff-flows"), "diff-flows")
    assert _differences(backtest, flows) == []
    # The stream exercises the rule: alerts, retrains that went, and retrains held back.
    kinds = {d.retrain for d in flows}
    assert any(d.alert for d in flows) and "retrain" in kinds, flows
    assert kinds & {"cooldown", "budget", "min_new_rows"}, flows
    assert {d.gate for d in flows} & {"failed", "not run"}, flows


def test_a_rule_changed_in_production_alone_is_caught(stream_root: Path, backtest, tmp_path_factory, monkeypatch) -> None:
    """Mutation: the retrain flow's start check ignores the cooldown; the backtest does not."""
    from evergreen.decisions import policy
    from evergreen.loop import sources

    original = sources.check_retrain_start

    def no_cooldown(config: ModelConfig, trigger: str, policy_name: str = "default"):  # noqa: ANN202
        relaxed = config.model_copy(update={"retrain": config.retrain.model_copy(update={"cooldown_hours": 0})})
        return original(relaxed, trigger, policy_name)

    monkeypatch.setattr("tasks.training.sources.check_retrain_start", no_cooldown)
    assert policy.check_start  # the backtest keeps the real rule
    stream = _config(stream_root, "diff-stream")
    flows = _flow_decisions(stream, tmp_path_factory.mktemp("diff-mutant"), "diff-mutant")
    assert _differences(backtest, flows), "a production-only change of the start rule went unnoticed"
