"""Differential test: the real flows and the backtest, over the same stream and config, make
the same decision on every chunk — alert, retrain go/skip and its blocker, gate pass/fail,
canary outcome.

Both sides are driven by the same replay (`evergreen.simulation.replay.Replay`: labels
delivered by day, the canary reviewed, rows served by id between champion and canary, the
monitor, prefect.yaml's automations). The backtest's loop is the step functions on
in-memory ports (`evergreen.apps.backtest.run_backtest`); here the loop is the `monitor`,
`retrain`, `promote`, `canary-review` and `rollback` flows on the Prefect test harness, with
files in a temporary folder and a temporary MLflow store.

Mutation check: the same drive with the production start rule alone changed (the retrain
flow ignores the cooldown) must disagree with the backtest.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest

from evergreen.adapters.memory import MemoryEvents
from evergreen.adapters.wiring import file_ports
from evergreen.apps.backtest import load_stream, run_backtest
from evergreen.config import ModelConfig
from evergreen.decisions import policy
from evergreen.lineage import Trigger
from evergreen.reports import MonitorResult, PromotionResult, RetrainResult
from evergreen.simulation.replay import Chunk, Replay, copy_references, with_data_root
from tests.support import write_toy_drift_stream

pytestmark = pytest.mark.slow

CHUNKS, ROWS, DRIFT_AT, DELAY = 10, 400, 3, 1


@dataclass(frozen=True)
class ChunkDecision:
    chunk: str
    valid: bool
    alert: bool
    retrain: str  # "retrain" (it went), the blocker that held it, or the monitor's verdict
    gate: str | None  # passed / failed, None when nothing was gated
    review: str | None  # promoted / rolled_back / pending, None when no canary was reviewed


def _config(root: Path, name: str) -> ModelConfig:
    from tests.unit.conftest import _config as toy

    base = toy()
    return base.model_copy(
        update={
            "name": name,
            "data": base.data.model_copy(update={"root": str(root), "rows_per_batch": ROWS, "label_delay_days": DELAY}),
            "retrain": base.retrain.model_copy(
                update={"cooldown_hours": 48, "max_retrains_per_period": 3, "min_new_rows": 100}
            ),
            # Non-inferiority for the episode's retrains too: on this small stream an
            # improvement the bootstrap supports is rare, and the test needs a canary to review.
            "gate": base.gate.model_copy(
                update={"min_rows": 50, "max_latency_ms": 1e9, "mode_on_alert": "non_inferiority", "margin": 0.1}
            ),
            "canary": base.canary.model_copy(update={"min_predictions": 100, "min_labels": 50}),
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
def stream(tmp_path_factory) -> ModelConfig:
    root = tmp_path_factory.mktemp("diff-stream")
    cfg = _config(root, "diff")
    write_toy_drift_stream(cfg, str(root), CHUNKS, ROWS, DRIFT_AT)
    return cfg


@pytest.fixture(scope="module")
def backtest(stream: ModelConfig) -> list[ChunkDecision]:
    result = run_backtest(stream, ["default"], baselines=False, log=lambda _: None)
    return [
        ChunkDecision(row.chunk, row.valid, row.alert, row.decision, row.gate, _review_of(row.actions))
        for row in result.policies["default"].chunks
    ]


def _review_of(actions: list[str]) -> str | None:
    for action in actions:
        if action.startswith("review promoted"):
            return "promoted"
        if action.startswith("review rolled"):
            return "rolled_back"
    return None


class FlowLoop:
    """The replay's loop as the deployments run it: the flows themselves."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def bootstrap(self) -> RetrainResult:
        from flows.bootstrap import bootstrap

        return bootstrap(config=self.config, return_state=True).result(raise_on_failure=False)

    def monitor(self, batch_path: str) -> MonitorResult:
        from flows.monitor import monitor

        (result,) = monitor(config=self.config, batch=batch_path, return_state=True).result(raise_on_failure=False)
        return result

    def retrain(self, trigger: Trigger, policy_name: str) -> RetrainResult:
        from flows.retrain import retrain

        state = retrain(
            config=self.config, trigger=trigger.kind, event_id=trigger.event_id, reason=trigger.reason,
            metric=trigger.metric, return_state=True,
        )
        return state.result(raise_on_failure=False)

    def promote(self, version: str) -> PromotionResult:
        from flows.promote import promote

        return promote(config=self.config, version=version, return_state=True).result(raise_on_failure=False)

    def review(self) -> PromotionResult:
        from flows.canary import canary_review

        return canary_review(config=self.config, return_state=True).result(raise_on_failure=False)

    def rollback(self, from_version: str, reason: str) -> PromotionResult:
        from flows.rollback import rollback

        state = rollback(config=self.config, from_version=from_version, reason=reason, verify=True, return_state=True)
        return state.result(raise_on_failure=False)


