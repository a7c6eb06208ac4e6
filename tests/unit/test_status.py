"""The model's status page and the run pages (`evergreen.loop.status`): what a user reads in
the Prefect UI, built from the ledger and the registry alone."""

from __future__ import annotations

import json

import pytest

from evergreen.adapters.ledger import BatchLedger, BatchRecord
from evergreen.adapters.registry import AliasMove, VersionInfo
from evergreen.loop import status
from evergreen.reports import PromotionResult, RetrainResult

GATE = {
    "passed": True, "challenger_version": "2", "champion_version": "1", "metric": "roc_auc", "mode": "relative",
    "checks": [
        {"name": "relative_margin", "passed": True, "value": 0.912345, "threshold": 0.905, "detail": "challenger 0.9123 vs champion 0.9050"},
        {"name": "latency", "passed": True, "value": 3.2, "threshold": 50.0, "detail": "ms per 1000 rows"},
    ],
    "reasons": [], "skipped": ["calibration: regression"], "summary": "gate passed for version 2 against champion 1: 2 checks passed",
}


def _version(number: str, aliases: list[str], **tags: str) -> VersionInfo:
    return VersionInfo(name="car_loan", version=number, run_id=f"run{number}", source="s", aliases=aliases, tags=tags)


def _move(time: str, alias: str, frm: str | None, to: str | None, reason: str) -> AliasMove:
    return AliasMove(time=time, alias=alias, from_version=frm, to_version=to, reason=reason, actor="flow-run/x")


def _record(day: str, processed: str, **fields) -> BatchRecord:
    return BatchRecord(day=day, path=f"b/{day}.parquet", valid=fields.pop("valid", True), processed_at=processed, **fields)


@pytest.fixture
def story() -> status.ModelStory:
    versions = [
        _version("1", [], **{"evergreen.status": "retired", "evergreen.bootstrap": "true", "evergreen.dataset_rows": "5000"}),
        _version("2", ["champion"], **{
            "evergreen.status": "champion", "evergreen.dataset_rows": "7400", "evergreen.dataset_digest": "abcdef0123456789",
            "evergreen.window_end": "2019-01-12 23:00:00+00:00", "evergreen.trigger": "event",
            "evergreen.gate.results": json.dumps(GATE),
        }),
        _version("3", ["canary"], **{"evergreen.status": "canary", "evergreen.gate.results": json.dumps({**GATE, "challenger_version": "3"})}),
    ]
    history = [
        _move("2026-01-01T10:00:00+00:00", "champion", None, "1", "bootstrap: empty registry"),
        _move("2026-01-02T10:00:00+00:00", "challenger", None, "2", "retrained candidate"),
        _move("2026-01-02T10:01:00+00:00", "canary", None, "2", "gate passed"),
        _move("2026-01-02T11:00:00+00:00", "champion", "1", "2", "canary review: canary better by 0.01 (interval 0.004 to 0.02)"),
        _move("2026-01-03T10:00:00+00:00", "challenger", None, "3", "retrained candidate"),
        _move("2026-01-03T10:01:00+00:00", "canary", None, "3", "gate passed"),
    ]
    ledger = BatchLedger(
        batches={
            "2019-01-10": _record("2019-01-10", "2026-01-02T09:00:00+00:00", metric="roc_auc", estimated_metric=0.95, drift_share=0.0, decision="no_alert"),
            "2019-01-11": _record(
                "2019-01-11", "2026-01-02T09:30:00+00:00", metric="roc_auc", estimated_metric=0.81234567, realized_metric=0.8, realized_on="2019-01-09",
                drift_share=0.5, decision="retrain", policy="drift on 3 of 6 features; retrain requested",
                events=["evergreen.drift.detected"], drift_detected=True,
            ),
            "2019-01-12": _record("2019-01-12", "2026-01-03T09:00:00+00:00", valid=False, message="column car_value has 40% nulls"),
            "2019-01-13": _record("2019-01-13", "2026-01-03T09:30:00+00:00", decision="cooldown", policy="drift; held by the cooldown until 2019-01-14", drift_detected=True),
        },
        episode={"id": "2019-01-11", "change_point": "2019-01-11T00:00:00+00:00", "champion": "1", "kinds": ["drift"],
                 "last_alert": "2019-01-13", "quiet": 0, "open": True, "closed_reason": "", "requested": 1200},
    )
    return status.ModelStory(model="car_loan", metric="roc_auc", versions=versions, history=history, ledger=ledger)


