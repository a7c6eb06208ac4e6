"""Flow run names: `<flow> · <model> · <subject>`, from the parameters when a run starts and
from its result once it knows what it did (tasks/runs.py `run_name`)."""

from __future__ import annotations

from typing import Any

import pytest

from evergreen.reports import MonitorResult, PromotionResult, RetrainResult
from tasks.runs import run_name, run_name_patterns

CAR = {"config": "car-loan"}


@pytest.mark.parametrize(
    ("flow", "parameters", "name"),
    [
        ("monitor", {**CAR, "batch": "/data/batches/2019-01-11.parquet"}, "monitor · car-loan · 2019-01-11"),
        ("monitor", CAR, "monitor · car-loan · pending"),
        ("retrain", {**CAR, "trigger": "event"}, "retrain · car-loan · event"),
        ("retrain", CAR, "retrain · car-loan · manual"),
        ("promote", {**CAR, "version": "3"}, "promote · car-loan · v3"),
        ("promote", CAR, "promote · car-loan · challenger"),
        ("canary-review", CAR, "canary-review · car-loan · canary"),
        ("rollback", {**CAR, "to_version": "2"}, "rollback · car-loan · to v2"),
        ("rollback", CAR, "rollback · car-loan · previous"),
        ("bootstrap", CAR, "bootstrap · car-loan · first champion"),
        ("bootstrap", {**CAR, "model": "models:/x/1"}, "bootstrap · car-loan · import"),
        ("retrain", {}, "retrain · no-model · manual"),
        ("retrain", {"config": {"name": "Car Loan"}}, "retrain · car-loan · manual"),
        ("fan-out", {"deployment": "monitor/monitor"}, "fan-out · every-model · monitor"),
        ("fan-out", {"deployment": "retrain/retrain", "config": "car-loan"}, "fan-out · car-loan · retrain"),
    ],
)
def test_a_run_starts_named_by_model_and_subject(flow: str, parameters: dict[str, Any], name: str) -> None:
    assert run_name(flow, parameters) == name


def _retrain(status: str, **fields: Any) -> RetrainResult:  # noqa: ANN401
    return RetrainResult(model_name="car-loan", status=status, **fields)


@pytest.mark.parametrize(
    ("result", "subject"),
    [
        (_retrain("registered", version="3"), "v3"),
        (_retrain("skipped", blocked_by="deferred"), "deferred"),
        (_retrain("skipped", blocked_by="cooldown"), "skipped (cooldown)"),
        (_retrain("skipped", blocked_by="in_flight"), "skipped (in flight)"),
        (_retrain("skipped", blocked_by="same_data"), "skipped (same data)"),
        (_retrain("skipped"), "skipped"),
        (_retrain("rejected"), "data rejected"),
    ],
)
def test_a_retrain_ends_named_by_the_version_it_registered_or_what_it_did(result: RetrainResult, subject: str) -> None:
    assert run_name("retrain", {**CAR, "trigger": "event"}, result) == f"retrain · car-loan · {subject}"


def test_a_bootstrap_ends_named_by_its_version() -> None:
    assert run_name("bootstrap", CAR, _retrain("registered", version="1")) == "bootstrap · car-loan · v1"
    skipped = _retrain("skipped", blocked_by="champion_exists")
    assert run_name("bootstrap", CAR, skipped) == "bootstrap · car-loan · skipped (champion exists)"


@pytest.mark.parametrize(
    ("flow", "result", "subject"),
    [
        ("promote", PromotionResult(model_name="m", decision="passed", challenger="4"), "v4"),
        ("promote", PromotionResult(model_name="m", decision="failed", checks={"challenger_version": "5"}), "v5"),
        ("promote", PromotionResult(model_name="m", decision="skipped"), "skipped"),
        ("canary-review", PromotionResult(model_name="m", decision="pending", canary="4"), "v4"),
        ("canary-review", PromotionResult(model_name="m", decision="promoted", checks={"canary_version": "4"}), "v4"),
        ("canary-review", PromotionResult(model_name="m", decision="skipped", reasons=["no canary"]), "no canary"),
        ("rollback", PromotionResult(model_name="m", decision="rolled_back", champion="2"), "to v2"),
        ("rollback", PromotionResult(model_name="m", decision="unchanged", champion="3"), "unchanged"),
    ],
)
def test_promote_canary_review_and_rollback_end_named_by_their_version(flow: str, result: PromotionResult, subject: str) -> None:
    assert run_name(flow, CAR, result) == f"{flow} · car-loan · {subject}"


def _monitored(*days: str) -> list[MonitorResult]:
    return [MonitorResult(model="car-loan", batch_id=d, batch_path=f"/b/{d}.parquet", valid=True) for d in days]


@pytest.mark.parametrize(
    ("days", "subject"),
    [((), "nothing new"), (("2019-01-11",), "2019-01-11"), (("2019-01-11", "2019-01-12", "2019-01-13"), "2019-01-11 to 2019-01-13")],
)
def test_a_pending_monitor_ends_named_by_the_batches_it_went_through(days: tuple[str, ...], subject: str) -> None:
    assert run_name("monitor", CAR, _monitored(*days)) == f"monitor · car-loan · {subject}"


def test_a_result_of_another_flow_leaves_the_start_name() -> None:
    parameters = {**CAR, "batch": "2019-01-11.parquet"}
    assert run_name("monitor", parameters, _retrain("registered", version="3")) == "monitor · car-loan · 2019-01-11"
    assert run_name("retrain", CAR, _monitored("2019-01-11")) == "retrain · car-loan · manual"


def test_the_name_patterns_match_the_models_runs_and_no_other_models() -> None:
    from prefect.events.schemas.events import matches

    patterns = run_name_patterns("car-loan")
    ours = [run_name(f, {**CAR, "trigger": "event"}) for f in ("monitor", "retrain", "promote", "canary-review", "rollback", "bootstrap")]
    ours.append(run_name("retrain", CAR, _retrain("registered", version="3")))
    theirs = [run_name("retrain", {"config": "car-loan-b"}), run_name("fan-out", {"deployment": "monitor/monitor", "config": "car-loan"})]
    assert all(any(matches(p, n) for p in patterns) for n in ours), ours
    assert not any(matches(p, n) for p in patterns for n in theirs), theirs
