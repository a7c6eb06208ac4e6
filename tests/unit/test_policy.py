"""The retrain policy: each signal, hysteresis, cooldown, new rows, budget and the baselines.

Signals come from the real `monitoring.decide_alerts` on hand-built monitor reports."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from evergreen.config import RetrainPolicyConfig
from evergreen.decisions.alerts import decide_alerts
from evergreen.decisions.policy import (
    SIGNALS,
    ChunkObservation,
    LoopState,
    Policy,
    PolicyError,
    check_start,
    decide,
    history_of,
)
from evergreen.engines.monitoring import (
    FeatureDrift,
    MetricEstimate,
    MonitorReport,
    MultivariateDrift,
)
from evergreen.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED

NOW = datetime(2024, 3, 10, 23, 59)


def _report(
    drifted: int = 0, mv_alert: bool = False, estimated: float = 0.80, realized: float | None = None
) -> MonitorReport:
    feats = {
        f"f{i}": FeatureDrift("jensen_shannon", 0.3 if i < drifted else 0.01, 0.1, i < drifted, "c")
        for i in range(4)
    }

    def est(value: float, kind: str) -> MetricEstimate:
        return MetricEstimate("roc_auc", value, 0.80, 0.75, 0.85, False, kind, 0.01, "c")  # type: ignore[arg-type]

    return MonitorReport(
        model_name="unit",
        metric="roc_auc",
        features=feats,
        multivariate=MultivariateDrift(3.0 if mv_alert else 2.0, 1.8, 2.5, mv_alert, "c"),
        estimated_metric=est(estimated, "estimated"),
        realized_metric=est(realized, "realized") if realized is not None else None,
        rows=1000,
        labelled_rows=0,
        chunks=[],
    )


# A report per signal kind, each firing that signal alone (toy config: share 0.25, drop 0.03).
FIRING = {
    "feature_drift": {"drifted": 2},
    "multivariate_drift": {"mv_alert": True},
    "estimated_drop": {"estimated": 0.70},
    "realized_drop": {"realized": 0.70},
}


def _observe(
    toy_config, chunk: str = "2024-03-10", valid: bool = True, **report
) -> ChunkObservation:  # noqa: ANN001
    return ChunkObservation(
        chunk=chunk,
        valid=valid,
        alerts=decide_alerts(_report(**report), toy_config()) if valid else None,
    )


def _policy(name: str = "default", **retrain) -> Policy:  # noqa: ANN003
    """A policy listening to every signal unless told otherwise."""
    return Policy.named(name, RetrainPolicyConfig(**{"signals": list(SIGNALS), **retrain}))


@pytest.mark.parametrize("kind", sorted(FIRING))
def test_each_signal_triggers_a_retrain_and_its_event(toy_config, kind: str) -> None:
    decision = decide(_observe(toy_config, **FIRING[kind]), LoopState(), _policy())
    assert decision.retrain and decision.alert
    assert decision.fired == [kind]
    event = DRIFT_DETECTED if kind.endswith("drift") else PERFORMANCE_DEGRADED
    assert list(decision.events) == [event]
    payload = decision.events[event]
    assert {"metric", "value", "threshold", "chunk", "reason"} <= set(payload)
    assert payload["reason"] in decision.reason
    json.dumps(payload)  # plain JSON only (numpy scalars make Prefect drop events)


def test_events_keep_the_monitor_payload_contract(toy_config) -> None:
    obs = _observe(toy_config, drifted=3, mv_alert=True, estimated=0.70)
    decision = decide(obs, LoopState(), _policy())
    expected = obs.alerts.event_payloads()
    assert set(decision.events) == set(expected) == {DRIFT_DETECTED, PERFORMANCE_DEGRADED}
    for name, payload in expected.items():
        assert {k: decision.events[name][k] for k in payload} == payload
        assert decision.events[name]["policy"] == "default"


def test_only_configured_signals_count(toy_config) -> None:
    pol = _policy(signals=["realized_drop"])
    drift = decide(_observe(toy_config, drifted=4, mv_alert=True, estimated=0.6), LoopState(), pol)
    assert not drift.retrain and not drift.alert and drift.events == {}
    assert drift.blocked_by == "no_alert"
    realized = decide(_observe(toy_config, realized=0.6), LoopState(), pol)
    assert realized.retrain and list(realized.events) == [PERFORMANCE_DEGRADED]


def test_quiet_and_rejected_chunks_do_not_retrain(toy_config) -> None:
    quiet = decide(_observe(toy_config), LoopState(), _policy())
    assert not quiet.retrain and quiet.fired == [] and quiet.reason == "no configured signal fired"
    rejected = ChunkObservation("2024-03-10", valid=False, reason="x: nulls")
    decision = decide(rejected, LoopState(), _policy())
    assert (
        not decision.retrain and decision.blocked_by == "invalid" and "x: nulls" in decision.reason
    )


def test_hysteresis_needs_k_of_the_last_n_chunks(toy_config) -> None:
    pol = _policy(hysteresis_k=2, hysteresis_n=3)
    drift = _observe(toy_config, drifted=2)
    first = decide(drift, LoopState(history=((), ())), pol)
    assert not first.retrain and not first.alert and first.events == {}
    assert "1 of the last 3" in first.reason
    second = decide(drift, LoopState(history=((), ("feature_drift",))), pol)
    assert second.retrain and second.alert and DRIFT_DETECTED in second.events
    # A signal older than the last N chunks no longer counts.
    old = decide(drift, LoopState(history=(("feature_drift",), (), ())), pol)
    assert not old.alert
    # The hysteresis never invents an alert on a quiet chunk.
    assert not decide(_observe(toy_config), LoopState(history=(("feature_drift",),) * 2), pol).alert


def test_history_of_keeps_the_last_n_minus_one_chunks(toy_config) -> None:
    pol = _policy(hysteresis_k=2, hysteresis_n=3)
    decisions = [
        decide(_observe(toy_config, **r), LoopState(), pol)
        for r in ({}, {"drifted": 2}, {"mv_alert": True})
    ]
    assert history_of(decisions, pol.config) == (("feature_drift",), ("multivariate_drift",))
    assert history_of([["a"], ["b"]], RetrainPolicyConfig()) == ()


def test_cooldown_counts_hours_of_data_since_the_last_retrain(toy_config) -> None:
    pol = _policy(cooldown_hours=72)
    drift = _observe(toy_config, drifted=2)
    early = decide(drift, LoopState(now=NOW, last_retrain_clock=NOW - timedelta(hours=48)), pol)
    assert not early.retrain and early.blocked_by == "cooldown" and "48 h" in early.reason
    assert early.alert and DRIFT_DETECTED in early.events  # the drift is still announced
    late = decide(drift, LoopState(now=NOW, last_retrain_clock=NOW - timedelta(hours=73)), pol)
    assert late.retrain


def test_min_new_rows_and_budget_block_a_retrain(toy_config) -> None:
    pol = _policy(min_new_rows=1000, max_retrains_per_period=2, period_days=30)
    drift = _observe(toy_config, realized=0.6)
    few = decide(drift, LoopState(new_labelled_rows=999, retrains_in_period=0), pol)
    assert few.blocked_by == "min_new_rows" and "999" in few.reason
    spent = decide(drift, LoopState(new_labelled_rows=1000, retrains_in_period=2), pol)
    assert spent.blocked_by == "budget" and "2 retrains in the last 30 days" in spent.reason
    ok = decide(drift, LoopState(new_labelled_rows=1000, retrains_in_period=1), pol)
    assert ok.retrain and ok.blocked_by is None


def test_a_candidate_under_review_blocks_a_retrain(toy_config) -> None:
    decision = decide(_observe(toy_config, drifted=2), LoopState(candidate_pending=True), _policy())
    assert not decision.retrain and decision.blocked_by == "candidate_pending"


def test_start_checks_without_their_inputs_are_skipped() -> None:
    cfg = RetrainPolicyConfig(cooldown_hours=1000, min_new_rows=10**6, max_retrains_per_period=1)
    assert check_start(LoopState(), cfg).allowed
    blocked = check_start(LoopState(now=NOW, last_retrain_clock=NOW), cfg)
    assert not blocked.allowed and blocked.blocked_by == "cooldown"


def test_baselines_ignore_the_signals(toy_config) -> None:
    drift, quiet = _observe(toy_config, drifted=4, realized=0.5), _observe(toy_config)
    never = _policy("never")
    assert not decide(drift, LoopState(), never).retrain
    always = _policy("always", cooldown_hours=10**4)
    rejected = ChunkObservation("d", valid=False)
    assert all(
        decide(o, LoopState(now=NOW, last_retrain_clock=NOW), always).retrain
        for o in (drift, quiet, rejected)
    )
    every3 = _policy("schedule:3")
    due = [decide(quiet, LoopState(chunks_since_retrain=k), every3).retrain for k in (1, 2, 3, 4)]
    assert due == [False, False, True, True]
    # Every policy announces the same alerts: events follow the signals, not the policy.
    assert (
        decide(drift, LoopState(), never).events.keys()
        == decide(drift, LoopState(), _policy()).events.keys()
    )


@pytest.mark.parametrize(
    ("name", "kind", "every"),
    [
        ("default", "default", None),
        ("never", "never", None),
        ("ALWAYS", "always", None),
        ("schedule", "schedule", 7),
        ("schedule:14", "schedule", 14),
    ],
)
def test_policy_names(name: str, kind: str, every: int | None) -> None:
    pol = Policy.named(name, RetrainPolicyConfig())
    assert (pol.kind, pol.every) == (kind, every)
    json.dumps(pol.settings())


@pytest.mark.parametrize("name", ["sometimes", "schedule:0", "schedule:x"])
def test_bad_policy_names_are_named(name: str) -> None:
    with pytest.raises(PolicyError, match=name.split(":")[0]):
        Policy.named(name, RetrainPolicyConfig())


def test_the_ledger_keeps_the_hysteresis_history(tmp_path) -> None:
    from evergreen.adapters.ledger import BatchRecord, read_ledger, record_batch

    state = str(tmp_path)
    for day, signals in (
        ("2024-03-02", ["feature_drift"]),
        ("2024-03-01", []),
        ("2024-03-03", ["realized_drop"]),
    ):
        record_batch(
            state, BatchRecord(day=day, path=f"{day}.parquet", valid=True, signals=signals)
        )
    ledger = read_ledger(state)
    assert ledger.signals_before("2024-03-03") == [[], ["feature_drift"]]
    pol = _policy(hysteresis_k=2, hysteresis_n=2)
    assert history_of(ledger.signals_before("2024-03-04"), pol.config) == (("realized_drop",),)


def test_the_demo_config_runs_the_default_policy() -> None:
    """The backtest acceptance replays the demo and the synthetic streams with one policy."""
    from pathlib import Path

    from evergreen.config import MonitoringConfig, load_config

    demo = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    policy_fields = (
        "signals",
        "cooldown_hours",
        "hysteresis_k",
        "hysteresis_n",
        "min_new_rows",
        "max_retrains_per_period",
        "period_days",
    )
    default = RetrainPolicyConfig()
    assert {f: getattr(demo.retrain, f) for f in policy_fields} == {
        f: getattr(default, f) for f in policy_fields
    }
    thresholds = ("drifted_feature_share", "performance_drop", "metric_floor", "multivariate_drift")
    assert {f: getattr(demo.monitoring, f) for f in thresholds} == {
        f: getattr(MonitoringConfig(), f) for f in thresholds
    }
