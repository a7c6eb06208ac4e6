"""The alert decision on a monitor report: drift and/or degraded performance, and why.

Pure: a `MonitorReport` (plain values from `evergreen.engines.monitoring`), the batch's
distribution findings (`reports.DistributionFinding`, from validation) and the config's
thresholds in, an `AlertDecision` and the payloads of its drift/performance events out.

Distribution findings are drift evidence: a feature with values beyond the reference's
range or in categories the reference never had counts as a drifted feature, whether or not
NannyML's distance on it crossed its threshold (a few far-out values move a histogram
distance little, and they are what the model never saw). So they feed the same
`feature_drift` signal, its share and its retrain policy (`decisions.policy`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from evergreen.config import ModelConfig
from evergreen.decisions.defaults import MIN_SAMPLE_ROWS
from evergreen.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED
from evergreen.jsonable import plain as _plain
from evergreen.reports import DistributionFinding

if TYPE_CHECKING:
    from evergreen.engines.monitoring import MetricEstimate, MonitorReport


@dataclass(frozen=True)
class AlertSignal:
    """One reason to alert; `kind` uses the retrain policy's signal names."""

    kind: Literal["feature_drift", "multivariate_drift", "estimated_drop", "realized_drop"]
    metric: str
    value: float
    threshold: float
    reason: str
    rule: Literal["share", "band", "drop", "floor"]


@dataclass(frozen=True)
class AlertDecision:
    """Whether a batch shows drift and/or degraded performance, and why (pure data)."""

    model_name: str
    drift_detected: bool
    performance_degraded: bool
    drifted_features: list[str]
    reasons: list[str]
    signals: list[AlertSignal]
    chunk: str | None = None
    metric: str = ""
    estimated_value: float | None = None
    realized_value: float | None = None
    reference_value: float | None = None
    notes: list[str] = field(default_factory=list)  # alerts held back, and why
    # The realized metric's distance from its reference, worse-positive (metric units, either
    # direction of metric), its sampling error and the labelled rows it rests on.
    realized_worse_by: float | None = None
    realized_error: float | None = None
    realized_rows: int | None = None

    def event_payloads(self) -> dict[str, dict[str, Any]]:
        """Plain-JSON payloads of the events this decision calls for, keyed by event name."""
        out: dict[str, dict[str, Any]] = {}
        drift = [s for s in self.signals if s.kind in ("feature_drift", "multivariate_drift")]
        if self.drift_detected and drift:
            first = drift[0]
            out[DRIFT_DETECTED] = _plain(
                {
                    "model": self.model_name,
                    "metric": first.metric,
                    "value": first.value,
                    "threshold": first.threshold,
                    "chunk": self.chunk,
                    "reason": "; ".join(s.reason for s in drift),
                    "drifted_features": list(self.drifted_features),
                    "signals": [vars(s) for s in drift],
                }
            )
        perf = [s for s in self.signals if s.kind in ("estimated_drop", "realized_drop")]
        if self.performance_degraded and perf:
            first = perf[0]
            out[PERFORMANCE_DEGRADED] = _plain(
                {
                    "model": self.model_name,
                    "metric": self.metric,
                    "source": "estimated" if first.kind == "estimated_drop" else "realized",
                    "estimated": self.estimated_value,
                    "realized": self.realized_value,
                    "reference_value": self.reference_value,
                    "value": first.value,
                    "threshold": first.threshold,
                    "chunk": self.chunk,
                    "reason": "; ".join(s.reason for s in perf),
                    "signals": [vars(s) for s in perf],
                }
            )
        return out


