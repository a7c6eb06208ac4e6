"""Data validation: an expectation suite derived from the reference, run with Great Expectations.

Two kinds of checks (README "The monitor flow"; `config.ValidationConfig`):

- **integrity** checks reject a batch: schema and types, nulls beyond the reference's share
  plus `validation.null_tolerance`, values the user declared impossible
  (`validation.limits`), a probability outside [0, 1] or a prediction that is no class,
  duplicate ids, row counts, timestamps in the future, infinities, constant columns;
- **distribution** checks never reject by default: values beyond the monitor reference's
  range (widened) and categories the reference never had are reported per column
  (`reports.DistributionFinding`) and count as drift evidence. `validation.enforce_range` /
  `enforce_categories` make them integrity checks for the columns named.

Both are GX expectations of one suite; a distribution check carries GX's `severity`
"warning" (an enforced one "critical") and `meta.check` says which check it is. A batch
fails when a critical expectation fails.

`derive_suite` turns a reference frame into a `SuiteSpec` (plain pydantic, JSON round-trip),
so the suite can be stored, diffed and reviewed. `Validator` builds the GX 1.x context and
expectation suite from a spec once and validates many batches with it; `validate_batch` is the
one-shot convenience. Structural problems GX cannot evaluate (a missing column, numbers that
arrived as strings) are found with cheap dtype checks first and reported in the same form,
and the GX expectations on those columns are left out so they do not raise.

great_expectations is imported lazily (it costs ~14 s), through `evergreen.engines.gx`.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from evergreen.adapters.io import ROW_COUNT_EXPECTATION, DataReadError, release_unused_memory
from evergreen.config import ConfigError, ModelConfig, ValidationConfig, check_columns, class_key
from evergreen.jsonable import plain
from evergreen.reports import DistributionFinding
from evergreen.times import utc

ColumnKind = Literal["numeric", "string", "bool", "datetime"]
ColumnRole = Literal["id", "timestamp", "feature", "prediction", "probability"]
CategoryValue = StrictBool | StrictInt | StrictFloat | StrictStr
Check = Literal["limit", "range", "categories"]

NOW_PARAMETER = "evergreen_now"
TYPE_EXPECTATION = "expect_column_values_to_be_in_type_list"
EXIST_EXPECTATION = "expect_column_to_exist"
CONSTANT_EXPECTATION = "expect_column_unique_value_count_to_be_between"
COLUMNS_EXPECTATION = "expect_table_columns_to_match_set"
BETWEEN_EXPECTATION = "expect_column_values_to_be_between"
IN_SET_EXPECTATION = "expect_column_values_to_be_in_set"
CRITICAL, WARNING = "critical", "warning"  # GX's FailureSeverity values
VALIDATION_ROWS = 1_048_576
"""Rows GX validates at once where a table comes in chunks (`Validator.validate_chunks`):
GX costs ~0.15 s a call besides the rows, and ~100 MB per million rows while it runs."""


class ColumnSpec(BaseModel):
    """What one column of a batch must look like (integrity) and what the reference saw
    (distribution)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: ColumnRole
    kind: ColumnKind
    max_null_fraction: float = Field(default=0.0, ge=0, le=1)
    # Integrity: values the column can never take, declared (`validation.limits`) or in its
    # nature (a probability, a class, a bool).
    limit_min: float | None = None
    limit_max: float | None = None
    allowed_values: list[CategoryValue] | None = None
    declared_limits: bool = Field(default=False, description="the limits come from validation.limits")
    # Distribution: the reference's range (widened) and categories; reported, never rejected
    # unless enforced.
    min_value: float | None = None
    max_value: float | None = None
    reference_min: float | None = None
    reference_max: float | None = None
    range_mostly: float = 1.0
    value_set: list[CategoryValue] | None = None
    set_mostly: float = 1.0
    enforce_range: bool = False
    enforce_set: bool = False
    unique: bool = False
    finite: bool = False
    not_constant: bool = False
    not_future: bool = False

    def integrity_only(self) -> ColumnSpec:
        """This column without its distribution checks (the training window's)."""
        return self.model_copy(
            update={
                "min_value": None,
                "max_value": None,
                "value_set": None,
                "enforce_range": False,
                "enforce_set": False,
            }
        )