def test_status_page_shows_champion_and_canary_with_how_they_got_there(story: status.ModelStory) -> None:
    page = status.status_markdown(story)
    assert page.startswith("# car_loan: champion v2, canary v3 under review, alert episode open since 2019-01-11")
    champion = next(line for line in page.splitlines() if line.startswith("| champion |"))
    assert "v2" in champion and "7400 rows" in champion and "data abcdef012345" in champion
    assert "2026-01-02 11:00:00" in champion and "canary review: canary better by 0.01" in champion
    assert "0.9123" in champion  # the gate's metric, rounded for people
    canary = next(line for line in page.splitlines() if line.startswith("| canary |"))
    assert "v3" in canary and "gate passed" in canary


def test_status_page_shows_the_open_episode(story: status.ModelStory) -> None:
    page = status.status_markdown(story)
    assert "**Open** drift episode, opened on batch 2019-01-11" in page
    assert "retrain requested with 1200 post-change labelled rows" in page


def test_decisions_are_newest_first_and_name_go_skip_gate_promotion_and_rejection(story: status.ModelStory) -> None:
    rows = status.last_decisions(story, 20)
    assert [r.time for r in rows] == sorted((r.time for r in rows), reverse=True)
    said = [(r.step, r.subject, r.decision) for r in rows]
    assert ("monitor", "batch 2019-01-13", "retrain: skip (cooldown)") in said
    assert ("monitor", "batch 2019-01-12", "batch rejected") in said
    assert ("monitor", "batch 2019-01-11", "retrain: go") in said
    assert ("retrain", "v3", "registered as challenger") in said
    assert ("promote", "v3", "gate passed: canary") in said
    assert ("canary-review", "v2", "promoted to champion") in said
    # a quiet batch is no decision; the bootstrap champion is one
    assert not any(r.subject == "batch 2019-01-10" for r in rows)
    cooldown = next(r for r in rows if r.subject == "batch 2019-01-13")
    assert "held by the cooldown" in cooldown.why
    assert len(status.last_decisions(story, 3)) == 3


def test_rollback_and_canary_rejection_read_as_decisions_with_their_reason(story: status.ModelStory) -> None:
    moves = [
        *story.history,
        _move("2026-01-04T10:00:00+00:00", "canary", "3", None, "canary review: canary worse by 0.03"),
        _move("2026-01-05T10:00:00+00:00", "champion", "2", "1", "rollback: performance degraded within a day of a promotion"),
    ]
    rows = status.last_decisions(status.ModelStory(**{**story.__dict__, "history": moves}), 2)
    assert (rows[0].step, rows[0].decision, rows[0].subject) == ("rollback", "rolled back", "v2 -> v1")
    assert rows[0].why == "performance degraded within a day of a promotion"
    assert (rows[1].step, rows[1].decision, rows[1].why) == ("canary-review", "canary rejected", "canary worse by 0.03")


def test_pending_alias_moves_are_not_decisions(story: status.ModelStory) -> None:
    pending = AliasMove("2026-01-09T00:00:00+00:00", "champion", "2", "3", "canary review: x", "a", state="pending")
    rows = status.last_decisions(status.ModelStory(**{**story.__dict__, "history": [*story.history, pending]}), 50)
    assert all(r.time != "2026-01-09 00:00:00" for r in rows)


def test_batches_table_newest_first_with_rounded_metrics_and_drift_share(story: status.ModelStory) -> None:
    page = status.status_markdown(story, batches=3)
    body = page.split("## Last batches")[1].splitlines()
    rows = [line for line in body if line.startswith("| 2019")]
    assert [r.split("|")[1].strip() for r in rows] == ["2019-01-13", "2019-01-12", "2019-01-11"]
    assert "0.8123" in rows[2] and "0.81234567" not in page
    assert "50%" in rows[2] and "0.8000 (2019-01-09)" in rows[2] and "drift.detected" in rows[2]
    assert "**rejected**" in rows[1]


