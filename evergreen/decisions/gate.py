"""The validation gate: may a challenger replace the champion? A pure decision.

`engines.scoring.measure_model` gathers a model's evidence on the shared evaluation rows (metrics,
calibration, slices, scores, latency, size); `decide_promotion` compares the challenger's
evidence with the champion's under a `GateConfig` and returns a `GateDecision` listing
every check, with one sentence per failed check saying by how much it failed.

Checks (all must pass):

- floor: the metric is at least `gate.metric_floor` (at most, for lower-is-better metrics).
- relative_margin: non_inferiority: challenger >= champion - margin; improvement:
  challenger >= champion + margin (both in the metric's better direction).
- slices: no slice (present for both models, >= `min_slice_rows` rows) worse than the
  champion's by more than `gate.slice_margin`.
- bootstrap: paired bootstrap interval of the challenger's gain over the champion on the
  same rows; its lower bound must exceed -margin (non_inferiority) or 0 (improvement), so
  that a gain noise could explain does not promote.
- calibration (classifiers): challenger brier <= champion brier + `gate.calibration_margin`
  (the multiclass Brier score for a multiclass model, see `evaluation`).
- latency / size: within `gate.max_latency_ms` (per 1,000 rows) and `gate.max_model_mb`.

Without a champion only floor, latency and size apply; the decision lists the others as
skipped. "Gain" is always oriented so that positive means the challenger is better.

Scores are one per row (binary, regression) or a row of class probabilities (multiclass):
the checks are the same, the metric maths in `evaluation` takes either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from evergreen.config import GateConfig
from evergreen.decisions.evaluation import (
    DECISION_METRICS,
    EvaluationResult,
    bootstrap_metric_difference,
    lower_is_better,
)
from evergreen.jsonable import plain as _plain

if TYPE_CHECKING:
    pass

MIN_SLICE_ROWS = 200
"""Slices with fewer rows (in either model's evaluation) are too noisy to block a promotion:
an AUC on 100 rows has a standard error of 0.03-0.05, as large as `gate.slice_margin`."""
BYTES_PER_MB = 1_000_000
LATENCY_ROWS = 1000
THRESHOLD_METRICS = DECISION_METRICS
"""Metrics computed from decisions (a 0/1 class at the model's threshold, or the most probable
class) rather than scores (see `_bootstrap_scores`)."""
# Absorbs float rounding so that a value exactly at a limit passes (0.92 vs 0.925 - 0.005).
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class ModelEvidence:
    """What the gate knows about one model, measured on the shared evaluation rows.
    `scores`: one per row, or rows x classes for a multiclass model."""

    version: str
    evaluation: EvaluationResult
    scores: np.ndarray = field(repr=False)
    latency_ms_per_1000: float
    size_mb: float


@dataclass(frozen=True)
class GateCheck:
    """One gate check. `value` is compared with `threshold` (None where not numeric)."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str
    high: float | None = None  # the bootstrap check: the upper end of the gain's interval


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict: `passed` when every applicable check passed.

    `reasons` holds one sentence per failed check; `skipped` one per check that did not
    apply (no champion, no floor configured, regression has no calibration...).
    """

    passed: bool
    challenger_version: str
    champion_version: str | None
    metric: str
    mode: str
    checks: list[GateCheck]
    reasons: list[str]
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs, events and version tags."""
        against = (
            f"against champion {self.champion_version}"
            if self.champion_version is not None
            else "with no champion to compare against (absolute checks only)"
        )
        head = (
            f"gate {'passed' if self.passed else 'failed'} for version "
            f"{self.challenger_version} {against}"
        )
        if self.passed:
            return f"{head}: {len(self.checks)} checks passed"
        return f"{head}: " + "; ".join(self.reasons)

    def check(self, name: str) -> GateCheck | None:
        """The check called `name`, or None when it was skipped."""
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (NaN -> None), safe for Prefect event payloads and tags."""
        out = _plain(asdict(self))
        out["summary"] = self.summary()
        return out


def decide_promotion(
    challenger: ModelEvidence,
    champion: ModelEvidence | None,
    y_true: Any,
    gate: GateConfig,
    problem_type: str,
    metric: str,
    min_slice_rows: int = MIN_SLICE_ROWS,
) -> GateDecision:
    """Decide whether `challenger` may replace `champion` (None: there is none yet).

    Both evidences must come from the same evaluation rows, whose labels are `y_true`
    (0/1, values, or class codes for multiclass: `evaluation.target_values`).
    Pure: no I/O; the bootstrap is seeded by `gate.seed`.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    _check_rows(challenger, y, "challenger")
    checks: list[GateCheck] = []
    skipped: list[str] = []

    floor = _check_floor(challenger, gate, metric)
    if floor is None:
        skipped.append("floor: skipped, gate.metric_floor is not set")
    else:
        checks.append(floor)

    if champion is None:
        skipped.append(
            "relative margin, slices, bootstrap, calibration: skipped, there is no champion "
            "to compare against (first model)"
        )
    else:
        _check_rows(champion, y, "champion")
        checks.append(_check_margin(challenger, champion, gate, metric))
        slices = _check_slices(challenger, champion, gate, metric, min_slice_rows)
        if slices is None and not challenger.evaluation.slices:
            skipped.append("slices: skipped, the evaluation has no slice columns")
        elif slices is None:
            skipped.append(
                f"slices: skipped, no slice has at least {min_slice_rows} rows "
                "and a defined metric for both models"
            )
        else:
            checks.append(slices)
        checks.append(_check_bootstrap(challenger, champion, y, gate, problem_type, metric))
        calibration = _check_calibration(challenger, champion, gate)
        if calibration is None:
            skipped.append("calibration: skipped, only classifiers have a brier score")
        else:
            checks.append(calibration)

    checks.append(_check_latency(challenger, gate))
    checks.append(_check_size(challenger, gate))
    return GateDecision(
        passed=all(c.passed for c in checks),
        challenger_version=challenger.version,
        champion_version=None if champion is None else champion.version,
        metric=metric,
        mode=gate.mode,
        checks=checks,
        reasons=[f"{c.name.replace('_', ' ')}: {c.detail}" for c in checks if not c.passed],
        skipped=skipped,
    )


# ----------------------------------------------------- comparisons (shared with the canary)


def metric_gain(new: float, old: float, metric: str) -> float:
    """How much better `new` is than `old` in metric units (negative: worse), whichever
    direction the metric improves in."""
    return old - new if lower_is_better(metric) else new - old


def clears(gain: float, threshold: float) -> bool:
    """Whether a gain is defined and at least `threshold` (-margin: non-inferior; +margin:
    an improvement), a gain exactly at the threshold passing despite float rounding."""
    return math.isfinite(gain) and gain >= threshold - _TOLERANCE


def describe_gain(gain: float, metric: str) -> str:
    """'is 0.013 below' / 'is 0.1 above' / 'equals': the new model's raw metric value
    against the old one's, for a sentence "new <metric> <value> {this} old <value>"."""
    if gain == 0:
        return "equals"
    raw_up = (gain > 0) != lower_is_better(metric)  # did the raw metric value go up?
    return f"is {format_value(abs(gain))} {'above' if raw_up else 'below'}"


def format_value(x: float | None) -> str:
    """A metric value for a reason sentence: 4 significant digits, "undefined" for None/NaN."""
    if x is None or not math.isfinite(x):
        return "undefined"
    if abs(x) >= 1000:
        return f"{x:,.1f}"
    return f"{x:.4g}"


# --------------------------------------------------------------------------- checks


def _check_floor(challenger: ModelEvidence, gate: GateConfig, metric: str) -> GateCheck | None:
    if gate.metric_floor is None:
        return None
    value, floor = _metric_of(challenger, metric), gate.metric_floor
    lower = lower_is_better(metric)
    # For an error metric the "floor" is a ceiling: the worst value still acceptable.
    passed = math.isfinite(value) and (
        value <= floor + _TOLERANCE if lower else value >= floor - _TOLERANCE
    )
    word = "at most" if lower else "at least"
    if not math.isfinite(value):
        detail = f"challenger {metric} is undefined on the evaluation rows (required: {word} {format_value(floor)})"
    elif passed:
        detail = f"challenger {metric} {format_value(value)} is {word} {format_value(floor)}"
    else:
        side = "above" if lower else "below"
        detail = (
            f"challenger {metric} {format_value(value)} is {format_value(abs(value - floor))} {side} the "
            f"{'ceiling' if lower else 'floor'} {format_value(floor)}"
        )
    return GateCheck("floor", passed, value, floor, detail)


def _check_margin(
    challenger: ModelEvidence, champion: ModelEvidence, gate: GateConfig, metric: str
) -> GateCheck:
    new, old = _metric_of(challenger, metric), _metric_of(champion, metric)
    gain = metric_gain(new, old, metric)
    improvement = gate.mode == "improvement"
    threshold = gate.margin if improvement else -gate.margin
    passed = clears(gain, threshold)
    compared = f"challenger {metric} {format_value(new)} {describe_gain(gain, metric)} champion {format_value(old)}"
    if not math.isfinite(gain):
        detail = f"challenger {metric} {format_value(new)} or champion {format_value(old)} is undefined"
    elif improvement:
        detail = f"{compared} (required improvement: {format_value(gate.margin)})"
    else:
        detail = f"{compared} (allowed: {format_value(gate.margin)})"
    return GateCheck("relative_margin", passed, gain, threshold, detail)


def _check_slices(
    challenger: ModelEvidence,
    champion: ModelEvidence,
    gate: GateConfig,
    metric: str,
    min_rows: int,
) -> GateCheck | None:
    if not challenger.evaluation.metric == champion.evaluation.metric == metric:
        return None  # slice metrics are computed in the evaluation's metric only
    old_by_key = {(s.column, s.value): s for s in champion.evaluation.slices}
    compared: list[tuple[float, str]] = []
    for new in challenger.evaluation.slices:
        old = old_by_key.get((new.column, new.value))
        if old is None or min(new.n, old.n) < min_rows:
            continue
        gain = metric_gain(new.metric, old.metric, metric)
        if not math.isfinite(gain):
            continue  # e.g. AUC on a slice holding one class: no evidence either way
        where = f"{new.column}={new.value} (n={new.n})"
        text = f"{where}: challenger {metric} {format_value(new.metric)} {describe_gain(gain, metric)} champion {format_value(old.metric)}"
        compared.append((gain, text))
    if not compared:
        return None
    threshold = -gate.slice_margin
    failing = sorted((g, t) for g, t in compared if not clears(g, threshold))
    worst_gain = min(g for g, _ in compared)
    if failing:
        more = f"; and {len(failing) - 1} more slice(s)" if len(failing) > 1 else ""
        detail = f"{failing[0][1]} (allowed: {format_value(gate.slice_margin)}){more}"
    else:
        detail = (
            f"{len(compared)} slice(s) compared; the worst is "
            f"{min(compared)[1]} (allowed: {format_value(gate.slice_margin)})"
        )
    return GateCheck("slices", not failing, worst_gain, threshold, detail)


def _check_bootstrap(
    challenger: ModelEvidence,
    champion: ModelEvidence,
    y: np.ndarray,
    gate: GateConfig,
    problem_type: str,
    metric: str,
) -> GateCheck:
    new_scores = _bootstrap_scores(challenger, metric)
    old_scores = _bootstrap_scores(champion, metric)
    interval = bootstrap_metric_difference(
        y,
        new_scores,
        old_scores,
        problem_type,
        metric,
        n_samples=gate.bootstrap_samples,
        confidence=gate.confidence,
        seed=gate.seed,
        # 0/1 decisions for threshold metrics (see _bootstrap_scores); unused by the others.
        threshold=0.5,
    )
    # The interval is of metric(challenger) - metric(champion); flip it for error metrics
    # so that its lower bound is always the pessimistic gain.
    low, high = (
        (-interval.high, -interval.low)
        if lower_is_better(metric)
        else (interval.low, interval.high)
    )
    improvement = gate.mode == "improvement"
    threshold = 0.0 if improvement else -gate.margin
    pct = f"{gate.confidence:.0%}"
    passed = math.isfinite(low) and low > threshold
    if not math.isfinite(low):
        detail = (
            f"the {pct} interval of the {metric} gain is undefined "
            "(the metric is undefined on every resample)"
        )
    else:
        span = f"{pct} interval of the challenger's {metric} gain over the champion is [{format_value(low)}, {format_value(high)}]"
        if passed:
            detail = f"{span}; its lower bound is above {format_value(threshold)}"
        elif improvement:
            detail = (
                f"{span}; its lower bound {format_value(low)} is not above 0, so noise could explain "
                "the improvement"
            )
        else:
            detail = (
                f"{span}; its lower bound {format_value(low)} is not above {format_value(threshold)}, so the "
                f"challenger may be worse than the allowed margin {format_value(gate.margin)}"
            )
    return GateCheck("bootstrap", passed, low, threshold, detail, high if math.isfinite(high) else None)


def evidence_factor(results: dict[str, Any]) -> float | None:
    """How many times its evaluation rows a challenger that failed the bootstrap check would
    have needed for the interval to clear the threshold, if the point gain held (the interval
    narrows as 1/sqrt(rows)); None when the check passed, is missing, or the gain is not above
    the threshold (more rows would not help the same model). `results`: `GateDecision.to_dict()`."""
    check = next((c for c in results.get("checks") or [] if c.get("name") == "bootstrap"), None)
    if not check or check.get("passed"):
        return None
    low, high, threshold = check.get("value"), check.get("high"), check.get("threshold")
    if low is None or high is None or threshold is None:
        return None
    gain = (low + high) / 2
    if not (math.isfinite(gain) and gain > threshold and gain > low):
        return None
    return ((gain - low) / (gain - threshold)) ** 2


def _check_calibration(
    challenger: ModelEvidence, champion: ModelEvidence, gate: GateConfig
) -> GateCheck | None:
    new, old = challenger.evaluation.calibration, champion.evaluation.calibration
    if new is None or old is None:
        return None
    worse_by = new.brier - old.brier
    passed = math.isfinite(worse_by) and worse_by <= gate.calibration_margin + _TOLERANCE
    word = "above" if worse_by > 0 else "below"
    detail = (
        f"challenger brier {format_value(new.brier)} is {format_value(abs(worse_by))} {word} champion "
        f"{format_value(old.brier)} (allowed: {format_value(gate.calibration_margin)} above)"
    )
    return GateCheck("calibration", passed, worse_by, gate.calibration_margin, detail)


def _check_latency(challenger: ModelEvidence, gate: GateConfig) -> GateCheck:
    value, limit = challenger.latency_ms_per_1000, gate.max_latency_ms
    passed = value <= limit
    detail = f"challenger takes {format_value(value)} ms per 1,000 rows" + (
        f" (limit: {format_value(limit)})" if passed else f", {format_value(value - limit)} over the limit {format_value(limit)}"
    )
    return GateCheck("latency", passed, value, limit, detail)


def _check_size(challenger: ModelEvidence, gate: GateConfig) -> GateCheck:
    value, limit = challenger.size_mb, gate.max_model_mb
    passed = value <= limit
    detail = f"challenger model is {format_value(value)} MB" + (
        f" (limit: {format_value(limit)})" if passed else f", {format_value(value - limit)} over the limit {format_value(limit)}"
    )
    return GateCheck("size", passed, value, limit, detail)


# --------------------------------------------------------------------------- helpers


def _check_rows(evidence: ModelEvidence, y: np.ndarray, role: str) -> None:
    n = len(np.asarray(evidence.scores))
    if n != len(y) or evidence.evaluation.n != len(y):
        raise ValueError(
            f"{role} version {evidence.version} has {n} scores and an evaluation on "
            f"{evidence.evaluation.n} rows, but y_true has {len(y)}; measure both models on "
            "the same evaluation rows"
        )


def _metric_of(evidence: ModelEvidence, metric: str) -> float:
    evaluation = evidence.evaluation
    if evaluation.metric == metric:
        return float(evaluation.value)
    if metric in evaluation.metrics:
        return float(evaluation.metrics[metric])
    raise ValueError(
        f"the evaluation of version {evidence.version} holds {evaluation.metric!r}, not "
        f"{metric!r}; evaluate it with the gate's metric"
    )


def _bootstrap_scores(evidence: ModelEvidence, metric: str) -> np.ndarray:
    """Scores to resample. Threshold metrics get each model's own 0/1 decisions, so two
    models with different thresholds are compared on what they would actually decide; a
    multiclass model's decision is its most probable class, which the metric takes from the
    probabilities themselves."""
    scores = np.asarray(evidence.scores, dtype=np.float64)
    if scores.ndim == 2:
        return scores
    scores = scores.ravel()
    if metric in THRESHOLD_METRICS:
        return (scores >= evidence.evaluation.threshold).astype(np.float64)
    return scores


@dataclass(frozen=True)
class RollbackCheck:
    """Whether rolling the champion back would help, judged on the same fresh labelled rows."""

    worth_it: bool
    reason: str


def decide_rollback(current: ModelEvidence, previous: ModelEvidence, metric: str, margin: float, rows: int) -> RollbackCheck:
    """Roll back only when the previous champion beats the current one by more than `margin`
    on the freshest labelled rows. A performance drop right after a promotion can be the
    data drifting under both models, and then the older model is no cure."""
    cur, prev = current.evaluation.value, previous.evaluation.value
    gain = metric_gain(prev, cur, metric)
    where = f"on the {rows} freshest labelled rows: previous v{previous.version} {metric} {format_value(prev)}, champion v{current.version} {format_value(cur)}"
    if gain > margin:
        return RollbackCheck(True, f"previous champion is better by {format_value(gain)} (> {format_value(margin)}) {where}")
    return RollbackCheck(False, f"previous champion is not better by more than {format_value(margin)} {where}; keeping the champion")