def _flow_decisions(stream: ModelConfig, root: Path, until_differs: list[ChunkDecision] | None = None) -> list[ChunkDecision]:
    """The flows' decision on each chunk; with `until_differs`, only up to the first chunk
    whose decision differs from that list's."""
    cfg = with_data_root(stream, str(root / "data")).model_copy(
        update={
            "mlflow": stream.mlflow.model_copy(
                update={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": str(root / "mlartifacts")}
            )
        }
    )
    copy_references(stream, cfg)
    replayed = load_stream(stream)
    # The driver serves through the real registry and files, as the scoring service would.
    ports = file_ports(cfg, events=MemoryEvents(), runs=None, lock=nullcontext)  # type: ignore[arg-type]
    replay = Replay(cfg, ports, FlowLoop(cfg), replayed.label_files, policy.Policy.named("default", cfg.retrain))
    replay.bootstrap()
    out = []
    for i, day in enumerate(replayed.days):
        o = replay.step(i, Chunk(day, replayed.batches[i]))
        m = o.monitor
        decision = m.decision
        if o.retrain is not None:
            decision = "retrain" if o.retrain.status != "skipped" else (o.retrain.blocked_by or "skipped")
        review = o.review.decision if o.review is not None and o.review.decision in ("promoted", "rolled_back") else None
        out.append(ChunkDecision(day, m.valid, m.alert, decision, o.gate.decision if o.gate else None, review))
        if until_differs is not None and out[-1] != until_differs[i]:
            break
    return out


def _differences(a: list[ChunkDecision], b: list[ChunkDecision]) -> list[str]:
    assert len(a) == len(b) == CHUNKS
    return [f"{x.chunk}: backtest {x} != flows {y}" for x, y in zip(a, b, strict=True) if x != y]


def test_flows_and_backtest_decide_alike_on_every_chunk(stream: ModelConfig, backtest, tmp_path_factory) -> None:
    flows = _flow_decisions(stream, tmp_path_factory.mktemp("diff-flows"))
    assert _differences(backtest, flows) == []
    # The stream exercises the loop: alerts, retrains that went and retrains held back, a
    # gate, a canary reviewed to its end.
    kinds = {d.retrain for d in flows}
    assert any(d.alert for d in flows) and "retrain" in kinds, flows
    assert kinds & {"deferred", "requested", "attempts", "cooldown", "budget", "min_new_rows", "candidate_pending"}, flows
    assert {d.gate for d in flows} - {None}, flows
    assert {d.review for d in flows} - {None}, flows


def test_a_rule_changed_in_production_alone_is_caught(stream: ModelConfig, backtest, tmp_path_factory, monkeypatch) -> None:
    """Mutation: in the flows alone, an episode's retrain waits for ten times the post-change
    evidence; the backtest (run before, with the real rule) does not."""
    from evergreen.loop import state as loop_state

    original = loop_state.post_change_needed
    monkeypatch.setattr(loop_state, "post_change_needed", lambda config: 10 * original(config))
    flows = _flow_decisions(stream, tmp_path_factory.mktemp("diff-mutant"), until_differs=backtest)
    assert any(x != y for x, y in zip(backtest, flows, strict=False)), "a production-only change of the start rule went unnoticed"