def test_an_empty_model_says_so() -> None:
    page = status.status_markdown(status.ModelStory(model="m", metric="rmse"))
    assert page.startswith("# m: no champion yet")
    assert "No alert episode so far." in page and "No decision yet." in page and "No batch monitored yet." in page


def test_cells_with_pipes_and_newlines_keep_the_table_whole() -> None:
    lines = status.table(["a", "b"], [["x|y", "line\nbreak"]])
    assert lines[2] == "| x\\|y | line break |"


def test_fleet_row_and_unreadable_model(story: status.ModelStory) -> None:
    row = status.fleet_row("car-loan", story)
    assert row["champion"] == "v2" and row["canary"] == "v3" and row["episode"] == "open since 2019-01-11"
    assert row["last batch"] == "2019-01-13" and row["last decision"].startswith("promote: gate passed: canary")
    bad = status.fleet_row("other", None, "no such registered model")
    assert bad["state"] == "unreadable: no such registered model"


def test_history_page_newest_first_marks_unfinished_moves(story: status.ModelStory) -> None:
    moves = [*story.history, AliasMove("2026-01-09T00:00:00+00:00", "champion", "2", "3", "x", "cli", state="abandoned")]
    page = status.history_markdown("car_loan", moves)
    rows = [line for line in page.splitlines() if line.startswith("| 2026")]
    assert rows[0].startswith("| 2026-01-09 00:00:00 | champion | v2 | v3 |") and "x (abandoned)" in rows[0]
    assert rows[-1].startswith("| 2026-01-01 10:00:00 | champion | - | v1 |")
    assert "No alias has moved yet." in status.history_markdown("m", [])


def test_gate_page_lists_every_check_with_amounts() -> None:
    result = PromotionResult(model_name="car_loan", decision="passed", challenger="2", canary="2", champion="1", checks=GATE)
    page = status.gate_markdown(result, "v2 passed the gate; canary at 20% of traffic")
    assert page.startswith("# promote · car_loan: v2 passed")
    assert "| relative_margin | yes | 0.9123 | 0.9050 | challenger 0.9123 vs champion 0.9050 |" in page
    assert "| latency | yes | 3.2000 | 50.0000 |" in page and "calibration: regression" in page


def test_failed_gate_page_says_why() -> None:
    failed = {**GATE, "passed": False, "checks": [{**GATE["checks"][0], "passed": False}], "reasons": ["below the champion by 0.01"]}
    result = PromotionResult(model_name="car_loan", decision="failed", challenger="2", checks=failed, reasons=failed["reasons"])
    page = status.gate_markdown(result, "v2 rejected: below the champion by 0.01")
    assert "| relative_margin | **no** |" in page and "- below the champion by 0.01" in page


def test_canary_page_shows_counts_gain_interval_and_what_is_missing() -> None:
    evidence = {
        "outcome": "pending", "canary_version": "3", "champion_version": "2", "metric": "roc_auc", "margin": 0.01,
        "basis": "realized", "gain": 0.012, "gain_low": -0.004, "gain_high": 0.03,
        "needed": {"predictions": 0, "labels": 150, "champion_labels": 0},
        "canary": {"alias": "canary", "version": "3", "n_predictions": 800, "n_labelled": 50, "realized_metric": 0.91},
        "champion": {"alias": "champion", "version": "2", "n_predictions": 3200, "n_labelled": 400, "realized_metric": 0.9},
    }
    result = PromotionResult(model_name="car_loan", decision="pending", canary="3", champion="2", checks=evidence, reasons=["50 of 200 labels"])
    page = status.canary_markdown(result, "not enough evidence yet: 50 of 200 labels")
    assert page.startswith("# canary-review · car_loan: v3 awaiting evidence")
    assert "| canary | v3 | 800 | 50 | 0.9100 |" in page and "| champion | v2 | 3200 | 400 | 0.9000 |" in page
    assert "0.0120 (interval -0.0040 to 0.0300)" in page
    assert "Still needed: labels 150" in page


