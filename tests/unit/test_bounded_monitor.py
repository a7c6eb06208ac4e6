"""A batch validated and monitored in pieces gives what it gives whole: GX's report with
the same counts and failures (`validate_chunks`), NannyML's figures merged over the pieces
with the same verdicts (`compute_monitor_chunks`), exactly the same chunks and figures when
`monitoring.chunk_size` is set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.common import bench_config, synthetic_frame
from evergreen.decisions.alerts import decide_alerts
from evergreen.engines import monitoring, validation

NOW = pd.Timestamp("2025-01-01", tz="UTC")


def _chunks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


def _scored(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The serving model's outputs: a noisy probability of the known logit's sign."""
    rng = np.random.default_rng(seed)
    proba = np.clip(0.5 + 0.35 * (2 * frame["target"] - 1) + rng.normal(0, 0.25, len(frame)), 0.001, 0.999)
    return frame.assign(y_pred_proba=proba, y_pred=(proba >= 0.5).astype(np.int64), model_version="1")


@pytest.fixture(scope="module")
def world():
    cfg = bench_config("/tmp/unused", 5_000)
    reference = _scored(synthetic_frame(20_000, 1, "2023-12-01", days=20), 1)
    return cfg, reference


def _report(frame, suite, size):
    return validation.validate_chunks(_chunks(frame, size), suite, "b", now=NOW, rows=size).to_dict()


def test_a_batch_validated_in_pieces_reports_what_it_reports_whole(world) -> None:
    cfg, reference = world
    suite = validation.derive_suite(reference, cfg)
    batch = _scored(synthetic_frame(30_000, 2, "2024-01-01", days=1), 2)
    bad = batch.copy()
    bad.loc[5, "id"] = bad.loc[25_000, "id"]  # a duplicate id across pieces
    bad.loc[100:2_000, "num_00"] = np.nan  # nulls beyond the tolerance, summed over pieces
    bad.loc[10, "y_pred_proba"] = 1.5  # an impossible value
    bad.loc[20_000:20_400, "num_01"] = 1e6  # beyond the reference range: a finding
    bad.loc[12_000:15_000, "region"] = "mars"  # an unseen category: a finding
    bad.loc[29_000:29_010, "region"] = "venus"
    bad["plan"] = "basic"  # constant (varies in the reference)
    for frame in (batch, bad):
        whole = validation.validate_batch(frame, suite, "b", now=NOW).to_dict()
        whole.pop("seconds")
        for size in (7_000, 12_345):
            pieces = _report(frame, suite, size)
            pieces.pop("seconds")
            assert pieces == whole
    assert not whole["success"]
    failed = {(f["expectation_type"], f["column"]) for f in whole["failures"]}
    assert ("expect_column_values_to_be_unique", "id") in failed
    assert ("expect_column_values_to_not_be_null", "num_00") in failed
    assert {f["column"] for f in whole["distribution_findings"]} == {"num_01", "region"}


def test_a_column_constant_in_each_piece_but_not_overall_is_not_constant(world) -> None:
    cfg, reference = world
    suite = validation.derive_suite(reference, cfg)
    batch = _scored(synthetic_frame(4_000, 3, "2024-01-01", days=1), 3)
    batch["plan"] = ["basic"] * 2_000 + ["plus"] * 2_000
    batch["num_02"] = [0.5] * 2_000 + [1.5] * 2_000
    assert validation.validate_chunks(_chunks(batch, 2_000), suite, "b", now=NOW, rows=2_000).success


def test_monitoring_in_whole_nannyml_chunks_is_exactly_monitoring_whole(world) -> None:
    cfg, reference = world
    cfg = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"chunk_size": 3_000})})
    fitted = monitoring.fit_monitor(reference, cfg)
    batch = _scored(synthetic_frame(40_000, 4, "2024-01-01", days=1), 4)
    labels = batch[["id", "target"]].iloc[:22_000]  # the last pieces without labels
    whole = monitoring.compute_monitor(fitted, batch.drop(columns="target"), labels).to_dict()
    pieces = monitoring.compute_monitor_chunks(
        fitted, _chunks(batch.drop(columns="target"), 4_999), labels, rows=10_000
    ).to_dict()
    for report in (whole, pieces):
        report.pop("seconds")
    assert pieces == whole
    assert len(whole["chunks"]) == 13  # 40,000 rows in chunks of 3,000, the rest appended


@pytest.mark.slow
@pytest.mark.parametrize("drift", [False, True])
def test_a_million_rows_monitored_in_pieces_give_the_verdicts_of_the_whole_batch(world, drift: bool) -> None:
    """One NannyML chunk for the whole batch: the pieces' figures merged (row-weighted) give
    the alerts and decisions of the figures computed on all the rows at once."""
    cfg, reference = world
    fitted = monitoring.fit_monitor(reference, cfg)
    batch = _scored(synthetic_frame(1_000_000, 5, "2024-01-01", days=1), 5)
    if drift:
        batch["num_00"] = batch["num_00"] + np.linspace(0.0, 1.0, len(batch))
        batch.loc[batch.index[::2], "region"] = "north"
    labels = batch[["id", "target"]].iloc[:700_000]
    frame = batch.drop(columns="target")
    whole = monitoring.compute_monitor(fitted, frame, labels)
    pieces = monitoring.compute_monitor_chunks(fitted, _chunks(frame, 100_000), labels, rows=262_144)
    a, b = decide_alerts(whole, cfg), decide_alerts(pieces, cfg)
    assert (a.drift_detected, a.performance_degraded) == (b.drift_detected, b.performance_degraded)
    assert whole.drifted_features == pieces.drifted_features
    assert (bool(whole.drifted_features), whole.drifted_features[:1]) == (drift, ["num_00"] if drift else [])
    assert pieces.rows == whole.rows and pieces.labelled_rows == whole.labelled_rows == 700_000
    assert pieces.multivariate.value == pytest.approx(whole.multivariate.value, rel=1e-9)
    assert pieces.estimated_metric.value == pytest.approx(whole.estimated_metric.value, abs=0.002)
    assert pieces.realized_metric.value == pytest.approx(whole.realized_metric.value, abs=0.002)
    for name, f in whole.features.items():
        assert pieces.features[name].alert == f.alert
        assert pieces.features[name].value == pytest.approx(f.value, abs=0.003), name