class SuiteSpec(BaseModel):
    """A serializable description of the expectations a production batch must meet."""

    model_config = ConfigDict(extra="forbid")

    name: str
    model_name: str
    columns: list[ColumnSpec]
    min_rows: int = Field(default=0, ge=0)
    max_rows: int = Field(default=5_000_000, ge=1)
    clock_skew_seconds: float = 300.0
    min_rows_for_constant_check: int = 100
    reference_rows: int = 0
    allowed_extra: list[str] = Field(
        default_factory=list, description="columns a batch may carry besides the suite's"
    )

    def integrity_only(self) -> SuiteSpec:
        """The suite without distribution checks: what the retrain's window must meet."""
        return self.model_copy(update={"columns": [c.integrity_only() for c in self.columns]})

    def column(self, name: str) -> ColumnSpec:
        """The spec of column `name`; KeyError names the column when it is not in the suite."""
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"column {name!r} is not in suite {self.name!r}")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> SuiteSpec:
        return cls.model_validate_json(text)


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation, in words a person can act on."""

    expectation_type: str
    column: str | None
    observed: Any
    expected: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


@dataclass(frozen=True)
class ValidationStatistics:
    evaluated: int
    successful: int

    @property
    def unsuccessful(self) -> int:
        return self.evaluated - self.successful


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one batch (or one labels file).

    `failures` reject it (integrity). `findings` are the distribution checks that found
    values the reference never had (per column; never a rejection). `warnings` are other
    findings that do not fail the batch (a column the reference lacks): they are reported
    with the same fields as failures.
    """

    success: bool
    batch_id: str
    failures: list[ExpectationFailure]
    statistics: ValidationStatistics
    rows: int = 0
    seconds: float = 0.0
    warnings: list[ExpectationFailure] = field(default_factory=list)
    findings: list[DistributionFinding] = field(default_factory=list)

    def summary(self) -> str:
        """One line naming the batch and, on failure, each failing column and expectation."""
        stats = self.statistics
        if self.success:
            warned = "".join(
                f"; distribution: {f.column}: {f.expectation_type} — {f.message}" for f in self.findings
            ) + "".join(
                f"; warning: {w.column or '(table)'}: {w.expectation_type} — {w.message}"
                for w in self.warnings
            )
            return (
                f"batch {self.batch_id}: passed {stats.successful}/{stats.evaluated} expectations "
                f"({self.rows:,} rows){warned}"
            )
        shown = "; ".join(
            f"{f.column or '(table)'}: {f.expectation_type} — {f.message}"
            for f in self.failures[:5]
        )
        more = f"; and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
        return (
            f"batch {self.batch_id}: failed {len(self.failures)} of {stats.evaluated} expectations "
            f"({self.rows:,} rows): {shown}{more}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (event payloads, artifacts)."""
        return {
            "success": self.success,
            "batch_id": self.batch_id,
            "rows": self.rows,
            "seconds": round(self.seconds, 4),
            "statistics": {
                "evaluated": self.statistics.evaluated,
                "successful": self.statistics.successful,
                "unsuccessful": self.statistics.unsuccessful,
            },
            "failures": [f.to_dict() for f in self.failures],
            "warnings": [w.to_dict() for w in self.warnings],
            "distribution_findings": [f.model_dump() for f in self.findings],
            "summary": self.summary(),
        }

    def event_payload(self) -> dict[str, Any]:
        """Payload of `evergreen.data.rejected`: the batch id and the failing expectations."""
        return {
            "batch_id": self.batch_id,
            "reason": self.summary(),
            "failures": [f.to_dict() for f in self.failures],
        }


# ----------------------------------------------------------------------------- deriving


def derive_suite(reference: pd.DataFrame, config: ModelConfig) -> SuiteSpec:
    """Derive the checks a production batch must meet from the reference frame and the
    `validation` section of the config.

    Integrity (reject): id, timestamp, features, prediction and probability present with the
    reference's kinds; nulls at most the reference's share + `null_tolerance`; ids unique;
    timestamps not in the future; the declared `limits`; probabilities in [0, 1]; binary
    predictions 0/1. Distribution (report; reject for the `enforce_*` columns): numeric
    features within the reference's range widened by `range_margin` of its width (never
    below 0 when the reference has no negative value) for all but `outside_range_share` of
    the values; categories known for all but `unseen_category_share`.
    """
    opts = config.validation
    cols = config.columns
    # A column the config names that the reference lacks is a config error: name the field.
    check_columns(
        cols,
        [str(c) for c in reference.columns],
        f"the monitor reference of {config.name!r}",
        ("id", "timestamp", "features", "prediction", "probability"),
    )
    if reference.empty:
        raise ValueError(f"reference for {config.name!r} has no rows; cannot derive expectations")

    specs = [
        ColumnSpec(name=cols.id, role="id", kind=column_kind(reference[cols.id]), unique=True),
        ColumnSpec(name=cols.timestamp, role="timestamp", kind="datetime", not_future=True),
        *(_feature_spec(reference[c], c in cols.categorical, opts, config.data.rows_per_batch) for c in cols.features),
        _prediction_spec(reference[cols.prediction], config),
    ]
    # One probability column (binary) or one per class (multiclass), each in [0, 1].
    probabilities = (
        config.probability_columns
        if config.problem_type != "regression"
        else [cols.probability] if isinstance(cols.probability, str) else []
    )
    for name in probabilities:
        specs.append(
            ColumnSpec(
                name=name,
                role="probability",
                kind="numeric",
                limit_min=0.0,
                limit_max=1.0,
                finite=True,
            )
        )
    return SuiteSpec(
        name=f"{config.name}-batch",
        model_name=config.name,
        columns=specs,
        min_rows=config.data.min_batch_rows,
        max_rows=config.data.max_batch_rows,
        clock_skew_seconds=opts.clock_skew_seconds,
        min_rows_for_constant_check=opts.min_rows_for_constant_check if opts.check_constant else 0,
        reference_rows=len(reference),
        # The serving version is logged with every row; a target may ride along for offline data.
        allowed_extra=[cols.model_version, cols.target],
    )


def column_kind(series: pd.Series) -> ColumnKind:
    """The kind of a column from its dtype: numeric, string (incl. object/category), bool, datetime."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    return "string"


def null_allowance(null_share: float, tolerance: float, batch_rows: int) -> float:
    """The null share a batch may show: the reference's plus `tolerance`, or plus three
    standard errors of a share on a batch of `batch_rows` rows when that is more (on small
    batches chance alone moves a null share by more than the tolerance: a reference 20%
    null gives 60-row batches 31% null about once in a hundred)."""
    noise = 3.0 * math.sqrt(null_share * (1.0 - null_share) / max(batch_rows, 1))
    return min(1.0, null_share + max(tolerance, noise))


def _feature_spec(ref: pd.Series, categorical: bool, opts: ValidationConfig, batch_rows: int) -> ColumnSpec:
    name = str(ref.name)
    kind = column_kind(ref)
    null_share = float(ref.isna().mean())
    spec: dict[str, Any] = {
        "name": name,
        "role": "feature",
        "kind": kind,
        "max_null_fraction": null_allowance(null_share, opts.null_tolerance, batch_rows),
        "not_constant": opts.check_constant and ref.nunique(dropna=True) > 1,
    }
    values = ref.dropna()
    if kind == "bool":
        spec["allowed_values"] = [False, True]
    elif categorical or kind == "string":
        distinct = values.unique()
        if len(distinct) <= opts.max_categories:
            spec["value_set"] = sorted(
                (_plain(v) for v in distinct), key=lambda v: (str(type(v)), v)
            )
            spec["set_mostly"] = 1.0 - opts.unseen_category_share
    elif kind == "numeric" and np.isfinite(values.to_numpy(dtype=float)).any():
        finite = values[np.isfinite(values.to_numpy(dtype=float))]
        lo, hi = float(finite.min()), float(finite.max())
        pad = (hi - lo if hi > lo else abs(lo) or 1.0) * opts.range_margin
        spec |= {
            "min_value": max(0.0, lo - pad) if lo >= 0 else lo - pad,
            "max_value": hi + pad,
            "reference_min": lo,
            "reference_max": hi,
            "range_mostly": 1.0 - opts.outside_range_share,
            "finite": True,
        }
    if name in opts.enforce_range:
        if spec.get("min_value") is None:
            raise ConfigError(
                f"validation.enforce_range[{opts.enforce_range.index(name)}]: {name!r} has no numeric "
                f"range in the reference (its values are {kind}); remove it or use enforce_categories"
            )
        spec["enforce_range"] = True
    if name in opts.enforce_categories:
        if spec.get("value_set") is None:
            why = (
                f"more than validation.max_categories ({opts.max_categories}) values"
                if kind == "string" or categorical
                else f"{kind} values, not categories (list it in columns.categorical)"
            )
            raise ConfigError(
                f"validation.enforce_categories[{opts.enforce_categories.index(name)}]: {name!r} has {why} "
                "in the reference; there is no category set to enforce"
            )
        spec["enforce_set"] = True
    limit = opts.limits.get(name)
    if limit is not None:
        spec["declared_limits"] = True
        if limit.allowed is not None:
            spec["allowed_values"] = list(limit.allowed)
        elif kind != "numeric":
            raise ConfigError(
                f"validation.limits.{name}: min/max need a numeric column but {name!r} is {kind} in "
                "the reference; give allowed values instead"
            )
        else:
            spec |= {"limit_min": limit.min, "limit_max": limit.max}
    return ColumnSpec(**spec)


def _prediction_spec(ref: pd.Series, config: ModelConfig) -> ColumnSpec:
    name = config.columns.prediction
    if config.problem_type == "binary_classification":
        kind = column_kind(ref)
        allowed: list[Any] = [False, True] if kind == "bool" else [0, 1]
        return ColumnSpec(name=name, role="prediction", kind=kind, allowed_values=allowed)
    if config.problem_type == "multiclass_classification":
        # The classes of columns.probability, typed as the reference writes its predictions.
        assert config.classes is not None
        kind = column_kind(ref)
        classes: list[Any] = list(config.classes)
        if kind == "numeric":
            classes = [int(k) if k.lstrip("-").isdigit() else float(k) for k in classes]
        return ColumnSpec(name=name, role="prediction", kind=kind, allowed_values=classes)
    return ColumnSpec(name=name, role="prediction", kind="numeric", finite=True)


# ----------------------------------------------------------------------------- validating


class Validator:
    """Validates batches against one suite; the GX context and suites are built once."""

    def __init__(self, suite: SuiteSpec) -> None:
        # isort: off
        from evergreen.engines.gx import gx, skip_batch_fingerprint  # first: no cloud SDKs
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        # isort: on

        skip_batch_fingerprint()
        self.spec = suite
        project = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self._gx = gx
        self._context = gx.get_context(project_config=project, mode="ephemeral")
        self._datasource = self._context.data_sources.add_pandas("evergreen")
        asset = self._datasource.add_dataframe_asset("batch")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole-batch")
        self._suites: dict[tuple[frozenset[str], bool, bool], Any] = {}
        self._suite_for(frozenset(), True)  # the common case, built up front

    def validate(
        self, batch: pd.DataFrame, batch_id: str, now: dt.datetime | pd.Timestamp | None = None
    ) -> ValidationReport:
        """Validate one batch; never raises on bad data, returns the failures instead.

        The batch fails when an integrity (critical) expectation fails; a distribution
        expectation that fails becomes a per-column finding and the batch passes."""
        import time

        started = time.perf_counter()
        structural, broken = check_structure(batch, self.spec)
        use_constant = len(batch) >= self.spec.min_rows_for_constant_check > 0
        if use_constant:
            check_constant(batch, self.spec, broken, structural)
        # Column expectations are vacuous on zero rows (and a max of nothing is NaT): only the
        # row count speaks for an empty batch.
        skipped = {c.name for c in self.spec.columns} if batch.empty else broken
        suite = self._suite_for(frozenset(skipped), use_constant)
        parameters = {NOW_PARAMETER: self._now_bound(batch, broken, now)}
        # Pass/fail first (BOOLEAN_ONLY skips the unexpected-value lists); only a batch that
        # fails an integrity check is validated again with BASIC, whose results name the
        # values for the report. Distribution findings are described from the batch itself
        # (share, observed range, unseen categories with counts), so a batch the world has
        # moved under is validated once.
        try:
            result = self._run(batch, suite, parameters, "BOOLEAN_ONLY")
            if any(_is_critical(r) for r in result.results if not r.success):
                result = self._run(batch, suite, parameters, "BASIC")
        finally:
            self._forget_batch()
        failed = [r for r in result.results if not r.success]
        clock_columns = {c.name for c in self.spec.columns if c.not_future}
        gx_failures = [_failure_from_gx(r, clock_columns) for r in failed if _is_critical(r)]
        findings, unevaluated = [], []
        for r in failed:
            if _is_critical(r):
                continue
            if r.exception_info and _exception_message(r.exception_info):
                unevaluated.append(_failure_from_gx(r, clock_columns))
            else:
                column = self.spec.column(r.expectation_config.kwargs["column"])
                findings.append(describe_finding(batch, column, _check_of(r)))
        evaluated = len(structural.checks) + len(result.results)
        successful = evaluated - len(structural.failures) - len(failed)
        failures = structural.failures + gx_failures
        return ValidationReport(
            success=not failures,
            batch_id=batch_id,
            failures=failures,
            statistics=ValidationStatistics(evaluated=evaluated, successful=successful),
            rows=len(batch),
            seconds=time.perf_counter() - started,
            warnings=structural.warnings + unevaluated,
            findings=findings,
        )

    def validate_chunks(
        self,
        chunks: Iterable[pd.DataFrame],
        batch_id: str,
        now: dt.datetime | pd.Timestamp | None = None,
        rows: int = VALIDATION_ROWS,
    ) -> ValidationReport:
        """`validate` of the table whose rows `chunks` yields in order, with the memory of
        about `rows` rows: GX runs on each group of `rows` rows and the results are merged,
        so the report holds the same counts and failures as `validate` of all the rows.

        Per group: GX's column-value expectations (nulls, limits, sets, ranges: their counts
        add up; `mostly` is judged on the sums, as GX judges it) and the timestamp's maximum
        (the largest of the groups'). On all the rows at the end: the row count; whether
        the ids are unique (GX on the id column alone, ~8 bytes a row); whether a column
        the reference saw vary is constant (numbers: the smallest and largest value of the
        groups; other kinds: GX's distinct count on the groups' distinct values). A column
        whose kind differs between groups fails the structure check once, named by the
        first group where it does."""
        started = time.perf_counter()
        bound = utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
        merged = _ChunkMerge(self.spec)
        groups = _regroup(chunks, rows)
        first = next(groups, None)
        second = next(groups, None)
        if second is None:  # one group: as `validate` of the whole table
            return self.validate(first if first is not None else pd.DataFrame(), batch_id, now=bound)
        for group in itertools.chain([first, second], groups):
            if group.empty:
                continue
            structural, broken = check_structure(group, self.spec)
            merged.add_structure(structural, broken)
            suite = self._suite_for(frozenset(broken), False, per_chunk=True)
            parameters = {NOW_PARAMETER: self._now_bound(group, broken, bound)}
            try:
                result = self._run(group, suite, parameters, "BASIC")
            finally:
                self._forget_batch()
            merged.add_results(group, result.results)
        if merged.rows == 0:  # no rows: the whole-batch path says it as well
            return self.validate(first, batch_id, now=bound)
        results = merged.results(self._whole_column_results(merged))
        structural = merged.structural
        use_constant = merged.rows >= self.spec.min_rows_for_constant_check > 0
        if use_constant:
            merged.check_constant(structural)
        failed = [r for r in results if not r.success]
        clock_columns = {c.name for c in self.spec.columns if c.not_future}
        gx_failures = [_failure_from_gx(r, clock_columns) for r in failed if _is_critical(r)]
        findings, unevaluated = [], []
        for r in failed:
            if _is_critical(r):
                continue
            if r.exception_info and _exception_message(r.exception_info):
                unevaluated.append(_failure_from_gx(r, clock_columns))
            else:
                column = self.spec.column(r.expectation_config.kwargs["column"])
                findings.append(merged.figures[column.name].finding(column, _check_of(r)))
        evaluated = len(structural.checks) + len(results)
        successful = evaluated - len(structural.failures) - len(failed)
        failures = structural.failures + gx_failures
        report = ValidationReport(
            success=not failures,
            batch_id=batch_id,
            failures=failures,
            statistics=ValidationStatistics(evaluated=evaluated, successful=successful),
            rows=merged.rows,
            seconds=time.perf_counter() - started,
            warnings=structural.warnings + unevaluated,
            findings=findings,
        )
        release_unused_memory()
        return report

    def _whole_column_results(self, merged: _ChunkMerge) -> dict[tuple[str, str], Any]:
        """GX's results of the expectations judged on all the rows of one column at once:
        unique ids (on the column), the distinct count of a non-numeric column (on each
        group's distinct values: the same count)."""
        out: dict[tuple[str, str], Any] = {}
        use_constant = merged.rows >= self.spec.min_rows_for_constant_check > 0
        wanted = [
            e for e in build_expectations(self.spec, merged.broken, use_constant) if e.expectation_type in _WHOLE_COLUMN
        ]
        for expectation in wanted:
            column = expectation.column
            values = merged.whole_columns.get((expectation.expectation_type, column))
            if values is None:
                continue
            frame = pd.DataFrame({column: pd.concat(values, ignore_index=True)})
            if expectation.expectation_type == CONSTANT_EXPECTATION:
                frame = frame.drop_duplicates(ignore_index=True)
            suite = self._gx.ExpectationSuite(name=f"{self.spec.name}-whole-{column}", expectations=[expectation])
            try:
                result = self._run(frame, suite, {}, "BASIC")
            finally:
                self._forget_batch()
            out[(expectation.expectation_type, column)] = result.results[0]
        return out

    def _run(self, batch: pd.DataFrame, suite: Any, parameters: dict[str, Any], result_format: str) -> Any:
        """GX's batch validator, run once (`Batch.validate` would build the same validator
        after a `get_batch` of its own: two batches, two sets of cached metrics)."""
        from great_expectations.validator.v1_validator import Validator as BatchValidator

        validator = BatchValidator(
            batch_definition=self._batch_definition,
            batch_parameters={"dataframe": batch},
            result_format=result_format,
        )
        return validator.validate_expectation_suite(suite, parameters)

    def _forget_batch(self) -> None:
        """Drop what GX's pandas engine keeps of a validated batch.

        The engine lives as long as the context (here: the process) and keeps the last
        batch and every metric it computed on it, among them a boolean mask over the whole
        batch per expectation: ~60 MB per million rows, resident until the next validation
        replaces them, so for the rest of a retrain (through training, its memory peak).
        A validation resolves its whole metric graph afresh, so nothing is lost. GX has no
        public call to empty the metric cache."""
        engine = self._datasource.get_execution_engine()
        engine.batch_manager.reset_batch_cache()
        engine.batch_manager.batch_data_cache.clear()
        engine._metric_cache.clear()  # noqa: SLF001

    def _now_bound(
        self, batch: pd.DataFrame, broken: set[str], now: dt.datetime | pd.Timestamp | None
    ) -> pd.Timestamp:
        bound = utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
        bound = bound + pd.Timedelta(seconds=self.spec.clock_skew_seconds)
        # GX compares with the column as is: match its timezone-awareness or the check errors.
        # Naive timestamps are taken as UTC.
        ts_cols = [c.name for c in self.spec.columns if c.not_future and c.name not in broken]
        tz = batch[ts_cols[0]].dt.tz if ts_cols else None
        return bound.tz_localize(None) if tz is None else bound.tz_convert(tz)

    def _suite_for(self, broken: frozenset[str], use_constant: bool, per_chunk: bool = False) -> Any:
        key = (broken, use_constant, per_chunk)
        if key not in self._suites:
            # Given all at once: `add_expectation` compares each new expectation with every
            # one before it through pydantic dumps (quadratic: ~0.2 s for 65 of them).
            # `build_expectations` makes no two alike, so GX's set semantics lose nothing.
            expectations = build_expectations(self.spec, broken, use_constant)
            if per_chunk:  # judged on all the rows by `validate_chunks`
                expectations = [e for e in expectations if e.expectation_type not in _WHOLE_COLUMN]
            self._suites[key] = self._gx.ExpectationSuite(
                name=f"{self.spec.name}-{len(self._suites)}", expectations=expectations
            )
        return self._suites[key]


UNIQUE_EXPECTATION = "expect_column_values_to_be_unique"
MAX_EXPECTATION = "expect_column_max_to_be_between"
_WHOLE_COLUMN = (UNIQUE_EXPECTATION, CONSTANT_EXPECTATION)


def _regroup(chunks: Iterable[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """The chunks joined into groups of at least `rows` rows (the last may hold fewer);
    a single empty chunk comes through as it is."""
    waiting: list[pd.DataFrame] = []
    held = 0
    for chunk in chunks:
        waiting.append(chunk)
        held += len(chunk)
        if held >= rows:
            yield pd.concat(waiting, ignore_index=True) if len(waiting) > 1 else waiting[0]
            waiting, held = [], 0
    if waiting:
        yield pd.concat(waiting, ignore_index=True) if len(waiting) > 1 else waiting[0]


class _MergedResult:
    """A GX expectation result merged over groups of rows: what `_failure_from_gx` and the
    report read (`expectation_config`, `success`, `result`, `exception_info`)."""

    def __init__(self, config: Any, success: bool, result: dict[str, Any], exception_info: Any = None) -> None:
        self.expectation_config = config
        self.success = success
        self.result = result
        self.exception_info = exception_info


class _ChunkMerge:
    """The state `Validator.validate_chunks` keeps across groups of rows."""

    def __init__(self, spec: SuiteSpec) -> None:
        self.spec = spec
        self.rows = 0
        self.structural: StructuralCheck = StructuralCheck()
        self.broken: set[str] = set()
        self._seen_structure = False
        self._results: dict[tuple[str, str | None, str], list[Any]] = {}
        self._order: list[tuple[str, str | None, str]] = []
        self.figures: dict[str, FindingFigures] = {}
        self.whole_columns: dict[tuple[str, str], list[pd.Series]] = {}
        self._extremes: dict[str, tuple[Any, Any]] = {}

    def add_structure(self, structural: StructuralCheck, broken: set[str]) -> None:
        if not self._seen_structure:
            self.structural, self._seen_structure = structural, True
        else:
            known = {(f.expectation_type, f.column) for f in self.structural.failures}
            self.structural.failures += [f for f in structural.failures if (f.expectation_type, f.column) not in known]
        self.broken |= broken

    def add_results(self, group: pd.DataFrame, results: list[Any]) -> None:
        self.rows += len(group)
        for r in results:
            config = r.expectation_config
            key = (config.type, config.kwargs.get("column"), str((config.meta or {}).get("check")))
            if key not in self._results:
                self._results[key] = []
                self._order.append(key)
            self._results[key].append(r)
            check = _check_of(r)
            column = config.kwargs.get("column")
            if not _is_critical_config(config) and check in ("range", "categories"):
                spec = self.spec.column(column)
                figures = FindingFigures.of(group[column], spec, check)
                self.figures[column] = self.figures[column].merge(figures) if column in self.figures else figures
        for col in self.spec.columns:
            if col.name in self.broken or col.name not in group.columns:
                continue
            if col.unique:
                self.whole_columns.setdefault((UNIQUE_EXPECTATION, col.name), []).append(group[col.name])
            if col.not_constant and col.kind != "numeric":
                distinct = group[col.name].drop_duplicates()
                self.whole_columns.setdefault((CONSTANT_EXPECTATION, col.name), []).append(distinct)
            if col.not_constant and col.kind == "numeric":
                lo, hi = group[col.name].min(), group[col.name].max()
                if col.name in self._extremes:
                    was_lo, was_hi = self._extremes[col.name]
                    lo = was_lo if pd.isna(lo) else lo if pd.isna(was_lo) else min(lo, was_lo)
                    hi = was_hi if pd.isna(hi) else hi if pd.isna(was_hi) else max(hi, was_hi)
                self._extremes[col.name] = (lo, hi)

    def results(self, whole: dict[tuple[str, str], Any]) -> list[Any]:
        """The merged results, in the suite's order, without those of columns found broken
        in any group; the whole-column ones from `whole`."""
        use_constant = self.rows >= self.spec.min_rows_for_constant_check > 0
        order = {
            (e.expectation_type, getattr(e, "column", None), str((e.meta or {}).get("check"))): i
            for i, e in enumerate(build_expectations(self.spec, self.broken, use_constant))
        }
        out = [
            (key, _merge_results(self._results[key], self.rows))
            for key in self._order
            if key[1] is None or key[1] not in self.broken
        ]
        out += [((kind, column, "None"), r) for (kind, column), r in whole.items() if column not in self.broken]
        return [r for key, r in sorted(out, key=lambda item: order.get(item[0], len(order)))]

    def check_constant(self, into: StructuralCheck) -> None:
        """`check_constant` on the groups' smallest and largest values."""
        frame = pd.DataFrame({name: pd.Series([lo, hi]) for name, (lo, hi) in self._extremes.items()})
        check_constant(frame, self.spec, self.broken, into)


def _is_critical_config(config: Any) -> bool:
    severity = config.severity
    return str(getattr(severity, "value", severity)) == CRITICAL


def _merge_results(results: list[Any], rows: int) -> Any:
    """One expectation's results on consecutive groups of rows, as GX gives it on all of them."""
    # GX's own helpers: the merged counts are judged and formatted as GX does on one batch.
    from great_expectations.expectations.expectation import (
        _format_map_output,
        _mostly_success,
        parse_result_format,
    )

    first = results[0]
    config = first.expectation_config
    raised = next((r for r in results if r.exception_info and _exception_message(r.exception_info)), None)
    if raised is not None:
        return raised
    if len(results) == 1:
        return first
    kind = config.type
    parts = [dict(r.result or {}) for r in results]
    if kind == ROW_COUNT_EXPECTATION:
        low, high = config.kwargs.get("min_value"), config.kwargs.get("max_value")
        success = (low is None or rows >= low) and (high is None or rows <= high)
        return _MergedResult(config, success, {"observed_value": rows})
    if kind == MAX_EXPECTATION:
        observed = [p.get("observed_value") for p in parts if p.get("observed_value") is not None]
        observed = [v for v in observed if not pd.isna(v)]
        return _MergedResult(config, all(r.success for r in results), {"observed_value": max(observed) if observed else None})
    element = sum(int(p.get("element_count") or 0) for p in parts)
    unexpected = sum(int(p.get("unexpected_count") or 0) for p in parts)
    sample = [v for p in parts for v in (p.get("partial_unexpected_list") or [])]
    mostly = float(config.kwargs.get("mostly") or 1.0)
    if "missing_count" in parts[0]:  # a column map expectation: judged on the non-null values
        nonnull: int | None = element - sum(int(p.get("missing_count") or 0) for p in parts)
        success = True if element == 0 or not nonnull else _mostly_success(nonnull, unexpected, mostly)
    else:  # not-null: judged on every row
        nonnull = None
        success = True if element == 0 else (element - unexpected) / element >= mostly
    formatted = _format_map_output(
        result_format=parse_result_format("BASIC"),
        success=success,
        element_count=element,
        nonnull_count=nonnull,
        unexpected_count=unexpected,
        unexpected_list=sample,
    )
    return _MergedResult(config, bool(formatted["success"]), formatted["result"])


def validate_batch(
    batch: pd.DataFrame,
    suite: SuiteSpec,
    batch_id: str,
    now: dt.datetime | pd.Timestamp | None = None,
) -> ValidationReport:
    """Validate one batch; `now` (default: the current time) bounds its timestamps.

    The GX context and suite of a spec are built once and kept for the next calls with the
    same spec (a few specs at most), so calling this per batch costs no set-up.
    """
    report = _validator_for(suite.model_dump_json()).validate(batch, batch_id, now=now)
    release_unused_memory()  # GX's temporaries, in the thread that made them
    return report


def validate_chunks(
    chunks: Iterable[pd.DataFrame],
    suite: SuiteSpec,
    batch_id: str,
    now: dt.datetime | pd.Timestamp | None = None,
    rows: int = VALIDATION_ROWS,
) -> ValidationReport:
    """`validate_batch` of a table given as chunks of rows, in about `rows` rows of memory
    (`Validator.validate_chunks`): the same counts and failures."""
    return _validator_for(suite.model_dump_json()).validate_chunks(chunks, batch_id, now=now, rows=rows)


@functools.lru_cache(maxsize=8)
def _validator_for(spec_json: str) -> Validator:
    return Validator(SuiteSpec.model_validate_json(spec_json))


def build_expectations(
    spec: SuiteSpec, skip_columns: Iterable[str] = (), use_constant: bool = True
) -> list:
    """The GX expectations of a suite, leaving out columns that are missing or of the wrong kind.

    Integrity expectations have GX's default severity (critical); a distribution expectation
    is a "warning" unless the spec enforces it. `meta.check` names the value checks: "limit"
    (impossible values), "range" and "categories" (the reference's)."""
    from evergreen.engines.gx import gx

    gxe = gx.expectations

    skip = set(skip_columns)
    out: list = [
        gxe.ExpectTableRowCountToBeBetween(min_value=spec.min_rows, max_value=spec.max_rows)
    ]
    for col in spec.columns:
        if col.name in skip:
            continue
        name = col.name
        if col.max_null_fraction < 1:
            mostly = 1.0 - col.max_null_fraction
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=mostly))
        if col.unique:
            out.append(gxe.ExpectColumnValuesToBeUnique(column=name))
        if col.finite:
            out.append(
                gxe.ExpectColumnValuesToNotBeInSet(column=name, value_set=[math.inf, -math.inf])
            )
        if col.limit_min is not None or col.limit_max is not None:
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name, min_value=col.limit_min, max_value=col.limit_max, meta=_limit_meta(col)
                )
            )
        if col.allowed_values is not None:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=name, value_set=col.allowed_values, meta=_limit_meta(col)
                )
            )
        if col.min_value is not None or col.max_value is not None:
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name,
                    min_value=col.min_value,
                    max_value=col.max_value,
                    mostly=col.range_mostly,
                    severity=CRITICAL if col.enforce_range else WARNING,
                    meta={"check": "range"},
                )
            )
        if col.value_set is not None:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=name,
                    value_set=col.value_set,
                    mostly=col.set_mostly,
                    severity=CRITICAL if col.enforce_set else WARNING,
                    meta={"check": "categories"},
                )
            )
        # Numeric columns are checked for constancy with min == max in pandas (`check_constant`):
        # GX counts distinct values, which costs ~60 ms per million floats and column.
        if col.not_constant and use_constant and col.kind != "numeric":
            out.append(gxe.ExpectColumnUniqueValueCountToBeBetween(column=name, min_value=2))
        if col.not_future:
            # The column max against `now`: a row-wise datetime comparison costs seconds per million rows.
            out.append(
                gxe.ExpectColumnMaxToBeBetween(column=name, max_value={"$PARAMETER": NOW_PARAMETER})
            )
    return out


