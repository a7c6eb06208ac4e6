"""The one start rule (`policy.check_start` / `decide_start`) and the state it is given
(`state.build_loop_state`), on a store in fsspec's memory filesystem."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from evergreen.adapters import io
from evergreen.adapters.ledger import BatchRecord
from evergreen.adapters.registry import VersionInfo
from evergreen.adapters.store import FileStore
from evergreen.config import ModelConfig, RetrainPolicyConfig
from evergreen.decisions import policy
from evergreen.decisions.episodes import Episode
from evergreen.loop import state

CFG = RetrainPolicyConfig(cooldown_hours=72, min_new_rows=100, max_retrains_per_period=2, period_days=30)


def _state(**kw) -> policy.LoopState:  # noqa: ANN003
    base = dict(
        now=pd.Timestamp("2019-01-20", tz="UTC"),
        last_retrain_clock=pd.Timestamp("2019-01-10", tz="UTC"),
        new_labelled_rows=500,
        retrains_in_period=0,
    )
    return policy.LoopState(**{**base, **kw})


def test_manual_always_goes() -> None:
    check = policy.check_start(_state(candidate_pending=True, new_labelled_rows=0), CFG, "manual")
    assert check.allowed and check.blocked_by is None


@pytest.mark.parametrize(
    ("changes", "blocker"),
    [
        ({"candidate_pending": True, "pending_reason": "canary v3 is under review"}, "candidate_pending"),
        ({"now": pd.Timestamp("2019-01-11", tz="UTC")}, "cooldown"),
        ({"new_labelled_rows": 99}, "min_new_rows"),
        ({"retrains_in_period": 2}, "budget"),
    ],
)
def test_each_blocker_holds_an_event_retrain_and_names_itself(changes: dict, blocker: str) -> None:
    check = policy.check_start(_state(**changes), CFG, "event")
    assert not check.allowed
    assert check.blocked_by == blocker
    assert check.reason.startswith(f"{blocker}: ")


def test_a_schedule_has_no_cooldown_but_every_other_blocker() -> None:
    assert policy.check_start(_state(now=pd.Timestamp("2019-01-11", tz="UTC")), CFG, "schedule").allowed
    assert policy.check_start(_state(new_labelled_rows=50), CFG, "schedule").blocked_by == "min_new_rows"
    # no new row at all is its own blocker (it was min_new_rows before issue 16)
    assert policy.check_start(_state(new_labelled_rows=0), CFG, "schedule").blocked_by == "no_new_data"
    assert policy.check_start(_state(retrains_in_period=5), CFG, "schedule").blocked_by == "budget"


def test_the_monitor_decision_uses_the_same_rule() -> None:
    """`decide` on an alerting chunk blocks with exactly what `check_start` says."""
    from evergreen.decisions.alerts import AlertDecision, AlertSignal

    signal = AlertSignal(
        kind="estimated_drop", metric="roc_auc", value=0.7, threshold=0.8,
        reason="estimated roc_auc dropped", rule="drop",
    )
    alerts = AlertDecision(
        model_name="m", drift_detected=False, performance_degraded=True, drifted_features=[],
        reasons=[signal.reason], signals=[signal],
    )
    obs = policy.ChunkObservation(chunk="2019-01-20", valid=True, alerts=alerts)
    # Inside an open episode whose post-change evidence is there: only the start rule is left.
    episode = Episode(id="2019-01-15", change_point=pd.Timestamp("2019-01-15", tz="UTC"), champion="1",
                      kinds=("performance",), last_alert="2019-01-19")
    loop_state = _state(new_labelled_rows=10, champion="1", episode=episode, post_change_rows=5000, post_change_needed=1000)
    decision = policy.decide(obs, loop_state, policy.Policy.named("default", CFG))
    start = policy.check_start(loop_state, CFG, "event")
    assert decision.alert and not decision.retrain
    assert decision.blocked_by == start.blocked_by == "min_new_rows"
    assert start.reason in decision.reason


class _Registry:
    name = "m"

    def __init__(self, versions: list[VersionInfo], aliases: dict[str, str]) -> None:
        self.versions, self.aliases = versions, aliases

    def list_versions(self) -> list[VersionInfo]:
        return self.versions

    def version_by_alias(self, alias: str) -> VersionInfo | None:
        v = self.aliases.get(alias)
        return next((x for x in self.versions if x.version == v), None)


def _version(n: int, clock: str, train_end: str, bootstrap: bool = False) -> VersionInfo:
    tags = {state.DATA_CLOCK_TAG: clock, state.TRAIN_END_TAG: train_end, state.BOOTSTRAP_TAG: str(bootstrap).lower()}
    return VersionInfo(name="m", version=str(n), run_id=None, source="", tags=tags)


def test_the_state_is_read_from_the_store_and_the_registry(toy_config) -> None:  # noqa: ANN001
    demo_config: ModelConfig = toy_config()
    root = f"memory://state-test-{uuid.uuid4().hex}"
    cfg = demo_config.model_copy(update={"data": demo_config.data.model_copy(update={"root": root})})
    cols = cfg.columns
    store = FileStore(cfg)
    for day, n in (("2019-01-01", 50), ("2019-01-02", 60), ("2019-01-03", 70)):
        ids = [f"{day}-{i}" for i in range(n)]
        frame = pd.DataFrame({cols.id: ids, cols.timestamp: pd.date_range(day, periods=n, freq="min")})
        io.write_table(frame, f"{cfg.data.path('batches')}/{day}.parquet")
        if day != "2019-01-03":  # the last batch's labels have not arrived
            io.write_table(pd.DataFrame({cols.id: ids, cols.target: 1}), f"{cfg.data.path('labels')}/{day}.parquet")
    store.record_batch(BatchRecord(day="2019-01-01", path="a", valid=True, signals=["feature_drift"]))
    store.record_batch(BatchRecord(day="2019-01-02", path="b", valid=False, message="bad"))
    registry = _Registry(
        [_version(1, "2018-12-31", "2018-12-30", bootstrap=True), _version(2, "2019-01-01T12:00", "2019-01-01T00:10")],
        {"canary": "2"},
    )
    now = state.data_clock(cfg, store)
    assert now == pd.Timestamp("2019-01-03 01:09", tz="UTC")
    got = state.build_loop_state(cfg, store, registry, now, day="2019-01-03")
    # 2019-01-01 after 00:10: 39 labelled rows; 2019-01-02 was rejected; 2019-01-03 unlabelled
    assert got.new_labelled_rows == 39
    assert got.retrains_in_period == 1  # the bootstrap version does not count
    assert got.last_retrain_clock == pd.Timestamp("2019-01-01 12:00", tz="UTC")
    assert got.candidate_pending and "canary v2" in got.pending_reason
    assert got.history == () or got.history[-1] == ()  # hysteresis 1 of 1 keeps no history


def test_a_cooldown_in_batches_counts_batches_received_since_the_retrain() -> None:
    cfg = RetrainPolicyConfig(cooldown_batches=3)
    held = policy.check_start(_state(chunks_since_retrain=2), cfg, "event")
    assert held.blocked_by == "cooldown" and "retrain.cooldown_batches=3" in held.reason
    assert "1 more batch" in held.reason
    assert policy.check_start(_state(chunks_since_retrain=3), cfg, "event").allowed
    assert policy.check_start(_state(chunks_since_retrain=0), cfg, "schedule").allowed  # no cooldown for a schedule
    # hours of data no longer count once the cooldown is given in batches
    assert policy.check_start(_state(now=pd.Timestamp("2019-01-10 01:00", tz="UTC"), chunks_since_retrain=5), cfg, "event").allowed


def test_no_new_data_names_the_version_and_what_to_wait_for() -> None:
    check = policy.check_start(
        _state(new_labelled_rows=0, newest_version="4", seen_until=pd.Timestamp("2019-01-09", tz="UTC")), CFG, "event"
    )
    assert check.blocked_by == "no_new_data"
    assert "v4" in check.reason and "2019-01-09" in check.reason and "data.label_delay_days" in check.reason
    # a person's retrain is not held (changed settings); the same-data check catches a duplicate
    assert policy.check_start(_state(new_labelled_rows=0), CFG, "manual").allowed


def test_the_same_data_check_compares_digest_and_settings() -> None:
    known = [policy.TrainedVersion("3", "abc", "s1"), policy.TrainedVersion("2", "def", None, "the champion")]
    same = policy.check_new_data("abc", "s1", known)
    assert not same.allowed and same.blocked_by == "same_data" and "v3" in same.reason
    assert policy.check_new_data("abc", "s2", known).allowed  # other settings: another model
    old = policy.check_new_data("def", "s9", known)  # no settings recorded: the data decides
    assert old.blocked_by == "same_data" and "v2 (the champion)" in old.reason
    assert policy.check_new_data("xyz", "s1", known).allowed


def test_batches_since_the_retrain_are_read_from_the_store(toy_config) -> None:  # noqa: ANN001
    base: ModelConfig = toy_config()
    root = f"memory://batches-since-{uuid.uuid4().hex}"
    cfg = base.model_copy(
        update={
            "data": base.data.model_copy(update={"root": root}),
            "retrain": RetrainPolicyConfig(cooldown_batches=2),
        }
    )
    cols = cfg.columns
    for day in ("2019-01-01", "2019-01-02", "2019-01-03", "2019-01-04"):
        frame = pd.DataFrame({cols.id: [f"{day}-{i}" for i in range(5)], cols.timestamp: pd.date_range(day, periods=5, freq="h")})
        io.write_table(frame, f"{cfg.data.path('batches')}/{day}.parquet")
    store = FileStore(cfg)
    registry = _Registry([_version(1, "2019-01-02T04:00", "2019-01-02T00:00")], {})
    now = state.data_clock(cfg, store)
    got = state.build_loop_state(cfg, store, registry, now)
    assert got.chunks_since_retrain == 2  # 01-03 and 01-04 came after the version's data clock
    assert got.newest_version == "1"
    # the cooldown of 2 batches has passed; no labels have arrived, so nothing is new yet
    assert policy.check_start(got, cfg.retrain, "event").blocked_by == "no_new_data"
    assert state.count_batches_after(cfg, store, pd.Timestamp("2019-01-03T05:00", tz="UTC")) == 1


def test_an_episode_retrain_waits_for_two_batches_of_the_new_world(toy_config) -> None:  # noqa: ANN001
    """The evidence an episode's retrain waits for: twice the gate's minimum, and at least two
    batches (the change may begin anywhere inside the first alerting batch); an explicit
    `retrain.min_post_change_rows` wins."""
    from evergreen.decisions.defaults import gate_min_rows
    from evergreen.loop.state import post_change_needed

    small = toy_config()  # 100-row batches: the gate's minimum (200) rules
    assert gate_min_rows(small) == 200 and post_change_needed(small) == 400
    big = small.model_copy(update={"data": small.data.model_copy(update={"rows_per_batch": 2500})})
    assert gate_min_rows(big) == 500 and post_change_needed(big) == 5000
    given = big.model_copy(update={"retrain": big.retrain.model_copy(update={"min_post_change_rows": 1000})})
    assert post_change_needed(given) == 1000
