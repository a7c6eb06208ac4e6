"""Validation: the suite derived from a reference accepts clean batches, rejects integrity
faults naming what is wrong, and reports values the reference never had (beyond its range,
unseen categories) per column without rejecting, unless the config enforces the check."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from evergreen.config import ColumnRoles, ConfigError, MlflowConfig, ModelConfig, ValidationConfig
from evergreen.engines.validation import (
    EXIST_EXPECTATION,
    TYPE_EXPECTATION,
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


def _with(config: ModelConfig, **validation: object) -> ModelConfig:
    """The config with a `validation:` section (validated as a YAML one would be)."""
    return ModelConfig.model_validate({**config.model_dump(), "validation": validation})


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
    assert again.column("owner").allowed_values == [False, True]
    assert again.column("y_pred").allowed_values == [0, 1]


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
    assert (age.reference_min, age.reference_max) == (pytest.approx(lo), pytest.approx(hi))
    assert age.range_mostly == pytest.approx(0.999) and not age.enforce_range
    assert age.max_null_fraction == pytest.approx(0.02 + 0.05)
    assert suite.column("region").value_set == ["east", "north", "south", "west"]
    assert suite.column("region").set_mostly == 0.95 and not suite.column("region").enforce_set
    proba = suite.column("y_pred_proba")
    assert (proba.limit_min, proba.limit_max) == (0.0, 1.0)
    assert proba.min_value is None and proba.max_value is None
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
def test_a_few_unseen_categories_pass_without_a_finding(validator: Validator, batch: pd.DataFrame) -> None:
    few = batch.copy()
    few.loc[few.index[:20], "region"] = "mars"  # 1%: below validation.unseen_category_share
    report = validator.validate(few, "few", now=NOW)
    assert report.success and report.findings == []


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
    bad = _set("y_pred_proba", slice(0, 100), 1.5)(batch)
    report = validator.validate(bad, "b", now=NOW)
    (failure,) = [f for f in report.failures if f.column == "y_pred_proba"]
    assert failure.observed["unexpected_count"] == 100
    assert failure.observed["sample"][0] == 1.5
    assert failure.expected["max_value"] == 1.0
    assert "5.00%" in failure.message and "outside the possible [0.0, 1.0]" in failure.message


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
        built = Validator(suite)._suite_for(skip, use_constant)  # first: its context adds below
        one_by_one = gx.ExpectationSuite(name="one-by-one")
        for expectation in build_expectations(suite, skip, use_constant):
            one_by_one.add_expectation(expectation)
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
    bad.loc[bad.index[:300], "age"] = np.nan  # fails: validated twice (pass/fail, then BASIC)
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
    suite = derive_suite(reference, _with(config, check_constant=False))
    assert validate_batch(batch.assign(region="north"), suite, "c", now=NOW).success


# ----------------------------------------------------------------------------- distribution


def _far(df: pd.DataFrame) -> pd.DataFrame:
    """The world moved: every age is beyond the reference's range for good."""
    return df.assign(age=df["age"] + 500.0)


def _new_regions(df: pd.DataFrame) -> pd.DataFrame:
    """Every region one the reference never had (two of them: a constant column is a fault)."""
    return df.assign(region=np.where(np.arange(len(df)) % 2, "mars", "venus"))


DISTRIBUTION: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str, float]] = {
    "a few values far out": (_set("age", slice(0, 100), 900.0), "age", "range", 0.05),
    "negative where never negative": (_set("income", slice(0, 100), -5e5), "income", "range", 0.05),
    "the whole column moved": (_far, "age", "range", 1.0),
    "unseen category flood": (_set("region", slice(0, 600), "mars"), "region", "categories", 0.3),
    "every category new": (_new_regions, "region", "categories", 1.0),
}


