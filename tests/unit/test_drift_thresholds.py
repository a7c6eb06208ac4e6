"""Drift thresholds valid for their distance (issue 16): NannyML's default threshold (mean +
3 standard deviations over reference chunks) came out above 1 for Jensen-Shannon when the
reference's chunks, in row order, differ as much as the distance can tell (a reference
ordered by a feature; few chunks), so the feature could never alert. Tested on a small
reference of NannyML's car-loan table (a user's own data) sorted by one feature."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from evergreen.config import ModelConfig, load_config
from evergreen.engines import monitoring

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__import__("importlib.util").util.find_spec("nannyml").origin).parent / "datasets" / "data"


def _config(method: str) -> ModelConfig:
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    return cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"rows_per_batch": 300}),
            "monitoring": cfg.monitoring.model_copy(
                update={"continuous_methods": [method], "categorical_methods": [method], "multivariate_drift": False}
            ),
        }
    )


def _car_loan(rows: int, skip: int = 0) -> pd.DataFrame:
    frame = pd.read_csv(DATA / "synthetic_car_loan_reference.csv", nrows=rows + skip).iloc[skip:]
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["repaid_loan_on_prev_car"] = frame["repaid_loan_on_prev_car"].astype(bool)
    return frame.reset_index(drop=True)


def _sorted_by(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The reference's rows ordered by one feature, its timestamps kept in order."""
    out = frame.sort_values(column, kind="mergesort").reset_index(drop=True)
    return out.assign(timestamp=frame["timestamp"].to_numpy())


def _plain_nannyml_thresholds(reference: pd.DataFrame, cfg: ModelConfig) -> dict[str, float]:
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    import nannyml as nml
    from nannyml.chunk import SizeBasedChunker

    cols = cfg.columns
    size = monitoring.reference_chunk_size(len(reference), cfg)
    fitted = monitoring.fit_monitor(reference, cfg)
    frame = monitoring._drift_frame(reference, cfg, fitted.categories)
    with monitoring._nannyml_session():
        calc = nml.UnivariateDriftCalculator(
            column_names=list(cols.features),
            treat_as_categorical=list(cols.categorical),
            treat_as_numerical=list(cols.continuous),
            timestamp_column_name=cols.timestamp,
            continuous_methods=cfg.monitoring.continuous_methods,
            categorical_methods=cfg.monitoring.categorical_methods,
            chunker=SizeBasedChunker(size, incomplete="drop", timestamp_column_name=cols.timestamp),
        ).fit(frame)
    table = calc.result.filter(period="reference").to_df()
    method = cfg.monitoring.continuous_methods[0]
    return {c: float(table[(c, method, "upper_threshold")].iloc[0]) for c in cols.features}


@pytest.mark.parametrize(
    ("method", "rows", "column"),
    [("jensen_shannon", 400, "debt_to_income_ratio"), ("hellinger", 200, "debt_to_income_ratio")],
)
def test_thresholds_never_exceed_the_distance_maximum_and_can_alert(method: str, rows: int, column: str) -> None:
    cfg = _config(method)
    reference = _sorted_by(_car_loan(rows), column)
    plain = _plain_nannyml_thresholds(reference, cfg)
    assert plain[column] > 1.0  # NannyML's own default on this reference: the defect

    fitted = monitoring.fit_monitor(reference, cfg)
    assert set(fitted.threshold_notes) == {column} and "shuffled" in fitted.threshold_notes[column]

    quiet = compute_batch(fitted, _car_loan(300, skip=5_000))
    for name, drift in quiet.features.items():
        assert drift.threshold is not None and 0 < drift.threshold < 1.0, (name, drift)
        if name not in fitted.threshold_notes:  # NannyML's default kept where it was valid
            assert drift.threshold == pytest.approx(plain[name]), name
    assert not quiet.features[column].alert
    assert any(column in note for note in quiet.notes)

    moved = _car_loan(300, skip=5_000)
    moved[column] = moved[column] + 3 * moved[column].std()  # most values beyond the reference's range
    drifted = compute_batch(fitted, moved)
    assert drifted.features[column].alert
    assert drifted.features[column].value <= 1.0


def test_the_cap_is_nannyml_default_capped() -> None:
    """Below the maximum the threshold is NannyML's default exactly; at or above it, the
    maximum (as NannyML's own limit does for Kolmogorov-Smirnov)."""
    import numpy as np
    from nannyml.drift.univariate.calculator import DEFAULT_THRESHOLDS

    capped = monitoring._bounded_thresholds(["jensen_shannon", "wasserstein"])
    assert set(capped) == {"jensen_shannon"}  # an unbounded distance keeps NannyML's default
    spread = np.array([0.1, 0.12, 0.09, 0.11, 0.1, 0.13])
    assert capped["jensen_shannon"].thresholds(spread) == DEFAULT_THRESHOLDS["jensen_shannon"].thresholds(spread)
    # ten reference chunks, two far off: mean + 3 sd is at least the largest (Samuelson), here > 1
    outlier = np.array([0.2] * 8 + [0.9, 1.0])
    assert DEFAULT_THRESHOLDS["jensen_shannon"].thresholds(outlier)[1] > 1.0
    assert capped["jensen_shannon"].thresholds(outlier)[1] == 1.0


def test_a_feature_whose_threshold_stays_at_the_maximum_is_said_not_to_alert(monkeypatch) -> None:  # noqa: ANN001
    """When even shuffled reference chunks spread up to the maximum, the threshold stays at
    the maximum (never above it) and the note says the feature will not alert. (A maximum
    made low here so that every reference reaches it.)"""
    monkeypatch.setitem(monitoring.METHOD_MAXIMUM, "jensen_shannon", 0.01)
    fitted = monitoring.fit_monitor(_car_loan(300), _config("jensen_shannon"))
    report = compute_batch(fitted, _car_loan(300, skip=5_000))
    assert set(fitted.threshold_notes) == set(report.features)
    assert all(f.threshold == 0.01 for f in report.features.values())
    assert all("will not alert" in note for note in fitted.threshold_notes.values())


def compute_batch(fitted: monitoring.FittedMonitor, batch: pd.DataFrame) -> monitoring.MonitorReport:
    return monitoring.compute_monitor(fitted, batch.drop(columns="repaid"), None)
