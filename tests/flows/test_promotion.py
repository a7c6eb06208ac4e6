"""Promote, canary review and rollback on a temporary registry (Prefect test harness).

The registry starts with a champion trained by the retrain flow on the reference data; the
stream has concept drift, so a model retrained on the drifted labels is really better on the
freshest labelled rows, and one trained on scrambled labels is really worse."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evergreen.adapters import io, registry, tracking
from evergreen.config import ModelConfig
from evergreen.simulation.stream import write_demo_stream
from flows.canary import canary_review
from flows.promote import promote
from flows.retrain import retrain
from flows.rollback import rollback
from tests.support import labelled, read_model_events, register_challenger, scrambled, serve_history

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop(demo_config: ModelConfig, tmp_path_factory) -> ModelConfig:
    """v1 champion (reference only) and v2 challenger (reference + concept-drifted labels)."""
    root = tmp_path_factory.mktemp("promotion")
    cfg = demo_config.model_copy(
        update={
            "name": "loan-promo",
            "data": demo_config.data.model_copy(update={"root": str(root / "live"), "label_delay_days": 0}),
            "mlflow": demo_config.mlflow.model_copy(update={"model_name": "loan-promo"}),
            "retrain": demo_config.retrain.model_copy(update={"window": "expanding", "include_reference": False}),
        }
    )
    staging = root / "stream"
    write_demo_stream(cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(staging)})}), str(staging), drift="concept", drift_start=2)
    live = Path(cfg.data.root)
    live.mkdir(parents=True)
    for name in ("reference.parquet", "monitor_reference.parquet"):
        shutil.copy(staging / name, live / name)
    # Champion: trained on the reference alone (no batches yet).
    boot = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"include_reference": True})})
    assert retrain(config=boot, return_state=True).result().bootstrap
    shutil.copytree(staging / "batches", live / "batches")
    shutil.copytree(staging / "labels", live / "labels")
    return cfg


def test_worse_challenger_is_rejected_and_champion_stays(loop: ModelConfig) -> None:
    name = loop.mlflow.model_name
    champion = registry.version_by_alias(name, registry.CHAMPION).version
    version = register_challenger(loop, scrambled(loop, seed=0), {})
    since = datetime.now(UTC) - timedelta(seconds=5)
    state = promote(config=loop, return_state=True)
    assert state.is_failed() and state.name == "GateFailed"
    assert "relative margin" in state.message and "below champion" in state.message
    mv = registry.get_version(name, version)
    assert mv.status == "rejected" and "evergreen.rejected.reasons" in mv.tags
    assert registry.version_by_alias(name, registry.CHALLENGER) is None
    assert registry.version_by_alias(name, registry.CHAMPION).version == champion
    events = read_model_events(loop.name, ["evergreen.gate.failed"], since, expect=1)
    assert len(events) == 1 and events[0].payload["version"] == version
    assert _run_name(state) == f"promote · loan-promo · v{version}"  # started as `challenger`


def _run_name(state) -> str:  # noqa: ANN001 - a Prefect State
    """The flow run's name as the Prefect API has it after the run ended."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_better_challenger_becomes_canary(loop: ModelConfig) -> None:
    name = loop.mlflow.model_name
    since = datetime.now(UTC) - timedelta(seconds=5)
    registered = retrain(config=loop, return_state=True).result()
    state = promote(config=loop, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.decision == "passed" and result.canary == registered.version
    assert _run_name(state) == f"promote · loan-promo · v{registered.version}"
    assert registry.version_by_alias(name, registry.CANARY).version == registered.version
    assert registry.get_version(name, registered.version).status == "canary"
    events = read_model_events(loop.name, ["evergreen.gate.passed", "evergreen.canary.started"], since, expect=2)
    names = sorted(e.event for e in events)
    assert names == ["evergreen.canary.started", "evergreen.gate.passed"]
    started = next(e for e in events if e.event == "evergreen.canary.started")
    assert started.payload["traffic_share"] == loop.canary.traffic_share


def test_canary_review_waits_then_promotes_a_good_canary(loop: ModelConfig) -> None:
    name = loop.mlflow.model_name
    old = registry.version_by_alias(name, registry.CHAMPION).version
    canary = registry.version_by_alias(name, registry.CANARY).version
    pending = canary_review(config=loop, return_state=True)
    assert pending.is_completed() and pending.result().decision == "pending"
    assert _run_name(pending) == f"canary-review · loan-promo · v{canary}"
    assert registry.version_by_alias(name, registry.CANARY).version == canary  # no change
    serve_history(loop, [b.day for b in io.list_batches(loop.data.path("batches"))][10:14])
    state = canary_review(config=loop, return_state=True)
    result = state.result()
    assert result.decision == "promoted", result.reasons
    assert _run_name(state) == f"canary-review · loan-promo · v{canary}"
    assert registry.version_by_alias(name, registry.CHAMPION).version == canary
    assert registry.version_by_alias(name, registry.CANARY) is None
    assert registry.get_version(name, old).status == "retired"


def test_rollback_restores_the_previous_champion_and_is_idempotent(loop: ModelConfig) -> None:
    name = loop.mlflow.model_name
    current = registry.version_by_alias(name, registry.CHAMPION).version
    previous = registry.previous_champion(name)
    state = rollback(config=loop, from_version=current, reason="test rollback", return_state=True)
    assert state.result().decision == "rolled_back"
    assert registry.version_by_alias(name, registry.CHAMPION).version == previous
    again = rollback(config=loop, from_version=current, reason="test rollback", return_state=True)
    assert again.result().decision == "unchanged"
    assert (_run_name(state), _run_name(again)) == (f"rollback · loan-promo · to v{previous}", "rollback · loan-promo · unchanged")
    assert registry.version_by_alias(name, registry.CHAMPION).version == previous
    moves = [m for m in registry.alias_history(name) if m.alias == "champion"]
    assert moves[-1].reason == "rollback: test rollback" and moves[-1].from_version == current


def test_canary_review_rolls_back_a_bad_canary(loop: ModelConfig) -> None:
    name = loop.mlflow.model_name
    champion = registry.version_by_alias(name, registry.CHAMPION).version
    bad = register_challenger(loop, scrambled(loop, seed=1), {})
    tracking.connect(loop.mlflow)
    registry.start_canary(name, bad, {"passed": True}, "test", None)  # as if the gate had passed
    serve_history(loop, [b.day for b in io.list_batches(loop.data.path("batches"))][14:18])
    since = datetime.now(UTC)
    result = canary_review(config=loop, return_state=True).result()
    assert result.decision == "rolled_back", result.reasons
    assert registry.version_by_alias(name, registry.CANARY) is None
    assert registry.version_by_alias(name, registry.CHAMPION).version == champion
    assert registry.get_version(name, bad).status == "rejected"
    events = read_model_events(loop.name, ["evergreen.model.rolled_back"], since, expect=1)
    assert any(e.payload["from_version"] == bad and e.payload["to_version"] == champion for e in events)


def test_concurrent_promotions_leave_a_consistent_registry(loop: ModelConfig) -> None:
    name = loop.mlflow.model_name
    register_challenger(loop, labelled(loop), {})
    states: list = []
    threads = [threading.Thread(target=lambda: states.append(promote(config=loop, return_state=True))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decisions = sorted(s.result(raise_on_failure=False).decision for s in states)
    # One run gates the challenger; the other finds none left (or the same decision, never a mix).
    assert "skipped" in decisions or decisions[0] == decisions[1]
    canary = registry.version_by_alias(name, registry.CANARY)
    challenger = registry.version_by_alias(name, registry.CHALLENGER)
    assert challenger is None
    history = registry.alias_history(name)
    seqs = [m.time for m in history]
    assert seqs == sorted(seqs)
    if canary is not None:
        assert registry.get_version(name, canary.version).status == "canary"