@GX
@pytest.mark.parametrize("case", sorted(DISTRIBUTION))
def test_values_the_reference_never_had_are_reported_and_never_reject(
    validator: Validator, batch: pd.DataFrame, case: str
) -> None:
    change, column, check, share = DISTRIBUTION[case]
    report = validator.validate(change(batch), "2024-02-09", now=NOW)
    assert report.success, report.summary()
    assert report.failures == []
    (finding,) = report.findings
    assert (finding.column, finding.check) == (column, check)
    # A share of the column's non-null values.
    assert finding.share == pytest.approx(share, abs=0.001)
    assert finding.count == round(share * batch[column].notna().sum())
    spec = validator.spec.column(column)
    if check == "range":
        assert finding.bounds == [pytest.approx(spec.min_value), pytest.approx(spec.max_value)]
        assert finding.reference_range == [pytest.approx(spec.reference_min), pytest.approx(spec.reference_max)]
        changed = change(batch)[column]
        assert finding.observed_range == [pytest.approx(changed.min()), pytest.approx(changed.max())]
        assert "beyond" in finding.message and f"{share:.2%}" in finding.message
    else:
        assert {u["value"] for u in finding.unseen} <= {"mars", "venus"}
        assert sum(u["count"] for u in finding.unseen) == finding.count
        assert "'mars'" in finding.message
    line = report.summary()
    assert "passed" in line and column in line and "\n" not in line
    assert report.to_dict()["distribution_findings"][0]["column"] == column
    json.dumps(report.to_dict())


