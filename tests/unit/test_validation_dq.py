"""NannyML's data-quality variant of car-loan (`synthetic_car_loan_dq_*`) as a user's own data.

The dq tables are the car-loan tables with faults put in (read from the data): about 10% of
`salary_range` and `driver_tenure` missing in the reference and the first half of the
analysis period, about 22% in the second half; and a category the reference never had,
`size_of_downpayment` = '50%', in 0.6-2.2% of each analysis batch. The second half also
carries car-loan's own plain drift (car_value up by half, salary band 60K+ from 10% to 1%,
repaid_loan_on_prev_car from 55% to 80%), in the clean tables as well.

Cut into ten time-ordered batches of 5,000 rows: integrity faults are caught as the rules
say (nulls beyond the reference's share + `validation.null_tolerance` reject; the unseen
category is reported when above `validation.unseen_category_share` and rejects when the
user declares the possible values), and plain drift rejects nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from evergreen.config import ModelConfig, load_config
from evergreen.engines.validation import Validator, derive_suite

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# The tables ship inside nannyml; found without importing it (~18 s).
DATA = Path(next(iter(importlib.util.find_spec("nannyml").submodule_search_locations))) / "datasets" / "data"
BATCHES, ROWS = 10, 5000
NOT_NULL = "expect_column_values_to_not_be_null"
IN_SET = "expect_column_values_to_be_in_set"
DOWNPAYMENTS = ["0%", "10%", "20%", "30%", "40%"]


def _read(name: str) -> pd.DataFrame:
    frame = pd.read_csv(DATA / name)
    return frame.assign(timestamp=pd.to_datetime(frame["timestamp"]))


def _batches(analysis: pd.DataFrame) -> list[pd.DataFrame]:
    ordered = analysis.sort_values("timestamp", kind="mergesort").reset_index(drop=True)
    return [ordered.iloc[i * ROWS : (i + 1) * ROWS].reset_index(drop=True) for i in range(BATCHES)]


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    return load_config(ROOT / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def dq() -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    return _read("synthetic_car_loan_dq_reference.csv"), _batches(_read("synthetic_car_loan_dq_analysis.csv"))


@pytest.fixture(scope="module")
def clean() -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    return _read("synthetic_car_loan_reference.csv"), _batches(_read("synthetic_car_loan_analysis.csv"))


def _with(config: ModelConfig, **validation: object) -> ModelConfig:
    return ModelConfig.model_validate({**config.model_dump(), "validation": validation})


def _validate_all(reference: pd.DataFrame, batches: list[pd.DataFrame], config: ModelConfig) -> list:
    validator = Validator(derive_suite(reference, config))
    return [validator.validate(b, f"batch-{i}") for i, b in enumerate(batches)]


def test_the_data_carries_the_faults_this_test_is_about(dq, clean) -> None:  # noqa: ANN001
    (_, faulty), (_, plain) = dq, clean
    nulls = [b["salary_range"].isna().mean() for b in faulty]
    assert max(nulls[:5]) < 0.12 and min(nulls[5:]) > 0.2
    assert all(0.005 < (b["size_of_downpayment"] == "50%").mean() < 0.03 for b in faulty)
    assert all(b["size_of_downpayment"].isin(DOWNPAYMENTS).all() and b.notna().all().all() for b in plain)
    # The plain drift of the second half, in both.
    for batches in (faulty, plain):
        assert batches[7]["car_value"].mean() > 1.4 * batches[2]["car_value"].mean()


def test_missing_values_beyond_the_reference_share_reject_and_plain_drift_does_not(
    dq, clean, config: ModelConfig  # noqa: ANN001
) -> None:
    reports = _validate_all(*dq, config)
    assert [r.success for r in reports] == [True] * 5 + [False] * 5, [r.summary() for r in reports]
    for report in reports[5:]:
        # Only the faults are named: none of the drifted columns.
        assert {(f.column, f.expectation_type) for f in report.failures} == {
            ("salary_range", NOT_NULL),
            ("driver_tenure", NOT_NULL),
        }, report.summary()
        assert "at most 15." in report.failures[0].message  # the reference's ~10% + 5%
    # The same batches without the faults: car-loan's plain drift, accepted, nothing to report.
    plain = _validate_all(*clean, config)
    assert all(r.success and r.findings == [] for r in plain), [r.summary() for r in plain]


def test_the_null_tolerance_is_the_users_rule(dq, config: ModelConfig) -> None:  # noqa: ANN001
    reports = _validate_all(*dq, _with(config, null_tolerance=0.2))
    assert all(r.success for r in reports), [r.summary() for r in reports if not r.success]


def test_an_unseen_category_is_reported_or_rejected_as_the_rule_says(dq, config: ModelConfig) -> None:  # noqa: ANN001
    reference, batches = dq
    first_half = batches[:5]
    # By default 0.6-1% of the values are within the 5% tolerated: not a finding.
    assert all(r.success and r.findings == [] for r in _validate_all(reference, first_half, config))
    # With a lower tolerance, a per-column finding naming the category and its count; accepted.
    reports = _validate_all(reference, first_half, _with(config, unseen_category_share=0.005))
    for batch, report in zip(first_half, reports, strict=True):
        assert report.success, report.summary()
        (finding,) = report.findings
        assert (finding.column, finding.check) == ("size_of_downpayment", "categories")
        assert finding.unseen == [{"value": "50%", "count": int((batch["size_of_downpayment"] == "50%").sum())}]
    # Declared as the possible values: every batch holding the category is rejected.
    declared = _with(config, limits={"size_of_downpayment": {"allowed": DOWNPAYMENTS}})
    for report in _validate_all(reference, first_half, declared):
        (failure,) = report.failures
        assert (failure.column, failure.expectation_type) == ("size_of_downpayment", IN_SET)
        assert "validation.limits.size_of_downpayment" in failure.message
        assert failure.observed["sample"] == ["50%"]


def test_nannyml_monitors_an_accepted_dq_batch(dq, config: ModelConfig) -> None:  # noqa: ANN001
    """Missing values and the unseen category go through NannyML's drift and estimation."""
    from evergreen.engines.monitoring import compute_monitor, fit_monitor

    reference, batches = dq
    fitted = fit_monitor(reference, config)
    report = compute_monitor(fitted, batches[0], None)
    assert report.estimated_metric.value is not None and 0.5 < report.estimated_metric.value <= 1
    assert set(report.features) == set(config.columns.features)
    assert all(f.value is not None for f in report.features.values())