def decide_alerts(
    report: MonitorReport, config: ModelConfig, findings: Sequence[DistributionFinding] = ()
) -> AlertDecision:
    """Drift when enough features alert (or the multivariate error leaves its band); degraded
    performance when the estimated or realized metric falls below reference - performance_drop
    or past metric_floor.

    A feature drifts when NannyML's univariate distance alerts on it or when validation
    found its values beyond the reference's range or in unseen categories (`findings`).

    For lower-is-better metrics (mae, rmse, ...) the drop is relative: worse than
    reference * (1 + performance_drop); the floor is then a ceiling.
    """
    mon = config.monitoring
    signals: list[AlertSignal] = []
    beyond = {f.column: f for f in findings if f.column in config.columns.features}
    alerting = report.drifted_features
    drifted = [n for n in config.columns.features if n in alerting or n in beyond]
    drifted += [n for n in alerting if n not in drifted]
    share = len(drifted) / max(len(report.features), 1)
    if drifted and share >= mon.drifted_feature_share:
        names = ", ".join(_drift_reason(n, report, beyond.get(n)) for n in drifted)
        signals.append(
            AlertSignal(
                "feature_drift",
                "drifted_feature_share",
                share,
                mon.drifted_feature_share,
                f"{len(drifted)} of {len(report.features)} features drifted ({share:.0%} >= "
                f"{mon.drifted_feature_share:.0%}): {names}",
                "share",
            )
        )
    mv = report.multivariate
    if mon.multivariate_drift and mv is not None and mv.alert and mv.value is not None:
        bound = mv.upper if mv.upper is not None and mv.value > mv.upper else mv.lower
        signals.append(
            AlertSignal(
                "multivariate_drift",
                "reconstruction_error",
                mv.value,
                bound if bound is not None and math.isfinite(bound) else 0.0,
                f"multivariate reconstruction error {format_figure(mv.value)} is outside "
                f"[{format_figure(mv.lower)}, {format_figure(mv.upper)}]",
                "band",
            )
        )
    notes: list[str] = []
    for estimate in (report.estimated_metric, report.realized_metric):
        if estimate is None:
            continue
        for signal in _performance_signals(estimate, config):
            held = too_small_to_estimate(estimate, signal, config)
            if held is None:
                signals.append(signal)
            elif held not in notes:
                notes.append(held)
    estimated, realized = report.estimated_metric, report.realized_metric
    worse_by = None
    if realized is not None and realized.value is not None and realized.reference_value is not None:
        worse_by = float(_worse_by(realized.value, realized.reference_value, config))
    return AlertDecision(
        model_name=config.name,
        drift_detected=any(s.kind in ("feature_drift", "multivariate_drift") for s in signals),
        performance_degraded=any(s.kind in ("estimated_drop", "realized_drop") for s in signals),
        drifted_features=drifted,
        reasons=[s.reason for s in signals],
        signals=signals,
        chunk=estimated.chunk,
        metric=config.metric,
        estimated_value=estimated.value,
        realized_value=realized.value if realized else None,
        reference_value=estimated.reference_value,
        notes=notes,
        realized_worse_by=worse_by,
        realized_error=realized.sampling_error if realized else None,
        realized_rows=realized.rows if realized else None,
    )


def _drift_reason(name: str, report: MonitorReport, finding: DistributionFinding | None) -> str:
    """Why one feature counts as drifted: NannyML's distance over its threshold and/or the
    share of its values the reference never had."""
    parts = []
    feature = report.features.get(name)
    if feature is not None and feature.alert:
        parts.append(f"{feature.method} {format_figure(feature.value)} > {format_figure(feature.threshold)}")
    if finding is not None:
        where = "beyond the reference range" if finding.check == "range" else "in unseen categories"
        parts.append(f"{finding.share:.1%} of values {where}")
    return f"{name} ({'; '.join(parts)})"


