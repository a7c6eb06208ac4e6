"""The policy benchmark's pure parts: figures read off a backtest result, the verdicts and the
generated BENCHMARKS.md blocks (the streams and backtests themselves are in test_backtest)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.policy_bench import figures, render_markdown, update_markdown, verdicts
from evergreen.apps.backtest import ChunkRow, PolicyResult


def _chunks(
    metrics: list[float], retrain_at: tuple[int, ...] = (), alert_at: tuple[int, ...] = ()
) -> list[ChunkRow]:
    return [
        ChunkRow(
            index=i,
            chunk=f"2024-01-{i + 1:02d}",
            start=None,
            end=None,
            rows=100,
            serving_version="1",
            valid=True,
            validation="",
            drifted_features=[],
            drifted_share=0.0,
            multivariate=None,
            estimated_metric=m,
            realized_metric=m,
            realized_signal=None,
            fired=[],
            alert=i in alert_at,
            events=[],
            decision="retrain" if i in retrain_at else "none",
            reason="",
        )
        for i, m in enumerate(metrics)
    ]


def _policy(name: str, metrics: list[float], retrains: int, **marks) -> PolicyResult:  # noqa: ANN003
    chunks = _chunks(metrics, **marks)
    return PolicyResult(
        name=name,
        settings={},
        mean_metric=sum(metrics) / len(metrics),
        worst_metric=min(metrics),
        retrains=retrains,
        promotions=retrains,
        rollbacks=0,
        gate_failures=0,
        rejected_windows=0,
        alerts=sum(c.alert for c in chunks),
        wall_seconds=1.0,
        seconds_by_step={},
        chunks=chunks,
    )


def _result(drift: str = "covariate") -> tuple[SimpleNamespace, SimpleNamespace]:
    before, after = [0.84] * 4, [0.80] * 4
    policies = {
        "default": _policy(
            "default", before + [0.80, 0.80, 0.83, 0.83], 1, retrain_at=(5,), alert_at=(4, 5)
        ),
        "never": _policy("never", before + after, 0),
        "always": _policy(
            "always", before + [0.80, 0.81, 0.83, 0.84], 8, retrain_at=tuple(range(8))
        ),
        "schedule:7": _policy("schedule:7", before + after, 1, retrain_at=(6,)),
    }
    result = SimpleNamespace(policies=policies, seconds=12.0, stream={"label_delay_chunks": 1})
    info = SimpleNamespace(
        drift=drift, drift_start_index=None if drift == "none" else 4, rows_per_batch=100
    )
    return result, info


def test_figures_read_the_acceptance_measures() -> None:
    f = figures("abrupt", *_result())
    assert f.shift_cost == pytest.approx(0.04)
    assert f.alert_delay == 0 and f.detection_delay == 1
    assert f.retrains_vs_always == pytest.approx(1 / 8)
    assert f.mean_vs_always == pytest.approx(
        (4 * 0.84 + 0.80 * 2 + 0.83 * 2) / (4 * 0.84 + 0.80 + 0.81 + 0.83 + 0.84)
    )
    assert f.false_alarms is None
    # always gained nothing over never before the change (both served the first model there)
    assert f.always_before_change == pytest.approx(0.0)
    early = _result()
    early[0].policies["always"] = _policy("always", [0.85] * 4 + [0.80, 0.81, 0.83, 0.84], 8, retrain_at=tuple(range(8)))
    # gains over never: 0.01 on each of 4 chunks before the change, 0 + 0.01 + 0.03 + 0.04 after
    assert figures("abrupt", *early).always_before_change == pytest.approx(0.04 / 0.12)
    none = figures("none", *_result("none"))
    assert none.false_alarms == 1 and none.shift_cost is None and none.detection_delay is None


def test_verdicts_name_each_target() -> None:
    figs = [vars(figures("abrupt", *_result())), vars(figures("none", *_result("none")))]
    lines = "\n".join(verdicts(figs))
    # recovery = (default - never) / (always - never) = (0.8275 - 0.82) / (0.83 - 0.82)
    assert "recovery >= 0.9 where retraining helps: **fail** (abrupt 0.75)" in lines
    assert "retrains <= 0.15 x always: **pass** (highest 0.12, abrupt)" in lines
    # alerted on the change's chunk, but no promotion: the champion was never replaced
    assert "label delay + 3 = 4 chunks: **fail** (0 chunks, —)" in lines
    assert "none: zero retrains, zero alert episodes: **fail** (1 retrains, 0 episodes)" in lines


def test_markdown_blocks_replace_only_their_own_part(tmp_path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## monitor\n\nkept\n", encoding="utf-8")
    acceptance = {
        "figures": [vars(figures("abrupt", *_result()))],
        "machine": {"nproc": 2, "load_before": (1.0, 1.0, 1.0), "load_after": (2.0, 2.0, 2.0)},
        "settings": {"chunks": 8, "rows": 100, "drift_start": 4},
        "seconds": 120.0,
    }
    update_markdown(doc, render_markdown(acceptance, None, "cmd one"), "acceptance")
    update_markdown(doc, "speed block", "speed")
    update_markdown(doc, render_markdown(acceptance, None, "cmd two"), "acceptance")
    text = doc.read_text(encoding="utf-8")
    assert "kept" in text and "speed block" in text
    assert "cmd two" in text and "cmd one" not in text
    assert (
        text.count("<!-- bench:policy:start -->") == 1
        and text.count("<!-- bench:policy-speed:start -->") == 1
    )
    assert "| abrupt | 4.0 pts | 0.8275 / 0.8200 / 0.8300 / 0.8200 | **0.75** | 0% | 1 / 8 |" in text


def test_runs_side_by_side_merge_into_one_report() -> None:
    from bench.policy_bench import merge_saved

    def run(stream: str, seconds: float, when: str) -> dict:
        fig = vars(figures(stream, *_result("none" if stream == "none" else "covariate")))
        fig["stream"] = stream
        acc = {
            "figures": [fig],
            "tables": {stream: "t"},
            "machine": {},
            "settings": {},
            "seconds": seconds,
        }
        return {"acceptance": acc, "command": f"bench {stream}", "measured_at": when}

    merged = merge_saved(
        [run("none", 10.0, "2026-01-01 10:00 UTC"), run("abrupt", 30.0, "2026-01-01 11:00 UTC")]
    )
    assert [f["stream"] for f in merged["acceptance"]["figures"]] == ["abrupt", "none"]
    assert merged["acceptance"]["seconds"] == 30.0 and set(merged["acceptance"]["tables"]) == {
        "none",
        "abrupt",
    }
    assert (
        merged["command"] == "`bench none` and `bench abrupt`"
        and merged["measured_at"] == "2026-01-01 11:00 UTC"
    )
    assert "with `bench none` and `bench abrupt`." in render_markdown(
        merged["acceptance"]
        | {
            "machine": {"nproc": 2, "load_before": 1},
            "settings": {"chunks": 8, "rows": 100, "drift_start": 4},
        },
        None,
        merged["command"],
    )
