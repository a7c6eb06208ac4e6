"""Validation: the suite derived from a reference accepts clean batches and names what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from evergreen.config import ColumnRoles, MlflowConfig, ModelConfig
from evergreen.engines.validation import (
    EXIST_EXPECTATION,
    TYPE_EXPECTATION,
    SuiteOptions,
    SuiteSpec,
    ValidationReport,
    Validator,
    column_kind,
    derive_suite,
    validate_batch,
    validate_labels,
)

NOW = pd.Timestamp("2024-03-01 00:00:00")
# Tests that run Great Expectations: its import alone takes ~14 s.
GX = pytest.mark.slow


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    return ModelConfig(
        name="toy",
        columns=ColumnRoles(
            target="target",
            features=["age", "income", "region", "owner"],
            categorical=["region", "owner"],
        ),
        mlflow=MlflowConfig(model_name="toy"),
    )


def make_frame(n: int, seed: int, start: str = "2024-01-01") -> pd.DataFrame:
    """A batch as the scoring service writes it (pandas 3: strings are `str` dtype)."""
    rng = np.random.default_rng(seed)
    proba = rng.random(n)
    return pd.DataFrame(
        {
            "id": np.arange(n) + seed * 1_000_000,
            "timestamp": pd.date_range(start, periods=n, freq="min"),
            "age": rng.uniform(18, 80, n),
            "income": rng.lognormal(10, 0.5, n),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "owner": rng.random(n) > 0.3,
            "y_pred": (proba > 0.5).astype(int),
            "y_pred_proba": proba,
            "model_version": "1",
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    ref = make_frame(3000, seed=1)
    ref.loc[ref.index[::50], "age"] = np.nan  # 2% nulls are normal for this feature
    return ref


@pytest.fixture(scope="module")
def suite(reference: pd.DataFrame, config: ModelConfig) -> SuiteSpec:
    return derive_suite(reference, config)


@pytest.fixture(scope="module")
def validator(suite: SuiteSpec) -> Validator:
    return Validator(suite)


@pytest.fixture()
def batch() -> pd.DataFrame:
    return make_frame(2000, seed=2, start="2024-02-01")


# ----------------------------------------------------------------------------- the spec


def test_suite_spec_round_trips_through_json(suite: SuiteSpec) -> None:
    again = SuiteSpec.from_json(suite.to_json())
    assert again == suite
    assert again.column("owner").value_set == [False, True]
    assert again.column("y_pred").value_set == [0, 1]


def test_suite_spec_derives_roles_ranges_and_sets(
    suite: SuiteSpec, reference: pd.DataFrame
) -> None:
    assert [c.name for c in suite.columns] == [
        "id",
        "timestamp",
        "age",
        "income",
        "region",
        "owner",
        "y_pred",
        "y_pred_proba",
    ]
    assert suite.column("id").unique and suite.column("id").max_null_fraction == 0
    assert suite.column("timestamp").not_future
    age = suite.column("age")
    lo, hi = reference["age"].min(), reference["age"].max()
    # Non-negative in the reference: the widened lower bound stops at 0.
    assert age.min_value == pytest.approx(max(0.0, lo - 0.5 * (hi - lo)))
    assert age.max_value == pytest.approx(hi + 0.5 * (hi - lo))
    assert age.max_null_fraction == pytest.approx(0.02 + 0.05)
    assert suite.column("region").value_set == ["east", "north", "south", "west"]
    assert suite.column("region").set_mostly == 0.95
    proba = suite.column("y_pred_proba")
    assert (proba.min_value, proba.max_value) == (0.0, 1.0)
    assert suite.column("age").kind == "numeric" and suite.column("region").kind == "string"


def test_derive_suite_names_missing_reference_columns(
    reference: pd.DataFrame, config: ModelConfig
) -> None:
    # A ConfigError (a ValueError) naming the config field and the column.
    with pytest.raises(ValueError, match=r"columns\.features\[\d+\]: 'income' is not a column"):
        derive_suite(reference.drop(columns="income"), config)


@pytest.mark.parametrize(
    ("series", "kind"),
    [
        (pd.Series([1.0, 2.0]), "numeric"),
        (pd.Series([1, 2]), "numeric"),
        (pd.Series(["a", "b"]), "string"),
        (pd.Series(["a", None], dtype=object), "string"),
        (pd.Series([True, False]), "bool"),
        (pd.Series(pd.to_datetime(["2024-01-01"])), "datetime"),
        (pd.Series(pd.to_datetime(["2024-01-01"]).tz_localize("UTC")), "datetime"),
    ],
)
def test_column_kind(series: pd.Series, kind: str) -> None:
    assert column_kind(series) == kind


# ----------------------------------------------------------------------------- validating


@GX
def test_clean_batch_passes(validator: Validator, batch: pd.DataFrame) -> None:
    report = validator.validate(batch, "2024-02-01", now=NOW)
    assert report.success, report.summary()
    assert report.failures == []
    assert report.statistics.evaluated > 20
    assert report.statistics.successful == report.statistics.evaluated
    assert report.rows == len(batch)
    assert "2024-02-01" in report.summary() and "passed" in report.summary()


@GX
def test_validation_does_not_mutate_the_batch(validator: Validator, batch: pd.DataFrame) -> None:
    before = batch.copy()
    validator.validate(batch, "b", now=NOW)
    pd.testing.assert_frame_equal(batch, before)


@GX
def test_drift_within_plausible_range_is_not_invalid(
    validator: Validator, batch: pd.DataFrame
) -> None:
    drifted = batch.assign(age=batch["age"] + 15, income=batch["income"] * 1.3)
    report = validator.validate(drifted, "drifted", now=NOW)
    assert report.success, report.summary()


@GX
def test_a_few_unseen_categories_pass(validator: Validator, batch: pd.DataFrame) -> None:
    few = batch.copy()
    few.loc[few.index[:20], "region"] = "mars"  # 1%
    assert validator.validate(few, "few", now=NOW).success


def _set(column: str, rows: slice, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def corrupt(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out.loc[out.index[rows], column] = value
        return out

    return corrupt


def _duplicate_ids(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[1:11], "id"] = out["id"].iloc[0]
    return out


CORRUPTIONS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str | None, str]] = {
    "missing column": (lambda df: df.drop(columns="income"), "income", EXIST_EXPECTATION),
    "missing prediction": (lambda df: df.drop(columns="y_pred"), "y_pred", EXIST_EXPECTATION),
    "numbers as strings": (
        lambda df: df.assign(income=df["income"].astype(str)),
        "income",
        TYPE_EXPECTATION,
    ),
    "timestamps as strings": (
        lambda df: df.assign(timestamp=df["timestamp"].astype(str)),
        "timestamp",
        TYPE_EXPECTATION,
    ),
    "bool as numbers": (
        lambda df: df.assign(owner=df["owner"].astype(float) * 3),
        "owner",
        TYPE_EXPECTATION,
    ),
    "null flood": (
        _set("age", slice(0, 1000), np.nan),
        "age",
        "expect_column_values_to_not_be_null",
    ),
    "null in id": (
        lambda df: df.assign(id=df["id"].astype(float).where(df.index > 0)),
        "id",
        "expect_column_values_to_not_be_null",
    ),
    "out of range": (
        _set("age", slice(0, 100), 900.0),
        "age",
        "expect_column_values_to_be_between",
    ),
    "negative where never negative": (
        _set("income", slice(0, 100), -5e5),
        "income",
        "expect_column_values_to_be_between",
    ),
    "unseen category flood": (
        _set("region", slice(0, 600), "mars"),
        "region",
        "expect_column_values_to_be_in_set",
    ),
    "duplicated ids": (_duplicate_ids, "id", "expect_column_values_to_be_unique"),
    "empty frame": (lambda df: df.iloc[:0], None, "expect_table_row_count_to_be_between"),
    "infinities": (
        _set("income", slice(0, 5), np.inf),
        "income",
        "expect_column_values_to_not_be_in_set",
    ),
    "probability above one": (
        _set("y_pred_proba", slice(0, 3), 1.5),
        "y_pred_proba",
        "expect_column_values_to_be_between",
    ),
    "prediction not a class": (
        _set("y_pred", slice(0, 3), 2),
        "y_pred",
        "expect_column_values_to_be_in_set",
    ),
    "constant feature": (
        lambda df: df.assign(region="north"),
        "region",
        "expect_column_unique_value_count_to_be_between",
    ),
    "future timestamps": (
        lambda df: df.assign(timestamp=df["timestamp"] + pd.Timedelta(days=60)),
        "timestamp",
        "expect_column_max_to_be_between",
    ),
    "constant numeric feature": (
        lambda df: df.assign(income=50_000.0),
        "income",
        "expect_column_unique_value_count_to_be_between",
    ),
}


@GX
@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_bad_batch_fails_naming_column_and_expectation(
    validator: Validator, batch: pd.DataFrame, case: str
) -> None:
    corrupt, column, expectation = CORRUPTIONS[case]
    report = validator.validate(corrupt(batch), "2024-02-09", now=NOW)
    assert not report.success
    assert (column, expectation) in [(f.column, f.expectation_type) for f in report.failures], (
        report.summary()
    )
    line = report.summary()
    assert "\n" not in line
    assert "2024-02-09" in line and expectation in line
    if column:
        assert column in line
    json.dumps(report.to_dict())  # plain JSON types only


@GX
def test_failure_carries_observed_and_expected(validator: Validator, batch: pd.DataFrame) -> None:
    bad = _set("age", slice(0, 100), 900.0)(batch)
    report = validator.validate(bad, "b", now=NOW)
    (failure,) = [f for f in report.failures if f.column == "age"]
    assert failure.observed["unexpected_count"] == 100
    assert failure.observed["sample"][0] == 900.0
    assert failure.expected["max_value"] == pytest.approx(validator.spec.column("age").max_value)
    assert "5.00%" in failure.message


@GX
def test_empty_batch_fails_on_row_count_only(validator: Validator, batch: pd.DataFrame) -> None:
    report = validator.validate(batch.iloc[:0], "empty", now=NOW)
    assert [(f.column, f.expectation_type) for f in report.failures] == [
        (None, "expect_table_row_count_to_be_between")
    ]
    assert "0 rows" in report.summary()


@GX
def test_frame_without_any_column_fails_cleanly(validator: Validator) -> None:
    report = validator.validate(pd.DataFrame(), "nothing", now=NOW)
    assert not report.success
    missing = {f.column for f in report.failures if f.expectation_type == EXIST_EXPECTATION}
    assert missing == {c.name for c in validator.spec.columns}


@GX
def test_timezone_aware_timestamps_compare_with_now(
    validator: Validator, batch: pd.DataFrame
) -> None:
    aware = batch.assign(timestamp=batch["timestamp"].dt.tz_localize("Europe/Paris"))
    assert validator.validate(aware, "tz", now=NOW.tz_localize("UTC")).success
    assert validator.validate(aware, "tz", now=NOW).success
    early = pd.Timestamp("2024-02-01 00:30:00")
    assert not validator.validate(batch, "early", now=early).success


@GX
def test_row_count_bounds_come_from_config(
    reference: pd.DataFrame, config: ModelConfig, batch: pd.DataFrame
) -> None:
    strict = config.model_copy(
        update={"data": config.data.model_copy(update={"min_batch_rows": 5000})}
    )
    report = validate_batch(batch, derive_suite(reference, strict), "small", now=NOW)
    assert [(f.column, f.expectation_type) for f in report.failures] == [
        (None, "expect_table_row_count_to_be_between")
    ]
    assert "2000 rows" in report.failures[0].message


@GX
def test_validate_batch_reuses_the_gx_suite_of_a_spec(
    suite: SuiteSpec, batch: pd.DataFrame
) -> None:
    from evergreen.engines.validation import _validator_for

    validate_batch(batch, suite, "first", now=NOW)
    hits = _validator_for.cache_info().hits
    assert validate_batch(batch, suite, "second", now=NOW).success
    assert _validator_for.cache_info().hits == hits + 1


@GX
@pytest.mark.parametrize("use_constant", [True, False])
def test_suite_built_in_one_go_keeps_every_expectation(suite: SuiteSpec, use_constant: bool) -> None:
    """The Validator hands GX its expectations at once, without `add_expectation`'s
    de-duplication: none may be a duplicate that GX would have dropped."""
    from evergreen.engines.gx import gx
    from evergreen.engines.validation import build_expectations

    for skip in (frozenset(), frozenset({"age", "region"})):
        one_by_one = gx.ExpectationSuite(name="one-by-one")
        for expectation in build_expectations(suite, skip, use_constant):
            one_by_one.add_expectation(expectation)
        built = Validator(suite)._suite_for(skip, use_constant)
        assert len(built.expectations) == len(one_by_one.expectations) > 0
        assert [e.expectation_type for e in built.expectations] == [e.expectation_type for e in one_by_one.expectations]


@GX
def test_a_validated_batch_is_not_kept(validator: Validator, batch: pd.DataFrame) -> None:
    """GX's pandas engine caches the batch and every metric computed on it (boolean masks
    over all rows) for the life of the context; the validator lives for the process, so
    each batch validated used to stay resident. Passing and failing batches alike."""
    import gc
    import weakref

    bad = batch.copy()
    bad.loc[bad.index[:300], "age"] = -5.0  # fails: validated twice (pass/fail, then BASIC)
    refs = []
    for frame in (batch.copy(), bad):
        refs.append(weakref.ref(frame))
        validator.validate(frame, "b", now=NOW)
    del frame, bad
    gc.collect()
    assert [r() is None for r in refs] == [True, True]
    engine = validator._datasource.get_execution_engine()
    assert len(engine._metric_cache) == 0
    assert not engine.batch_manager.batch_cache and not engine.batch_manager.batch_data_cache


@GX
def test_gx_is_imported_without_the_cloud_sdks() -> None:
    """GX would import the AWS and Google Cloud SDKs NannyML installs (~20 MB, ~2 s) for
    datasources never used here; they stay importable for everything else afterwards."""
    import subprocess
    import sys

    code = (
        "import sys, evergreen.engines.gx as g\n"
        "print(sorted(m for m in g.HIDDEN if m in sys.modules))\n"
        "import botocore, google.cloud.storage\n"
        "print(g.gx.expectations.ExpectColumnValuesToNotBeNull.__name__, type(sys.meta_path[0]).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "[]", out.stdout
    assert lines[1].startswith("ExpectColumnValuesToNotBeNull ") and "Hide" not in lines[1], out.stdout


@GX
def test_constant_check_can_be_switched_off(
    reference: pd.DataFrame, config: ModelConfig, batch: pd.DataFrame
) -> None:
    suite = derive_suite(reference, config, SuiteOptions(check_constant=False))
    assert validate_batch(batch.assign(region="north"), suite, "c", now=NOW).success


# ----------------------------------------------------------------------------- labels


def _labels(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": batch["id"], "target": (batch["y_pred_proba"] > 0.4).astype(int)})


def test_clean_labels_pass(batch: pd.DataFrame, config: ModelConfig) -> None:
    report = validate_labels(_labels(batch), batch["id"], config)
    assert isinstance(report, ValidationReport)
    assert report.success, report.summary()


@pytest.mark.parametrize(
    ("corrupt", "column", "expectation"),
    [
        (lambda lb: lb.assign(id=lb["id"] + 10**9), "id", "expect_column_values_to_be_in_set"),
        (
            lambda lb: lb.assign(target=lb["target"] * 2),
            "target",
            "expect_column_values_to_be_in_set",
        ),
        (
            lambda lb: lb.assign(target=lb["target"].astype(str)),
            "target",
            "expect_column_values_to_be_in_set",
        ),
        (
            lambda lb: lb.assign(target=lb["target"].where(lb.index > 5)),
            "target",
            "expect_column_values_to_not_be_null",
        ),
        (lambda lb: pd.concat([lb, lb.head(3)]), "id", "expect_column_values_to_be_unique"),
        (lambda lb: lb.drop(columns="target"), "target", EXIST_EXPECTATION),
        (lambda lb: lb.iloc[:0], None, "expect_table_row_count_to_be_between"),
    ],
)
def test_bad_labels_fail_naming_column(
    batch: pd.DataFrame,
    config: ModelConfig,
    corrupt: Callable,
    column: str | None,
    expectation: str,
) -> None:
    report = validate_labels(
        corrupt(_labels(batch)), batch["id"], config, batch_id="labels-2024-02-04"
    )
    assert not report.success
    assert (column, expectation) in [(f.column, f.expectation_type) for f in report.failures]
    assert "labels-2024-02-04" in report.summary()
    json.dumps(report.to_dict())


def test_regression_labels_must_be_finite_numbers(batch: pd.DataFrame, config: ModelConfig) -> None:
    reg = config.model_copy(update={"problem_type": "regression", "metric": "mae"})
    labels = pd.DataFrame({"id": batch["id"], "target": batch["income"]})
    assert validate_labels(labels, None, reg).success
    labels.loc[labels.index[:2], "target"] = np.inf
    report = validate_labels(labels, None, reg)
    assert [(f.column, f.expectation_type) for f in report.failures] == [
        ("target", TYPE_EXPECTATION)
    ]