def _limit_meta(col: ColumnSpec) -> dict[str, str]:
    rule = f"validation.limits.{col.name}" if col.declared_limits else f"a {col.kind} {col.role}"
    return {"check": "limit", "rule": rule}


def _is_critical(result: Any) -> bool:
    """Whether a failed GX result rejects the batch (an integrity or enforced check)."""
    severity = result.expectation_config.severity  # a FailureSeverity (a str enum)
    return str(getattr(severity, "value", severity)) == CRITICAL


def _check_of(result: Any) -> Check | None:
    return (result.expectation_config.meta or {}).get("check")


def describe_finding(batch: pd.DataFrame, col: ColumnSpec, check: Check | None) -> DistributionFinding:
    """The finding of a distribution check GX failed on `col`: the share and count of the
    column's non-null values beyond its range (with the observed range) or in unseen
    categories (the most frequent, with counts). Read from the batch: GX's BOOLEAN_ONLY
    result carries no figures, and running BASIC again would cost a second validation."""
    return FindingFigures.of(batch[col.name], col, check).finding(col, check)


@dataclass
class FindingFigures:
    """What a distribution finding reports about a column, from one batch or summed over
    the chunks of one (`merge`): non-null values, values beyond the range or unseen, the
    observed range, and the unseen categories with their counts (in order of appearance)."""

    total: int = 0
    count: int = 0
    low: Any = None
    high: Any = None
    unseen: dict[Any, int] = field(default_factory=dict)

    @classmethod
    def of(cls, column: pd.Series, col: ColumnSpec, check: Check | None) -> FindingFigures:
        values = column.dropna()
        if check == "range":
            numbers = pd.to_numeric(values, errors="coerce").astype(float)
            lo = -math.inf if col.min_value is None else col.min_value
            hi = math.inf if col.max_value is None else col.max_value
            count = int(((numbers < lo) | (numbers > hi)).sum())
            low, high = (_plain(numbers.min()), _plain(numbers.max())) if len(numbers) else (None, None)
            return cls(total=len(values), count=count, low=low, high=high)
        unseen = values[~values.isin(col.value_set or [])]
        counts = unseen.value_counts(sort=False)
        return cls(total=len(values), count=len(unseen), unseen={v: int(n) for v, n in counts.items()})

    def merge(self, other: FindingFigures) -> FindingFigures:
        unseen = dict(self.unseen)
        for value, n in other.unseen.items():
            unseen[value] = unseen.get(value, 0) + n
        lows = [v for v in (self.low, other.low) if v is not None]
        highs = [v for v in (self.high, other.high) if v is not None]
        return FindingFigures(
            total=self.total + other.total,
            count=self.count + other.count,
            low=min(lows) if lows else None,
            high=max(highs) if highs else None,
            unseen=unseen,
        )

    def finding(self, col: ColumnSpec, check: Check | None) -> DistributionFinding:
        total = max(self.total, 1)
        if check == "range":
            lo = -math.inf if col.min_value is None else col.min_value
            hi = math.inf if col.max_value is None else col.max_value
            count = self.count
            bounds = [col.min_value, col.max_value]
            reference = [col.reference_min, col.reference_max]
            observed = [self.low, self.high]
            message = (
                f"{count / total:.2%} of values ({count:,}) beyond [{_figure(lo)}, {_figure(hi)}] (the reference's "
                f"[{_figure(col.reference_min)}, {_figure(col.reference_max)}] widened); observed "
                f"[{_figure(observed[0])}, {_figure(observed[1])}]; at most {1 - col.range_mostly:.2%} tolerated"
            )
            return DistributionFinding(
                column=col.name, check="range", expectation_type=BETWEEN_EXPECTATION, share=count / total,
                count=count, tolerated_share=round(1 - col.range_mostly, 12), bounds=_plain(bounds),
                reference_range=_plain(reference), observed_range=observed, message=message,
            )
        # The most frequent first, ties in order of appearance (as `value_counts` orders them).
        ranked = sorted(self.unseen.items(), key=lambda item: -item[1])
        top = [{"value": _plain(v), "count": int(n)} for v, n in ranked[:10]]
        shown = ", ".join(f"{t['value']!r} ({t['count']:,})" for t in top[:5])
        distinct = len(self.unseen)
        more = f" and {distinct - 5} more" if distinct > 5 else ""
        message = (
            f"{self.count / total:.2%} of values ({self.count:,}) are categories the reference never had: "
            f"{shown}{more}; at most {1 - col.set_mostly:.2%} tolerated"
        )
        return DistributionFinding(
            column=col.name, check="categories", expectation_type=IN_SET_EXPECTATION, share=self.count / total,
            count=self.count, tolerated_share=round(1 - col.set_mostly, 12), unseen=top, message=message,
        )