@GX
def test_a_batch_with_findings_is_validated_once(
    validator: Validator, batch: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Findings are described from the batch: no second GX run (BASIC) on a batch the
    world moved under, only on one that fails an integrity check."""
    formats: list[str] = []
    run = Validator._run

    def counted(self, frame, suite, parameters, result_format):  # noqa: ANN001, ANN202
        formats.append(result_format)
        return run(self, frame, suite, parameters, result_format)

    monkeypatch.setattr(Validator, "_run", counted)
    assert validator.validate(_far(batch), "far", now=NOW).findings
    assert formats == ["BOOLEAN_ONLY"]
    formats.clear()
    assert not validator.validate(_far(_duplicate_ids(batch)), "far-and-bad", now=NOW).success
    assert formats == ["BOOLEAN_ONLY", "BASIC"]


@GX
def test_findings_are_reported_beside_the_failures_of_a_rejected_batch(
    validator: Validator, batch: pd.DataFrame
) -> None:
    report = validator.validate(_far(_duplicate_ids(batch)), "both", now=NOW)
    assert [(f.column, f.expectation_type) for f in report.failures] == [("id", "expect_column_values_to_be_unique")]
    assert [(f.column, f.check) for f in report.findings] == [("age", "range")]


@GX
def test_enforce_range_rejects_values_beyond_the_range(
    reference: pd.DataFrame, config: ModelConfig, batch: pd.DataFrame
) -> None:
    suite = derive_suite(reference, _with(config, enforce_range=["age"], outside_range_share=0.01))
    assert suite.column("age").enforce_range and suite.column("age").range_mostly == pytest.approx(0.99)
    validator = Validator(suite)
    assert validator.validate(batch, "clean", now=NOW).success
    # 0.5% beyond: within the tolerance the rule was given, reported as nothing at all.
    few = validator.validate(_set("age", slice(0, 10), 900.0)(batch), "few", now=NOW)
    assert few.success and few.findings == []
    report = validator.validate(_far(batch), "far", now=NOW)
    assert not report.success
    (failure,) = report.failures
    assert (failure.column, failure.expectation_type) == ("age", "expect_column_values_to_be_between")
    assert "validation.enforce_range" in failure.message and "100.00%" in failure.message
    # Only the enforced column rejects: unseen categories elsewhere still only warn.
    other = validator.validate(_new_regions(batch), "mars", now=NOW)
    assert other.success and [f.column for f in other.findings] == ["region"]


@GX
def test_enforce_categories_rejects_unseen_categories(
    reference: pd.DataFrame, config: ModelConfig, batch: pd.DataFrame
) -> None:
    validator = Validator(derive_suite(reference, _with(config, enforce_categories=["region"])))
    report = validator.validate(_set("region", slice(0, 600), "mars")(batch), "mars", now=NOW)
    assert [(f.column, f.expectation_type) for f in report.failures] == [("region", "expect_column_values_to_be_in_set")]
    assert "validation.enforce_categories" in report.failures[0].message
    assert validator.validate(_far(batch), "far", now=NOW).success


@GX
def test_declared_limits_reject_impossible_values(
    reference: pd.DataFrame, config: ModelConfig, batch: pd.DataFrame
) -> None:
    declared = _with(config, limits={"age": {"min": 0, "max": 120}, "region": {"allowed": ["north", "south", "east", "west"]}})
    validator = Validator(derive_suite(reference, declared))
    assert validator.validate(batch, "clean", now=NOW).success
    # One impossible value is enough: limits have no tolerance.
    report = validator.validate(_set("age", slice(0, 1), -3.0)(batch), "negative-age", now=NOW)
    (failure,) = report.failures
    assert (failure.column, failure.expectation_type) == ("age", "expect_column_values_to_be_between")
    assert "validation.limits.age" in failure.message and "[0.0, 120.0]" in failure.message
    assert failure.observed["sample"] == [-3.0]
    report = validator.validate(_set("region", slice(0, 1), "mars")(batch), "mars", now=NOW)
    assert [(f.column, f.expectation_type) for f in report.failures] == [("region", "expect_column_values_to_be_in_set")]
    assert "validation.limits.region" in report.failures[0].message
    # Possible but never seen: beyond the reference's range, within the limits, a finding.
    older = validator.validate(batch.assign(age=batch["age"].clip(upper=79) + 40), "older", now=NOW)
    assert older.success and [f.column for f in older.findings] == ["age"]


@GX
def test_the_training_window_is_checked_for_integrity_only(
    reference: pd.DataFrame, config: ModelConfig, batch: pd.DataFrame
) -> None:
    from evergreen.loop.retraining import training_suite

    enforced = _with(config, enforce_range=["age"], enforce_categories=["region"], limits={"income": {"min": 0}})
    suite = training_suite(derive_suite(reference, enforced))
    assert {c.name for c in suite.columns} == {"id", "timestamp", "age", "income", "region", "owner"}
    assert all(c.min_value is None and c.value_set is None for c in suite.columns)
    window = batch.drop(columns=["y_pred", "y_pred_proba"]).assign(target=1)
    moved = _new_regions(window.assign(age=window["age"] + 500.0))
    report = validate_batch(moved, suite, "window", now=NOW)
    assert report.success and report.findings == [], report.summary()
    # Integrity still holds the window: the declared limit and duplicate ids.
    negative = moved.assign(income=np.where(moved.index < 5, -1.0, moved["income"]))
    report = validate_batch(_duplicate_ids(negative), suite, "bad-window", now=NOW)
    assert {(f.column, f.expectation_type) for f in report.failures} == {
        ("income", "expect_column_values_to_be_between"),
        ("id", "expect_column_values_to_be_unique"),
    }


@GX
def test_distribution_checks_are_gx_warnings_unless_enforced(suite: SuiteSpec, reference: pd.DataFrame, config: ModelConfig) -> None:
    from evergreen.engines.validation import build_expectations

    def severities(spec: SuiteSpec) -> dict[tuple[str, str], str]:
        out = {}
        for e in build_expectations(spec):
            check = (e.meta or {}).get("check")
            if check:
                out[(e.column, check)] = str(e.severity.value)
        return out

    assert severities(suite) == {
        ("age", "range"): "warning",
        ("income", "range"): "warning",
        ("region", "categories"): "warning",
        ("owner", "limit"): "critical",
        ("y_pred", "limit"): "critical",
        ("y_pred_proba", "limit"): "critical",
    }
    enforced = derive_suite(reference, _with(config, enforce_range=["income"], limits={"age": {"max": 120}}))
    found = severities(enforced)
    assert found[("income", "range")] == "critical" and found[("age", "range")] == "warning"
    assert found[("age", "limit")] == "critical"


@pytest.mark.parametrize(
    ("validation", "field"),
    [
        ({"enforce_range": ["agee"]}, r"validation\.enforce_range\[0\]: 'agee' is not a feature"),
        ({"enforce_range": ["age", "region"]}, r"validation\.enforce_range\[1\]: 'region' is categorical"),
        ({"enforce_categories": ["colour"]}, r"validation\.enforce_categories\[0\]: 'colour' is not a feature"),
        ({"limits": {"height": {"max": 3}}}, r"validation\.limits\.height: 'height' is not a feature"),
        ({"limits": {"y_pred_proba": {"max": 1}}}, r"validation\.limits\.y_pred_proba: 'y_pred_proba' is not a feature"),
        ({"limits": {"region": {"min": 0}}}, r"validation\.limits\.region: 'region' is categorical"),
        ({"limits": {"age": {}}}, r"validation\.limits\.age: .*give min and/or max"),
        ({"limits": {"age": {"min": 5, "max": 1}}}, r"validation\.limits\.age: .*min 5\.0 is above max 1\.0"),
        ({"limits": {"age": {"min": 0, "allowed": [1]}}}, r"validation\.limits\.age: .*either min/max or allowed"),
        ({"outside_range_share": 1.5}, r"validation\.outside_range_share: "),
        ({"null_tolerance": -0.1}, r"validation\.null_tolerance: "),
        ({"enforce_ranges": ["age"]}, r"validation\.enforce_ranges: Extra inputs"),
    ],
)
def test_validation_section_errors_name_the_field(config: ModelConfig, validation: dict, field: str) -> None:
    from evergreen.config import parse_config

    raw = {**config.model_dump(mode="json"), "validation": validation}
    with pytest.raises(ConfigError, match=field):
        parse_config(raw)


@pytest.mark.parametrize(
    ("validation", "field"),
    [
        # Known only from the reference's dtypes: named when the suite is derived.
        ({"enforce_categories": ["age"]}, r"validation\.enforce_categories\[0\]: 'age' has numeric values"),
        ({"enforce_range": ["owner"]}, None),  # owner is categorical: refused at load
    ],
)
def test_checks_the_reference_cannot_carry_name_the_field(
    reference: pd.DataFrame, config: ModelConfig, validation: dict, field: str | None
) -> None:
    if field is None:
        with pytest.raises(ValueError, match=r"validation\.enforce_range\[0\]: 'owner' is categorical"):
            _with(config, **validation)
        return
    with pytest.raises(ConfigError, match=field):
        derive_suite(reference, _with(config, **validation))


def test_validation_defaults_warn_only() -> None:
    defaults = ValidationConfig()
    assert defaults.enforce_range == [] and defaults.enforce_categories == [] and defaults.limits == {}


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


def test_the_null_allowance_widens_with_the_noise_of_small_batches() -> None:
    from evergreen.engines.validation import null_allowance

    # Large batches: the configured tolerance decides.
    assert null_allowance(0.2, 0.05, 100_000) == pytest.approx(0.25)
    # 60-row batches of a 20%-null column: 3 standard errors (15.5 points) of slack.
    assert null_allowance(0.2, 0.05, 60) == pytest.approx(0.2 + 3 * (0.2 * 0.8 / 60) ** 0.5)
    # A column never null stays strict: the tolerance alone.
    assert null_allowance(0.0, 0.05, 60) == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    shares = rng.binomial(60, 0.2, size=20_000) / 60
    assert (shares > null_allowance(0.2, 0.05, 60)).mean() < 0.005  # chance alone rarely rejects
