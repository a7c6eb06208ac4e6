"""The retrain policy: each signal, alert episodes, the evidence a retrain waits for, hysteresis,
cooldown, new rows, budget and the baselines.

Signals come from the real `monitoring.decide_alerts` on hand-built monitor reports."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta

import pytest

from evergreen.config import RetrainPolicyConfig
from evergreen.decisions import gate
from evergreen.decisions.alerts import decide_alerts
from evergreen.decisions.episodes import Episode, with_request
from evergreen.decisions.policy import (
    SIGNALS,
    Attempt,
    ChunkObservation,
    LoopState,
    Policy,
    PolicyError,
    change_began,
    check_start,
    decide,
    decide_episode_retrain,
    history_of,
    refresh_rows,
)
from evergreen.engines.monitoring import (
    FeatureDrift,
    MetricEstimate,
    MonitorReport,
    MultivariateDrift,
)
from evergreen.events import DRIFT_DETECTED, EPISODE_CLOSED, PERFORMANCE_DEGRADED, RETRAIN_REQUESTED

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


CHANGE = datetime(2024, 3, 9)


def _open(post_change_rows: int | None = 5000, needed: int = 1000, **state) -> LoopState:  # noqa: ANN003
    """The loop state inside an open drift episode (opened on 2024-03-09 under champion v1)."""
    episode = Episode(id="2024-03-09", change_point=CHANGE, champion="1", kinds=("drift",), last_alert="2024-03-09")
    base = {"champion": "1", "episode": episode, "post_change_rows": post_change_rows, "post_change_needed": needed}
    return LoopState(**{**base, **state})


@pytest.mark.parametrize("kind", sorted(FIRING))
def test_each_signal_opens_an_episode_and_announces_it_once(toy_config, kind: str) -> None:
    decision = decide(_observe(toy_config, **FIRING[kind]), LoopState(champion="1"), _policy())
    assert decision.alert and decision.transition == "opened" and decision.episode.id == "2024-03-10"
    assert decision.fired == [kind]
    event = DRIFT_DETECTED if kind.endswith("drift") else PERFORMANCE_DEGRADED
    assert list(decision.events) == [event]
    payload = decision.events[event]
    assert {"metric", "value", "threshold", "chunk", "reason", "episode"} <= set(payload)
    assert payload["episode"]["transition"] == "opened"
    json.dumps(payload)  # plain JSON only (numpy scalars make Prefect drop events)
    # No labelled row from after the change yet: the retrain waits for them.
    assert not decision.retrain and decision.blocked_by == "deferred"
    # The next alerting batch continues the same episode: no event at all.
    after = decide(_observe(toy_config, chunk="2024-03-11", **FIRING[kind]),
                   LoopState(champion="1", episode=decision.episode, post_change_rows=0, post_change_needed=1000), _policy())
    assert after.transition == "continued" and after.events == {} and after.blocked_by == "deferred"


def test_a_realized_drop_seen_late_dates_the_change_by_its_labelled_batch(toy_config) -> None:
    """Labels arrive late: a realized drop measured now on an earlier batch says the change
    had begun with that batch. The episode's change point is that batch's start (its labelled
    rows count as post-change evidence), not the start of the batch being monitored."""
    today, labelled = datetime(2024, 3, 10), datetime(2024, 3, 7)
    late = ChunkObservation(
        chunk="2024-03-10", valid=True, alerts=decide_alerts(_report(realized=0.70), toy_config()),
        start=today, realized_on="2024-03-07", realized_start=labelled,
    )
    opened = decide(late, LoopState(champion="1"), _policy())
    assert opened.transition == "opened" and opened.episode.id == "2024-03-10"
    assert opened.episode.change_point == labelled
    assert "the change began with batch 2024-03-07" in opened.reason
    # Drift seen on this batch alone (the realized metric of the earlier batch did not drop):
    # the change began with this batch.
    drift = ChunkObservation(
        chunk="2024-03-10", valid=True, alerts=decide_alerts(_report(drifted=2), toy_config()),
        start=today, realized_on="2024-03-07", realized_start=labelled,
    )
    assert change_began(drift, ["feature_drift"]) == ("2024-03-10", today)
    assert decide(drift, LoopState(champion="1"), _policy()).episode.change_point == today
    # Measured on this batch itself: nothing earlier to date it by.
    assert change_began(ChunkObservation("2024-03-10", True, start=today), ["realized_drop"]) == ("2024-03-10", today)


def test_events_keep_the_monitor_payload_contract(toy_config) -> None:
    obs = _observe(toy_config, drifted=3, mv_alert=True, estimated=0.70)
    decision = decide(obs, LoopState(), _policy())
    expected = obs.alerts.event_payloads()
    assert set(decision.events) == set(expected) == {DRIFT_DETECTED, PERFORMANCE_DEGRADED}
    for name, payload in expected.items():
        assert {k: decision.events[name][k] for k in payload} == payload
        assert decision.events[name]["policy"] == "default"


def test_the_retrain_is_requested_once_the_post_change_evidence_is_there(toy_config) -> None:
    drift = _observe(toy_config, drifted=2)
    short = decide(drift, _open(post_change_rows=999), _policy())
    assert not short.retrain and short.blocked_by == "deferred" and "999" in short.reason and "1,000" in short.reason
    ready = decide(drift, _open(post_change_rows=1000), _policy())
    assert ready.retrain and list(ready.events) == [RETRAIN_REQUESTED]
    request = ready.events[RETRAIN_REQUESTED]
    assert request["episode"]["id"] == "2024-03-09" and request["post_change_rows"] == 1000
    json.dumps(request)
    # A quiet batch inside the open episode asks as well: the evidence, not the batch, decides.
    quiet = decide(_observe(toy_config), _open(post_change_rows=1000), _policy())
    assert quiet.retrain and quiet.transition == "quiet"
    # Requested already on this evidence: not again (the retrain flow itself does not count it).
    asked = _open(post_change_rows=1500)
    asked = LoopState(**{**asked.__dict__, "episode": with_request(asked.episode, 1000, "2024-03-10")})
    again = decide(drift, asked, _policy())
    assert not again.retrain and again.blocked_by == "requested"
    assert decide_episode_retrain(asked, _policy().config, requested_counts=False).allowed
    assert decide(drift, LoopState(**{**asked.__dict__, "post_change_rows": 2000}), _policy()).retrain


def test_a_failed_attempt_is_retried_only_on_more_evidence_and_only_so_often(toy_config) -> None:
    drift = _observe(toy_config, drifted=2)
    rejected = (Attempt("2", "rejected", 1200),)
    same = decide(drift, _open(post_change_rows=2000, attempts=rejected), _policy())
    assert same.blocked_by == "deferred" and "1,200" in same.reason and "2,400" in same.reason
    grown = decide(drift, _open(post_change_rows=2400, attempts=rejected), _policy())
    assert grown.retrain
    pending = decide(drift, _open(attempts=(Attempt("2", "canary", 1200),)), _policy())
    assert pending.blocked_by == "candidate_pending" and "v2" in pending.reason
    tried = tuple(Attempt(str(v), "rejected", 100) for v in (2, 3, 4))
    # By default no cap: the evidence paces the retries (a gradual change defeats the first
    # attempts; the settled world is learned later). A cap, when set, holds.
    assert decide(drift, _open(post_change_rows=10**6, attempts=tried), _policy()).retrain
    spent = decide(drift, _open(post_change_rows=10**6, attempts=tried), _policy(max_attempts_per_episode=3))
    assert spent.blocked_by == "attempts" and "max_attempts_per_episode=3" in spent.reason


def test_an_episode_escalates_and_closes(toy_config) -> None:
    pol = _policy(episode_quiet_batches=2)
    state = _open(post_change_rows=0)
    worse = decide(_observe(toy_config, drifted=2, realized=0.6), state, pol)
    assert worse.transition == "escalated" and list(worse.events) == [PERFORMANCE_DEGRADED]
    assert worse.events[PERFORMANCE_DEGRADED]["episode"]["transition"] == "escalated"
    one = decide(_observe(toy_config), LoopState(champion="1", episode=worse.episode), pol)
    assert one.transition == "quiet" and one.events == {} and one.episode.open
    two = decide(_observe(toy_config), LoopState(champion="1", episode=one.episode), pol)
    assert two.transition == "closed" and list(two.events) == [EPISODE_CLOSED] and not two.episode.open
    assert "2 quiet batch(es)" in two.events[EPISODE_CLOSED]["reason"]
    # The next alert opens a new episode, announced again.
    again = decide(_observe(toy_config, chunk="2024-03-12", drifted=2), LoopState(champion="1", episode=two.episode), pol)
    assert again.transition == "opened" and again.episode.id == "2024-03-12" and DRIFT_DETECTED in again.events


def test_a_new_champion_ends_the_episode(toy_config) -> None:
    promoted = decide(_observe(toy_config, drifted=2), _open(champion="2"), _policy())
    assert EPISODE_CLOSED in promoted.events and "v1 -> v2" in promoted.events[EPISODE_CLOSED]["reason"]
    # Alerts about the new champion open an episode of their own.
    assert promoted.transition == "opened" and promoted.episode.champion == "2" and DRIFT_DETECTED in promoted.events


def test_only_configured_signals_count(toy_config) -> None:
    pol = _policy(signals=["realized_drop"])
    drift = decide(_observe(toy_config, drifted=4, mv_alert=True, estimated=0.6), LoopState(), pol)
    assert not drift.retrain and not drift.alert and drift.events == {}
    assert drift.blocked_by == "no_alert"
    realized = decide(_observe(toy_config, realized=0.6), LoopState(), pol)
    assert realized.alert and list(realized.events) == [PERFORMANCE_DEGRADED]


def test_quiet_and_rejected_chunks_do_not_retrain(toy_config) -> None:
    quiet = decide(_observe(toy_config), LoopState(), _policy())
    assert not quiet.retrain and quiet.fired == [] and quiet.reason == "no configured signal fired"
    rejected = ChunkObservation("2024-03-10", valid=False, reason="x: nulls")
    decision = decide(rejected, _open(), _policy())
    assert (
        not decision.retrain and decision.blocked_by == "invalid" and "x: nulls" in decision.reason
    )
    assert decision.episode == _open().episode  # a rejected batch leaves the episode as it was


def test_hysteresis_needs_k_of_the_last_n_chunks(toy_config) -> None:
    pol = _policy(hysteresis_k=2, hysteresis_n=3)
    drift = _observe(toy_config, drifted=2)
    first = decide(drift, LoopState(history=((), ())), pol)
    assert not first.alert and first.events == {} and first.episode is None
    assert "1 of the last 3" in first.reason
    second = decide(drift, LoopState(history=((), ("feature_drift",))), pol)
    assert second.alert and DRIFT_DETECTED in second.events and second.transition == "opened"
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


def test_cooldown_holds_an_episodes_first_retrain_only(toy_config) -> None:
    pol = _policy(cooldown_hours=72)
    drift = _observe(toy_config, drifted=2)
    early = decide(drift, _open(now=NOW, last_retrain_clock=NOW - timedelta(hours=48)), pol)
    assert not early.retrain and early.blocked_by == "cooldown" and "48 h" in early.reason
    late = decide(drift, _open(now=NOW, last_retrain_clock=NOW - timedelta(hours=73)), pol)
    assert late.retrain
    # A retry within the episode is paced by its evidence, not by the cooldown.
    retry = _open(post_change_rows=5000, now=NOW, last_retrain_clock=NOW, attempts=(Attempt("2", "rejected", 1000),))
    assert decide(drift, retry, pol).retrain


def test_min_new_rows_and_budget_block_a_retrain(toy_config) -> None:
    pol = _policy(min_new_rows=1000, max_retrains_per_period=2, period_days=30)
    drift = _observe(toy_config, realized=0.6)
    few = decide(drift, _open(new_labelled_rows=999, retrains_in_period=0), pol)
    assert few.blocked_by == "min_new_rows" and "999" in few.reason
    spent = decide(drift, _open(new_labelled_rows=1000, retrains_in_period=2), pol)
    assert spent.blocked_by == "budget" and "2 retrains in the last 30 days" in spent.reason
    ok = decide(drift, _open(new_labelled_rows=1000, retrains_in_period=1), pol)
    assert ok.retrain and ok.blocked_by is None


def test_a_candidate_under_review_blocks_a_retrain(toy_config) -> None:
    decision = decide(_observe(toy_config, drifted=2), _open(candidate_pending=True), _policy())
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


def test_the_episodes_own_replacement_settles_it_and_one_refresh_follows(toy_config) -> None:
    """v2, retrained for the episode on 5,000 post-change rows, replaced v1: the episode stays
    open (settling) through quiet batches, requests one refresh when the post-change rows have
    doubled, and ends when that refresh is decided: promoted, or rejected when the
    replacement's window size is not recorded (no retry: see the next test). Only the default
    policy settles."""
    pol = _policy(episode_quiet_batches=1, settle_growth=2.0)
    own = (Attempt("2", "champion", 5000),)
    quiet = _observe(toy_config)
    step = decide(quiet, _open(post_change_rows=7000, champion="2", attempts=own), pol)
    assert step.transition == "settling" and step.episode.open and step.episode.champion == "2"
    assert step.episode.settling_from == 5000 and EPISODE_CLOSED not in step.events
    assert step.blocked_by == "deferred" and "10,000" in step.reason and "settle_growth=2" in step.reason
    settling = step.episode
    # Quiet batches do not end it (the new champion's reference is the new world).
    still = decide(quiet, LoopState(champion="2", episode=settling, post_change_rows=9000, attempts=own), pol)
    assert still.transition == "quiet" and still.episode.open and not still.retrain
    due = decide(quiet, LoopState(champion="2", episode=still.episode, post_change_rows=10_000, attempts=own), pol)
    assert due.retrain and RETRAIN_REQUESTED in due.events and "refresh of settling" in due.reason
    under_review = (*own, Attempt("3", "canary", 10_000))
    held = decide(quiet, LoopState(champion="2", episode=settling, post_change_rows=12_000, attempts=under_review), pol)
    assert held.blocked_by == "candidate_pending" and held.episode.open
    for status, champion in (("rejected", "2"), ("champion", "3")):
        done = (*own, Attempt("3", status, 10_000))
        end = decide(quiet, LoopState(champion=champion, episode=settling, post_change_rows=12_000, attempts=done), pol)
        assert not end.episode.open and f"settled: refresh v3 {status}" in end.events[EPISODE_CLOSED]["reason"]
        assert not end.retrain
    # Without settle_growth, or for a baseline, the replacement ends the episode as before.
    for other in (_policy(settle_growth=None), _policy("always")):
        closed = decide(quiet, _open(post_change_rows=7000, champion="2", attempts=own), other)
        assert closed.transition == "closed" and EPISODE_CLOSED in closed.events


def test_refreshes_follow_the_growing_evidence_while_the_window_holds_it(toy_config) -> None:
    """The settling episode's replacement v2 learned from 5,000 post-change rows of a window
    with 35,000 production rows; its refresh waits for settle_growth (3) x 5,000.
    - A rejected (or rolled-back) refresh v3 on 15,000: the episode stays open and the next
      waits for evidence_growth (2) x 15,000 = 30,000, as an episode's retries do.
    - A refresh v3 that became champion: the episode settles on it, and the next waits for
      2 x 15,000 too.
    - Once the next would need more than the window's 35,000 production rows (60,000 after
      v4 on 30,000), the settling ends, whether v4 was rejected or became champion; a
      replacement trained on 20,000 (its refresh would need 60,000) ends it at once."""
    pol = _policy(episode_quiet_batches=1)
    quiet = _observe(toy_config)
    settling = Episode(
        id="2024-03-09", change_point=CHANGE, champion="2", kinds=("drift",), last_alert="2024-03-09",
        settling_from=5000,
    )
    replacement = Attempt("2", "champion", 5000, 35_000)
    first = decide(quiet, LoopState(champion="2", episode=settling, post_change_rows=14_999, attempts=(replacement,)), pol)
    assert first.blocked_by == "deferred" and "waits for 15,000 (retrain.settle_growth=3)" in first.reason
    for status in ("rejected", "retired"):
        tried = (replacement, Attempt("3", status, 15_000, 35_000))
        wait = decide(quiet, LoopState(champion="2", episode=settling, post_change_rows=29_999, attempts=tried), pol)
        assert wait.episode.open and EPISODE_CLOSED not in wait.events and not wait.retrain
        assert wait.blocked_by == "deferred" and f"waits for 30,000 (v3 {status}; retrain.evidence_growth=2)" in wait.reason
        due = decide(quiet, LoopState(champion="2", episode=settling, post_change_rows=30_000, attempts=tried), pol)
        assert due.retrain and "refresh of settling" in due.reason
    promoted = (replacement, Attempt("3", "champion", 15_000, 35_000))
    on = decide(quiet, LoopState(champion="3", episode=settling, post_change_rows=16_000, attempts=promoted), pol)
    assert on.transition == "settling" and on.episode.open and EPISODE_CLOSED not in on.events
    assert (on.episode.champion, on.episode.settling_from, on.episode.refreshed) == ("3", 15_000, 1)
    assert on.blocked_by == "deferred" and "waits for 30,000 (retrain.evidence_growth=2)" in on.reason
    kept = Episode.from_dict(on.episode.to_dict())  # as the batch ledger keeps it
    assert kept is not None and (kept.champion, kept.settling_from, kept.refreshed) == ("3", 15_000, 1)
    for status, champion in (("rejected", "3"), ("champion", "4")):
        spent = (*promoted, Attempt("4", status, 30_000, 35_000))
        end = decide(quiet, LoopState(champion=champion, episode=on.episode, post_change_rows=31_000, attempts=spent), pol)
        assert not end.episode.open and not end.retrain
        reason = end.events[EPISODE_CLOSED]["reason"]
        assert f"settled: refresh v4 {status}" in reason, reason
        if status == "rejected":
            assert "another would need 60,000 post-change rows" in reason and "35,000 production rows" in reason
    big = (Attempt("2", "champion", 20_000, 35_000),)
    at_once = decide(quiet, _open(post_change_rows=21_000, champion="2", attempts=big), pol)
    assert at_once.transition == "closed" and not at_once.episode.open


def test_refresh_rows_grow_the_evidence_within_the_window() -> None:
    assert refresh_rows(5000, 3.0, 35_000, first=True) == 15_000
    assert refresh_rows(15_000, 2.0, 35_000) == 30_000
    assert refresh_rows(20_000, 2.0, 35_000) is None  # the window held the new world already
    # A version without its window's size: the first refresh only, as before it was recorded.
    assert refresh_rows(5000, 3.0, None, first=True) == 15_000
    assert refresh_rows(15_000, 2.0, None) is None


def test_a_new_episode_does_not_inherit_the_attempts_of_the_one_before(toy_config) -> None:
    """The state of the chunk that opens an episode still lists the closed episode's attempts;
    the new one's retrain waits for its own evidence, not for a growth over those."""
    closed = Episode(id="2024-03-01", change_point=datetime(2024, 3, 1), champion="1", kinds=("drift",),
                     last_alert="2024-03-05", open=False, closed_reason="3 quiet batch(es) in a row")
    old = (Attempt("2", "rejected", 10_000),)
    opening = decide(_observe(toy_config, drifted=2), LoopState(champion="1", episode=closed, post_change_rows=12_000,
                                                                 post_change_needed=1000, attempts=old), _policy())
    assert opening.transition == "opened" and opening.blocked_by == "deferred"
    assert "waits for 1,000" in opening.reason and "10,000" not in opening.reason and "20,000" not in opening.reason