def too_small_to_estimate(estimate: MetricEstimate, signal: AlertSignal, config: ModelConfig) -> str | None:
    """Why a performance `signal` raised on a batch's estimated or realized metric is no
    evidence (None: it is). Too small a batch: the metric rests on fewer than 30 rows
    (labelled rows, for the realized metric), or it is past its anchor (the reference value
    for a drop, the floor for a floor) by no more than `monitoring.drop_sampling_errors` of
    its sampling errors (NannyML's, from the rows it rests on): chance alone moves it that
    far (with 2, about one batch in 40). A drop well beyond the noise alerts on any batch."""
    kind, metric = estimate.kind, config.metric
    rows, error, value = estimate.rows, estimate.sampling_error, signal.value
    what = f"{rows} {'labelled ' if kind == 'realized' else ''}rows" if rows is not None else "rows unknown"
    head = f"batch too small to estimate ({what}, sampling error {format_figure(error)})"
    if rows is not None and rows < MIN_SAMPLE_ROWS:
        return (
            f"{head}: {kind} {metric} {format_figure(value)} rests on fewer than {MIN_SAMPLE_ROWS} rows; "
            f"no {kind}_drop alert"
        )
    sigmas = config.monitoring.drop_sampling_errors
    anchor, name = (
        (estimate.reference_value, "the reference") if signal.rule == "drop" else (signal.threshold, "the floor")
    )
    if error is None or anchor is None or sigmas <= 0:
        return None
    worse_by = _worse_by(value, anchor, config)
    if worse_by > sigmas * error:
        return None
    allowed = _allowed_drop(estimate, config)
    needed = (
        f"; batches of about {math.ceil(rows * (sigmas * error / allowed) ** 2):,} rows can show a drop of "
        f"{format_figure(allowed)} (monitoring.performance_drop)"
        if rows and allowed and signal.rule == "drop"
        else ""
    )
    return (
        f"{head}: {kind} {metric} {format_figure(value)} is {format_figure(worse_by)} worse than {name} "
        f"{format_figure(anchor)}, within {sigmas:g} sampling errors ({format_figure(sigmas * error)}, "
        f"monitoring.drop_sampling_errors): no {kind}_drop alert{needed}"
    )


def _worse_by(value: float, anchor: float, config: ModelConfig) -> float:
    """How much worse `value` is than `anchor` in metric units (negative: better), whichever
    way the metric points."""
    return anchor - value if config.higher_is_better else value - anchor


def _allowed_drop(estimate: MetricEstimate, config: ModelConfig) -> float | None:
    """The configured drop in metric units (relative for lower-is-better metrics)."""
    ref, drop = estimate.reference_value, config.monitoring.performance_drop
    if ref is None:
        return None
    return drop if config.higher_is_better else abs(ref) * drop


def _performance_signals(estimate: MetricEstimate, config: ModelConfig) -> list[AlertSignal]:
    if estimate.value is None:
        return []
    kind: Literal["estimated_drop", "realized_drop"] = (
        "estimated_drop" if estimate.kind == "estimated" else "realized_drop"
    )
    higher = config.higher_is_better
    drop, floor = config.monitoring.performance_drop, config.monitoring.metric_floor
    value, ref = estimate.value, estimate.reference_value
    out = []
    if ref is not None:
        threshold = ref - drop if higher else ref * (1 + drop)
        if (value < threshold) if higher else (value > threshold):
            how = f"more than {drop:g} below" if higher else f"more than {drop:.0%} above"
            out.append(
                AlertSignal(
                    kind,
                    config.metric,
                    value,
                    threshold,
                    f"{estimate.kind} {config.metric} {format_figure(value)} is {how} the reference {format_figure(ref)} "
                    f"(threshold {format_figure(threshold)})",
                    "drop",
                )
            )
    if floor is not None and ((value < floor) if higher else (value > floor)):
        word = "below the floor" if higher else "above the ceiling"
        out.append(
            AlertSignal(
                kind,
                config.metric,
                value,
                floor,
                f"{estimate.kind} {config.metric} {format_figure(value)} is {word} {format_figure(floor)}",
                "floor",
            )
        )
    return out


def format_figure(value: float | None) -> str:
    """A drift or metric figure in a reason: 4 significant digits, "n/a" when absent."""
    return "n/a" if value is None else f"{value:.4g}"