def test_retrain_page_shows_version_data_and_metrics_or_the_blocker() -> None:
    done = RetrainResult(
        model_name="car_loan", status="registered", version="4", rows=7400, dataset_digest="abc", metrics={"roc_auc": 0.912345},
        trigger={"kind": "event", "reason": "drift"}, aliases=["challenger"], message="registered v4 as challenger",
    )
    page = status.retrain_markdown(done)
    assert page.startswith("# retrain · car_loan: registered v4")
    assert "| version | v4 |" in page and "| training rows | 7400 |" in page and "| roc_auc | 0.9123 |" in page
    skipped = RetrainResult(model_name="car_loan", status="skipped", blocked_by="cooldown", message="cooldown: 3 h left")
    page = status.retrain_markdown(skipped)
    assert page.startswith("# retrain · car_loan: skipped (cooldown)") and "| held by | cooldown |" in page


def test_rollback_page_gives_the_reason() -> None:
    result = PromotionResult(model_name="car_loan", decision="rolled_back", champion="1", reasons=["manual: bad release"])
    page = status.rollback_markdown(result, "champion rolled back from v2 to v1: manual: bad release")
    assert page.startswith("# rollback · car_loan: champion now v1") and "- manual: bad release" in page


def test_read_story_resolves_aliases_the_version_search_leaves_out(story: status.ModelStory) -> None:
    """MLflow's version search returns versions without their aliases: the story asks the
    registry where each alias points."""

    class Registry:
        def list_versions(self) -> list[VersionInfo]:
            return [VersionInfo(v.name, v.version, v.run_id, v.source, [], v.tags) for v in story.versions]

        def version_by_alias(self, alias: str) -> VersionInfo | None:
            return next((v for v in story.versions if alias in v.aliases), None)

        def alias_history(self) -> list[AliasMove]:
            return story.history

    class Store:
        def read_ledger(self) -> BatchLedger:
            return story.ledger

    read = status.read_story("car_loan", "roc_auc", Store(), Registry())  # type: ignore[arg-type]
    assert read.aliases == {"champion": "2", "canary": "3"}
    assert status.model_state(read).startswith("champion v2, canary v3 under review")


def test_the_fleet_overview_refreshes_one_row_per_run_and_keeps_the_others() -> None:
    previous = [
        {"model": "a", "state": "serving v3", "champion": "v3", "canary": "-", "episode": "-", "last batch": "2024-01-02", "last decision": "-"},
        {"model": "gone", "state": "serving v1", "champion": "v1", "canary": "-", "episode": "-", "last batch": "-", "last decision": "-"},
        "not a row",
    ]
    own = {"model": "b", "state": "canary v2", "champion": "v1", "canary": "v2", "episode": "-", "last batch": "2024-01-05", "last decision": "gate: passed"}
    rows = status.merge_fleet(previous, ["a", "b", "c"], own)
    assert [r["model"] for r in rows] == ["a", "b", "c"]  # unregistered `gone` left, sorted
    assert rows[0]["champion"] == "v3"  # another model's row kept as its own run wrote it
    assert rows[1] == own
    assert rows[2]["state"] == "no run since the overview began"
    # A run of a model that is not registered (a YAML path) still shows itself.
    alone = status.merge_fleet([], [], {**own, "model": "b (not registered)"})
    assert [r["model"] for r in alone] == ["b (not registered)"]


def test_a_settling_episode_says_its_replacement_and_the_refresh_to_come() -> None:
    text = status.episode_sentence(
        {"id": "2019-01-09", "kinds": ["drift"], "champion": "3", "open": True, "last_alert": "2019-01-12",
         "settling_from": 5000, "change_point": "2019-01-09T00:00:00+00:00"}
    )
    assert "settling: its retrain v3 replaced the champion with 5000 post-change labelled rows" in text


def test_a_waiting_episode_says_how_far_its_champion_is_from_its_reference() -> None:
    """The retrain of an open episode waits for a loss the labels show; the status says how far
    the champion's realized metric on the post-change batches is from its reference."""
    text = status.episode_sentence(
        {"id": "2019-01-09", "kinds": ["drift"], "champion": "1", "open": True, "last_alert": "2019-01-12",
         "change_point": "2019-01-09T00:00:00+00:00",
         "realized": [["2019-01-09", 1000, 0.004, 0.01], ["2019-01-10", 1000, -0.002, 0.01]]}
    )
    assert "realized metric on 2 post-change batch(es) is 0.0010 worse than its reference (sampling error 0.0071)" in text