def _figure(value: Any) -> str:  # noqa: ANN401 - a number, an "inf" text or None
    return f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


@dataclass
class StructuralCheck:
    checks: list[str] = field(default_factory=list)
    failures: list[ExpectationFailure] = field(default_factory=list)
    warnings: list[ExpectationFailure] = field(default_factory=list)


_ACCEPTED_KINDS: dict[str, set[str]] = {
    "numeric": {"numeric"},
    "string": {"string"},
    # Nulls turn a bool column into object dtype; the value-set expectation then checks the values.
    "bool": {"bool", "string"},
    "datetime": {"datetime"},
}


def check_structure(batch: pd.DataFrame, spec: SuiteSpec) -> tuple[StructuralCheck, set[str]]:
    """Column existence and dtype kind, checked on dtypes only (cheap, and GX raises on them).

    Columns the suite does not know are warnings, not failures: producers add columns, and
    monitoring and training read only the configured ones. A missing column is reported
    with the unknown column that looks like it (a rename upstream). Returns the checks and
    the columns that must be left out of the GX suite.
    """
    result = StructuralCheck()
    broken: set[str] = set()
    known = {c.name for c in spec.columns} | set(spec.allowed_extra)
    unexpected = list(dict.fromkeys(str(c) for c in batch.columns if str(c) not in known))
    result.checks.append("expect_table_columns_to_be_unique")
    dupes = sorted({str(c) for c in batch.columns[batch.columns.duplicated()]})
    if dupes:
        broken.update(dupes)
        result.failures.append(
            ExpectationFailure(
                "expect_table_columns_to_be_unique",
                None,
                dupes,
                "each column once",
                f"columns {dupes} appear more than once; drop the duplicates upstream",
            )
        )
    for col in spec.columns:
        result.checks.append(EXIST_EXPECTATION)
        if col.name not in batch.columns:
            broken.add(col.name)
            result.failures.append(
                ExpectationFailure(
                    EXIST_EXPECTATION,
                    col.name,
                    None,
                    col.name,
                    f"column {col.name!r} ({col.role}) is missing; the batch must carry it"
                    + _rename_hint(col.name, unexpected),
                )
            )
            continue
        if col.name in broken:
            continue
        result.checks.append(TYPE_EXPECTATION)
        kind = column_kind(batch[col.name])
        if kind not in _ACCEPTED_KINDS[col.kind]:
            broken.add(col.name)
            result.failures.append(
                ExpectationFailure(
                    TYPE_EXPECTATION,
                    col.name,
                    str(batch[col.name].dtype),
                    col.kind,
                    f"column {col.name!r} has dtype {batch[col.name].dtype} ({kind}) but the reference "
                    f"is {col.kind}; convert it before scoring",
                )
            )
    result.checks.append(COLUMNS_EXPECTATION)
    for name in unexpected:
        result.warnings.append(
            ExpectationFailure(
                COLUMNS_EXPECTATION,
                name,
                str(batch[name].dtype) if batch.columns.tolist().count(name) == 1 else None,
                sorted(known),
                f"column {name!r} is not in the reference; ignored (monitoring and retraining "
                "use the configured columns only)",
            )
        )
    return result, broken