def test_a_retry_waits_for_evidence_growth_times_the_rows_of_the_failed_attempt(toy_config) -> None:
    """A rejected attempt on 2,500 post-change rows: the retry waits for 2 x 2,500 (its
    interval narrows by sqrt(2) and its cross-fit probes learn from twice the new world).
    The interval's own estimate of the rows it needed (`gate.evidence_factor`, +0.01 in
    [-0.01, +0.03]: 4x) stays on the version as information."""
    factor = gate.evidence_factor(
        {"checks": [{"name": "bootstrap", "passed": False, "value": -0.01, "high": 0.03, "threshold": 0.0}]}
    )
    assert factor == pytest.approx(4.0)
    for passed_or_worse in (
        {"checks": [{"name": "bootstrap", "passed": True, "value": 0.01, "high": 0.03, "threshold": 0.0}]},
        {"checks": [{"name": "bootstrap", "passed": False, "value": -0.03, "high": 0.01, "threshold": 0.0}]},
        {"checks": []},
    ):
        assert gate.evidence_factor(passed_or_worse) is None
    drift = _observe(toy_config, drifted=2)
    rejected = (Attempt("2", "rejected", 2500),)
    wait = decide(drift, _open(post_change_rows=4999, attempts=rejected), _policy())
    assert wait.blocked_by == "deferred" and "another needs 5,000" in wait.reason
    assert decide(drift, _open(post_change_rows=5000, attempts=rejected), _policy()).retrain
    assert not decide(drift, _open(post_change_rows=5000, attempts=rejected), _policy(evidence_growth=3.0)).retrain


