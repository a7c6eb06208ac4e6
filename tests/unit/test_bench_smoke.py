"""The benchmark harness: pure helpers (fast) and a tiny-size smoke run of each benchmark's
measurement function (slow: fresh processes importing GX/NannyML/MLflow, a Prefect server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS, prepare, select
from bench.common import (
    STEPS_WALL,
    BenchResult,
    Measurement,
    StepTimer,
    compare_outcomes,
    load_results,
    measure,
    prefect_server,
    render_markdown,
    summarize,
    synthetic_frame,
    union_seconds,
    update_markdown,
)

SMOKE_ROWS = 2_000


def _m(variant: str, round_: int, work: float, rss: float, **outcome: object) -> Measurement:
    return Measurement(
        variant=variant,
        round=round_,
        work_seconds=work,
        process_seconds=work + 30,
        import_seconds=29.0,
        peak_rss_mb=rss,
        import_rss_mb=rss / 2,
        ru_maxrss_mb=rss,
        late_imports=0,
        outcome=dict(outcome),
    )


def test_summarize_takes_medians_of_one_variant() -> None:
    runs = [
        _m("flow", 0, 10.0, 900),
        _m("baseline", 0, 1.0, 1),
        _m("flow", 1, 30.0, 700),
        _m("flow", 2, 11.0, 800),
    ]
    s = summarize("flow", runs)
    assert (s.runs, s.work_seconds, s.peak_rss_mb, s.process_seconds) == (3, 11.0, 800, 41.0)
    with pytest.raises(ValueError, match="'core'"):
        summarize("core", runs)


@pytest.mark.parametrize(
    ("second", "consistent"),
    [
        ({"rows": 5, "auc": 0.8}, True),
        ({"rows": 5, "auc": 0.8 + 1e-12}, True),
        ({"rows": 6, "auc": 0.8}, False),
    ],
)
def test_compare_outcomes_flags_variants_that_did_different_work(
    second: dict, consistent: bool
) -> None:
    ok, note = compare_outcomes(
        [_m("baseline", 0, 1, 1, rows=5, auc=0.8), _m("flow", 0, 1, 1, **second)], ("rows", "auc")
    )
    assert ok is consistent
    if not consistent:
        assert "rows" in note and "flow" in note


def test_union_seconds_counts_overlaps_once() -> None:
    assert union_seconds([]) == 0.0
    assert union_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.7)]) == pytest.approx(4.0)


def test_step_timer_reports_steps_that_ran_side_by_side_once() -> None:
    import threading
    import time

    step = StepTimer()
    both = threading.Barrier(2)

    def work(name: str) -> None:
        with step(name):
            both.wait()
            time.sleep(0.2)

    other = threading.Thread(target=work, args=("a",))
    other.start()
    work("b")
    other.join()
    seconds = step.seconds
    assert seconds["a"] >= 0.2 and seconds["b"] >= 0.2
    assert 0.2 <= seconds[STEPS_WALL] < seconds["a"] + seconds["b"] - 0.1


def test_select_names_unknown_benchmarks() -> None:
    assert [b.name for b in select(None)] == ["monitor", "retrain"]
    assert [b.name for b in select(["retrain", "retrain"])] == ["retrain"]
    with pytest.raises(ValueError, match="nope"):
        select(["nope"])


def test_synthetic_frame_has_20_features_a_signal_and_is_seeded() -> None:
    a, b = (
        synthetic_frame(3000, 1, "2024-01-01", days=2),
        synthetic_frame(3000, 1, "2024-01-01", days=2),
    )
    assert a.equals(b)
    features = [c for c in a.columns if c not in ("id", "timestamp", "target")]
    assert len(features) == 20
    assert a["id"].is_unique and a["timestamp"].is_monotonic_increasing
    # The target follows num_00 (coefficient 1.2 in the logit): the top quartile is positive far more often.
    high = a["target"][a["num_00"] > a["num_00"].quantile(0.75)].mean()
    low = a["target"][a["num_00"] < a["num_00"].quantile(0.25)].mean()
    assert high - low > 0.3


def test_update_markdown_replaces_only_its_section(tmp_path: Path) -> None:
    runs = [_m("baseline", 0, 10.0, 100, rows=1), _m("flow", 0, 11.0, 110, rows=1)]
    from bench.common import machine_info

    result = BenchResult(
        name="monitor",
        rows=1000,
        features=20,
        rounds=1,
        target=1.15,
        baseline="baseline",
        flow="flow",
        measurements=runs,
        summaries={v: summarize(v, runs) for v in ("baseline", "flow")},
        ratios={"work_seconds": 1.1, "process_seconds": 1.05, "peak_rss_mb": 1.1},
        passed=True,
        consistent=True,
        consistency_note="all runs agree on rows",
        machine=machine_info(),
        command="uv run python -m bench monitor",
        date="2024-01-01 00:00 UTC",
        seconds=1.0,
    )
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(
        "# Bench\n\nintro\n\n<!-- bench:monitor:start -->\nold\n<!-- bench:monitor:end -->\n\nfindings\n"
    )
    update_markdown(md, [result])
    text = md.read_text()
    assert (
        "old" not in text
        and text.startswith("# Bench\n\nintro")
        and text.rstrip().endswith("findings")
    )
    assert "| wall time of the work (s) | 10.00 | 11.00 | 1.100 | <= 1.15 | pass |" in text
    assert "`uv run python -m bench monitor`" in text

    # Results saved as JSON come back identical (`--from-json` re-renders them).
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps([result.to_dict()]))
    assert load_results(saved) == [result]


@pytest.fixture(scope="module")
def smoke_setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bench")
    dataset = prepare(root / "dataset", SMOKE_ROWS, seed=1, log=lambda _: None)
    with prefect_server(root / "prefect") as server:
        yield root, dataset, server


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", ["monitor", "retrain"])
def test_measure_runs_both_variants_and_reports_medians_and_ratios(smoke_setup, name: str) -> None:
    root, dataset, server = smoke_setup
    result = measure(
        BENCHMARKS[name],
        dataset,
        root / "runs",
        rounds=1,
        server=server,
        command="smoke",
        log=lambda _: None,
    )

    variants = [v.name for v in BENCHMARKS[name].variants]
    assert (result.name, result.rows, result.features, result.rounds) == (name, SMOKE_ROWS, 20, 1)
    assert [m.variant for m in result.measurements] == variants
    assert variants[:2] == ["baseline", "flow"]
    for m in result.measurements:
        assert 0 < m.work_seconds < m.process_seconds
        assert m.import_seconds > 0
        assert m.peak_rss_mb >= m.import_rss_mb > 0
        assert m.work_cpu_seconds > 0 and m.server_cpu_seconds >= 0
    assert set(result.summaries) == set(variants)
    same_work = {"same_work_work_seconds", "same_work_peak_rss_mb"} if len(variants) == 3 else set()
    assert set(result.ratios) == {"work_seconds", "process_seconds", "peak_rss_mb", *same_work}
    assert all(r > 0 for r in result.ratios.values())
    # Both variants did the same work on the same data (same rows, same verdicts/metric).
    assert result.consistent, result.consistency_note
    assert result.measurements[0].outcome["rows"] > 0
    # Per-step times: the baseline's timers and the flow's task runs read back from Prefect.
    baseline, flow, *others = result.measurements
    assert baseline.steps and all(v >= 0 for v in baseline.steps.values())
    assert set(baseline.steps) < set(flow.steps), (baseline.steps, flow.steps)
    for other in others:  # the flow's work without Prefect: the flow's steps, timed directly
        assert set(other.steps) <= set(flow.steps), (other.steps, flow.steps)
        assert {"validate-batch", "snapshot-training-data", "check-label-files"} <= set(other.steps)
        # Its validation ran beside the snapshot: the steps' union is shorter than their sum.
        assert other.steps[STEPS_WALL] < sum(v for k, v in other.steps.items() if k != STEPS_WALL)
    md = render_markdown(result)
    assert "| peak RSS (MB) |" in md
    if others:
        assert "same-work (info) | flow / same-work |" in md
