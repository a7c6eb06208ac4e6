"""`python -m bench scale`: its verdicts and table (pure helpers), and one tiny run of each
variant in fresh processes (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale_bench import (
    ScaleResult,
    ScaleRun,
    format_table,
    measure_size,
    update_markdown,
    verdicts,
)


def _run(flow: str, path: str, rows: int, work: float, rss: float) -> ScaleRun:
    return ScaleRun(flow, path, rows, work, rss, 400.0, work, {})


def test_verdicts_judge_memory_growth_and_the_bounded_path_on_medians() -> None:
    runs = [
        _run("monitor", "bounded", 1_000_000, 10.0, 1500),
        _run("monitor", "in-memory", 1_000_000, 9.0, 1800),
        _run("monitor", "streamed", 1_000_000, 12.0, 1100),
        _run("monitor", "bounded", 10_000_000, 100.0, 2900),
        _run("monitor", "bounded", 10_000_000, 120.0, 3000),
        _run("retrain", "bounded", 1_000_000, 10.0, 1000),
        _run("retrain", "bounded", 10_000_000, 130.0, 3100),
    ]
    v = verdicts(runs, 1_000_000)
    assert v["monitor: peak RSS at 10,000,000 rows <= 3072 MB"] == {"value": 2950.0, "pass": True}
    assert v["monitor: time at 10M / time at 1M <= 11"] == {"value": 11.0, "pass": True}
    assert v["retrain: peak RSS at 10,000,000 rows <= 3072 MB"]["pass"] is False
    assert v["retrain: time at 10M / time at 1M <= 11"] == {"value": 13.0, "pass": False}
    assert v["monitor: bounded / in-memory wall at 1,000,000 rows <= 1.2"] == {"value": 1.111, "pass": True}
    assert v["monitor: streamed / in-memory wall at 1,000,000 rows <= 1.2"]["pass"] is False


def test_the_table_replaces_its_own_section_only(tmp_path: Path) -> None:
    runs = [_run("monitor", "bounded", 1_000, 1.0, 500), _run("retrain", "bounded", 1_000, 2.0, 600)]
    result = ScaleResult("cmd", "today", {"load_before": [1.0, 1.0, 1.0]}, [1_000], None, runs, {}, verdicts(runs, None), 60.0)
    assert "| retrain | bounded | 1,000 | 2.0 (1 run) | 600 |" in format_table(result)
    page = tmp_path / "B.md"
    page.write_text("# B\n\nkeep me\n", encoding="utf-8")
    update_markdown(page, result)
    update_markdown(page, result)
    text = page.read_text(encoding="utf-8")
    assert text.count("<!-- bench:scale:start -->") == 1 and "keep me" in text


@pytest.mark.slow
def test_the_bounded_and_in_memory_paths_run_alike_on_a_tiny_stream(tmp_path: Path) -> None:
    # "streamed" is the bounded path with data.memory_rows at 262,144: on 3,000 rows it would
    # run exactly as "bounded" (a minute of CI for nothing); the bench runs it at 1M rows.
    runs, _ = measure_size(tmp_path, 3_000, 7, ("bounded", "in-memory"), repeats=1, log=lambda _: None)
    assert {(r.flow, r.path) for r in runs} == {(f, p) for f in ("monitor", "retrain") for p in ("bounded", "in-memory")}
    digests = {r.outcome["dataset_digest"] for r in runs if r.flow == "retrain"}
    assert len(digests) == 1  # the same window, snapshotted the same by every path
    metrics = [r.outcome["metric"] for r in runs if r.flow == "retrain"]
    assert max(metrics) - min(metrics) <= 0.02
    verdict = {(r.path, r.outcome["drift_detected"]) for r in runs if r.flow == "monitor"}
    assert len({d for _, d in verdict}) == 1