def _labelled(toy_config, day: str, realized: float, **report) -> ChunkObservation:  # noqa: ANN001
    """A batch monitored on `day` whose late labels gave the realized metric of that same day's
    batch (1,000 labelled rows, sampling error 0.01, reference 0.80)."""
    start = datetime.fromisoformat(day)
    alerts = decide_alerts(_report(realized=realized, **report), toy_config())
    return ChunkObservation(chunk=day, valid=True, alerts=alerts, rows=1000, start=start)


def test_a_change_the_labels_show_no_effect_of_is_not_retrained_for(toy_config) -> None:
    """Drift alone opens the episode; its first retrain waits, besides the rows, until the
    champion's realized metric on the post-change batches (pooled) is away from its reference
    by more than `retrain.effect_sampling_errors` sampling errors, either way: a challenger has
    nothing to learn from a change the champion absorbs (gradual drift before it costs
    accuracy, a covariate shift); worse, the change cost accuracy; better, the world became
    easier and a model trained on it may gain more."""
    pol = _policy()
    state = _open(post_change_rows=2000)
    # The champion scores at its reference on the first post-change batch: no effect yet.
    even = decide(_labelled(toy_config, "2024-03-09", 0.80, drifted=2), state, pol)
    assert not even.retrain and even.blocked_by == "deferred"
    assert "1 post-change batch(es)" in even.reason and "retrain.effect_sampling_errors" in even.reason
    assert [r.batch for r in even.episode.realized] == ["2024-03-09"]
    seen = dataclasses.replace(state, episode=even.episode)
    # A second batch 0.01 worse: pooled 0.005 worse, within 2 pooled errors (0.0141).
    slight = decide(_labelled(toy_config, "2024-03-10", 0.79, drifted=2), seen, pol)
    assert not slight.retrain and "0.0050 worse" in slight.reason
    # 0.04 worse instead: pooled 0.02, beyond them; the retrain is requested.
    worse = decide(_labelled(toy_config, "2024-03-10", 0.76, drifted=2), seen, pol)
    assert worse.retrain and RETRAIN_REQUESTED in worse.events
    # 0.04 better: as far the other way; the retrain is requested too.
    better = decide(_labelled(toy_config, "2024-03-10", 0.84, drifted=2), seen, pol)
    assert better.retrain and better.episode.realized[-1].worse_by == pytest.approx(-0.04)
    # A batch from before the change point is no evidence about the change.
    before = decide(_labelled(toy_config, "2024-03-08", 0.80, drifted=2), state, pol)
    assert before.episode.realized == () and before.retrain
    # Switched off: the rows alone decide, as without any realized metric.
    assert decide(_labelled(toy_config, "2024-03-09", 0.80, drifted=2), state, _policy(effect_sampling_errors=None)).retrain
    # The evidence survives the ledger's round trip (the retrain flow reads it from there).
    back = Episode.from_dict(json.loads(json.dumps(slight.episode.to_dict())))
    assert back.realized == slight.episode.realized


def test_the_realized_evidence_is_the_champion_the_episode_opened_on(toy_config) -> None:
    """After the episode's retrain replaced its champion, realized metrics are of the new model:
    they are not pooled with the old one's (a retry does not weigh the loss again either)."""
    replaced = _open(post_change_rows=2000, champion="2")
    seen = decide(_labelled(toy_config, "2024-03-10", 0.80), replaced, _policy(settle_growth=None))
    assert seen.episode is None or seen.episode.realized == ()
    # A retry after a rejected attempt is paced by the evidence growth alone.
    retry = _open(post_change_rows=2400, attempts=(Attempt("2", "rejected", 1200),))
    assert decide(_labelled(toy_config, "2024-03-10", 0.80, drifted=2), retry, _policy()).retrain