def _rename_hint(missing: str, unexpected: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(missing, unexpected, n=1, cutoff=0.6)
    if close:
        return f"; the batch has {close[0]!r} instead — renamed upstream?"
    if unexpected:
        return f"; columns the reference lacks: {unexpected[:5]}"
    return ""


def unreadable_report(batch_id: str, error: DataReadError) -> ValidationReport:
    """The report of a batch file that could not be read (or was refused before reading),
    so it is rejected with the same fields as a batch that failed its expectations."""
    message = str(error)
    if message.startswith(f"{batch_id}: "):
        message = message[len(batch_id) + 2 :]
    failure = ExpectationFailure(
        error.expectation, error.column, _plain(error.observed), _plain(error.expected), message
    )
    return ValidationReport(
        success=False,
        batch_id=batch_id,
        failures=[failure],
        statistics=ValidationStatistics(evaluated=1, successful=0),
    )


def check_constant(
    batch: pd.DataFrame, spec: SuiteSpec, broken: set[str], into: StructuralCheck
) -> None:
    """Numeric columns that vary in the reference must vary in the batch (min < max)."""
    for col in spec.columns:
        if not (col.not_constant and col.kind == "numeric") or col.name in broken:
            continue
        into.checks.append(CONSTANT_EXPECTATION)
        values = batch[col.name]
        lo, hi = values.min(), values.max()
        if not (lo < hi):  # also true when every value is null
            into.failures.append(
                ExpectationFailure(
                    CONSTANT_EXPECTATION,
                    col.name,
                    1 if lo == hi else 0,
                    {"min_value": 2},
                    f"every value is {_plain(lo)}: the column is constant but varies in the reference",
                )
            )


# ----------------------------------------------------------------------------- GX results


def _failure_from_gx(result: Any, clock_columns: set[str]) -> ExpectationFailure:
    config = result.expectation_config
    kind = config.type
    kwargs = dict(config.kwargs)
    column = kwargs.get("column")
    res = dict(result.result or {})
    error = _exception_message(result.exception_info)
    expected = {k: _plain(v) for k, v in kwargs.items() if k not in ("column", "batch_id")}
    if error is not None:
        return ExpectationFailure(
            kind, column, None, expected, f"GX could not evaluate it: {error}"
        )
    if "observed_value" in res:
        observed: Any = _plain(res["observed_value"])
    else:
        observed = {
            "unexpected_count": _plain(res.get("unexpected_count")),
            "unexpected_percent": _plain(res.get("unexpected_percent")),
            "sample": _sample(res),
        }
    meta = config.meta or {}
    return ExpectationFailure(
        kind, column, observed, expected,
        _describe(kind, kwargs, res, column in clock_columns, meta.get("check"), meta.get("rule", "")),
    )


def _sample(res: dict[str, Any], size: int = 5) -> list[Any]:
    """A few distinct offending values (GX lists the first 20, repeats included)."""
    distinct = list(dict.fromkeys(_plain(list(res.get("partial_unexpected_list") or []))))
    return distinct[:size]


def _describe(
    kind: str,
    kwargs: dict[str, Any],
    res: dict[str, Any],
    is_clock: bool = False,
    check: str | None = None,
    rule: str = "",
) -> str:
    count = res.get("unexpected_count")
    # GX measures `mostly` against non-null values; report the same share.
    pct = res.get("unexpected_percent_nonmissing", res.get("unexpected_percent")) or 0.0
    allowed = 100.0 * (1.0 - float(kwargs.get("mostly") or 1.0))
    sample = _sample(res)
    if kind == "expect_table_row_count_to_be_between":
        return (
            f"{res.get('observed_value')} rows; expected between {kwargs.get('min_value')} "
            f"and {kwargs.get('max_value')}"
        )
    if kind == "expect_column_values_to_not_be_null":
        pct_nulls = res.get("unexpected_percent") or 0.0
        return f"{pct_nulls:.2f}% nulls ({count} row(s)); at most {allowed:.2f}% allowed"
    if kind == "expect_column_values_to_be_unique":
        return f"{count} rows share their value with another row (e.g. {sample}); values must be unique"
    if kind == "expect_column_values_to_not_be_in_set":
        return f"{count} infinite values; replace them upstream"
    if kind == BETWEEN_EXPECTATION:
        bounds = f"[{kwargs.get('min_value')}, {_plain(kwargs.get('max_value'))}]"
        if check == "limit":
            return f"{pct:.2f}% of values ({count}) outside the possible {bounds} ({rule}); e.g. {sample}"
        return (
            f"{pct:.2f}% of values ({count}) outside {bounds}; at most {allowed:.2f}% allowed "
            f"(validation.enforce_range: the reference range, widened); e.g. {sample}"
        )
    if kind == IN_SET_EXPECTATION:
        if check == "limit":
            return (
                f"{pct:.2f}% of values ({count}) are not among the possible values {kwargs.get('value_set')} "
                f"({rule}); e.g. {sample}"
            )
        return (
            f"{pct:.2f}% of values ({count}) are not in the reference set; at most {allowed:.2f}% "
            f"allowed (validation.enforce_categories); e.g. {sample}"
        )
    if kind == "expect_column_max_to_be_between" and is_clock:
        return (
            f"the latest timestamp {_plain(res.get('observed_value'))} is after now "
            f"({_plain(kwargs.get('max_value'))}, clock skew included); check the producer's clock "
            "or the `now` passed in"
        )
    if kind == "expect_column_unique_value_count_to_be_between":
        return f"{res.get('observed_value')} distinct value(s): the column is constant but varies in the reference"
    return f"failed: {res}"


def _exception_message(info: Any) -> str | None:
    """GX nests exception info per metric when a metric fails; find the first raised one."""
    if not info:
        return None
    if not isinstance(info, dict):
        info = getattr(info, "to_json_dict", lambda: None)() or {}
    if "exception_message" in info:
        raised = info.get("raised_exception", True)
        return str(info["exception_message"]) if raised and info["exception_message"] else None
    for value in info.values():
        found = _exception_message(value)
        if found:
            return found
    return None


# Reports keep an infinite value or bound readable ("inf"), where null would read as missing.
_plain = functools.partial(plain, infinity_as_text=True)


# ----------------------------------------------------------------------------- labels


def validate_labels(
    labels: pd.DataFrame,
    batch_ids_known: Iterable[Any] | None,
    config: ModelConfig,
    batch_id: str = "labels",
    max_unknown_fraction: float = 0.0,
) -> ValidationReport:
    """Check a labels file: id and target present, ids unique and known, targets possible.

    `batch_ids_known` are the ids served in batches (None skips that check). Plain pandas:
    labels files are small and need no distribution checks.
    """
    import time

    started = time.perf_counter()
    id_col, target = config.columns.id, config.columns.target
    checks: list[bool] = []
    failures: list[ExpectationFailure] = []

    def check(ok: bool, failure: ExpectationFailure) -> None:
        checks.append(ok)
        if not ok:
            failures.append(failure)

    check(
        len(labels) > 0,
        ExpectationFailure(
            "expect_table_row_count_to_be_between",
            None,
            0,
            {"min_value": 1},
            "the labels file has no rows",
        ),
    )
    for name in (id_col, target):
        check(
            name in labels.columns,
            ExpectationFailure(
                EXIST_EXPECTATION,
                name,
                None,
                name,
                f"labels lack column {name!r}; labels are (id, target) pairs",
            ),
        )
    if id_col in labels.columns:
        ids = labels[id_col]
        nulls = int(ids.isna().sum())
        check(
            nulls == 0,
            ExpectationFailure(
                "expect_column_values_to_not_be_null",
                id_col,
                nulls,
                0,
                f"{nulls} labels have no id",
            ),
        )
        dupes = int(ids.duplicated(keep=False).sum())
        sample = _plain(ids[ids.duplicated()].unique()[:5])
        check(
            dupes == 0,
            ExpectationFailure(
                "expect_column_values_to_be_unique",
                id_col,
                dupes,
                0,
                f"{dupes} labels share an id (e.g. {sample})",
            ),
        )
        if batch_ids_known is not None:
            present_ids = ids.dropna()
            if isinstance(batch_ids_known, pd.Index) and batch_ids_known.is_unique:
                # A unique index answers from its own hash table, built once for all the
                # labels files checked against it (`isin` would hash every served id again).
                served = batch_ids_known.get_indexer(present_ids) >= 0
            else:
                known = pd.Index(
                    batch_ids_known
                    if not isinstance(batch_ids_known, (set, frozenset))
                    else list(batch_ids_known)
                )
                served = present_ids.isin(known).to_numpy()
            unknown = present_ids[~served]
            share = len(unknown) / max(len(ids), 1)
            check(
                share <= max_unknown_fraction,
                ExpectationFailure(
                    "expect_column_values_to_be_in_set",
                    id_col,
                    {"unexpected_count": len(unknown), "sample": _plain(unknown.unique()[:5])},
                    {"mostly": 1 - max_unknown_fraction},
                    f"{len(unknown)} labels ({100 * share:.2f}%) name ids no batch served "
                    f"(e.g. {_plain(unknown.unique()[:5])})",
                ),
            )
    if target in labels.columns:
        values = labels[target]
        nulls = int(values.isna().sum())
        check(
            nulls == 0,
            ExpectationFailure(
                "expect_column_values_to_not_be_null",
                target,
                nulls,
                0,
                f"{nulls} labels have no target value",
            ),
        )
        present = values.dropna()
        if config.problem_type == "multiclass_classification":
            assert config.classes is not None
            known = set(config.classes)
            bad = present[~present.map(class_key).isin(known)]
            check(
                bad.empty,
                ExpectationFailure(
                    "expect_column_values_to_be_in_set",
                    target,
                    {"unexpected_count": len(bad), "sample": _plain(bad.unique()[:5])},
                    list(config.classes),
                    f"{len(bad)} targets are not classes of columns.probability "
                    f"(e.g. {_plain(bad.unique()[:5])}; the classes are {list(config.classes)})",
                ),
            )
        elif config.problem_type == "binary_classification":
            bad = (
                present[~present.isin([0, 1])]
                if column_kind(present) != "bool"
                else present.iloc[:0]
            )
            check(
                bad.empty,
                ExpectationFailure(
                    "expect_column_values_to_be_in_set",
                    target,
                    {"unexpected_count": len(bad), "sample": _plain(bad.unique()[:5])},
                    [0, 1],
                    f"{len(bad)} targets are not 0/1 (e.g. {_plain(bad.unique()[:5])})",
                ),
            )
        else:
            numeric = pd.to_numeric(present, errors="coerce")
            bad = present[numeric.isna() | ~np.isfinite(numeric.astype(float))]
            check(
                bad.empty,
                ExpectationFailure(
                    "expect_column_values_to_be_in_type_list",
                    target,
                    {"unexpected_count": len(bad), "sample": _plain(bad.unique()[:5])},
                    "finite numbers",
                    f"{len(bad)} targets are not finite numbers (e.g. {_plain(bad.unique()[:5])})",
                ),
            )
    return ValidationReport(
        success=not failures,
        batch_id=batch_id,
        failures=failures,
        statistics=ValidationStatistics(evaluated=len(checks), successful=sum(checks)),
        rows=len(labels),
        seconds=time.perf_counter() - started,
    )
