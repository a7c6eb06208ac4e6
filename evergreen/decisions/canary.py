"""The canary review: promote, roll back, or wait. A pure decision.

`collect_arm_evidence` summarises what one arm (champion or canary) served, from the
prediction log and the labels that have arrived; `decide_canary` compares the two arms on
the traffic each actually served.

Rules, in order:

1. pending while the canary has served fewer than `canary.min_predictions` rows;
2. the basis is the realized metric when both arms have at least `canary.min_labels`
   labelled rows with a defined metric; else both models on the same labelled production
   rows that arrived after the canary's training data (`PairedEvidence`: labels land on
   batches served before the canary started long before the canary's own traffic is
   labelled; a paired bootstrap makes few rows conclusive) when there are at least
   `canary.min_labels`; else the estimated metric (CBPE/DLE, filled in by the flow) when
   both arms have one; else pending with the labels still needed;
3. promoted when the canary's gain over the champion (positive: canary better, whatever
   the metric's direction) is >= -`canary.margin`, rolled back otherwise.

Noise (documented choice): when both arms carry their labelled rows (`ArmEvidence.labelled`)
and `bootstrap_samples > 0`, an unpaired bootstrap (each arm resampled on its own rows,
seeded) gives an interval of the gain. Before the review window has elapsed
(`window_elapsed=False`) a decision is only taken when the interval is conclusive (wholly
above or wholly below -margin); otherwise the review stays pending with an estimate of the
labels that would make it conclusive. Once the window has elapsed, rule 3 decides on the
point estimate and the interval is reported alongside. The arms serve disjoint rows (ids
are hashed to an arm), so a paired bootstrap is not possible here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from evergreen.columns import ALIAS_COLUMN
from evergreen.config import CanaryConfig, ModelConfig
from evergreen.decisions.evaluation import (
    MULTICLASS,
    bootstrap_metric_difference,
    lower_is_better,
    metric_value,
    served_scores,
    target_values,
)
from evergreen.decisions.gate import (
    THRESHOLD_METRICS,
    clears,
    describe_gain,
    format_value,
    metric_gain,
)
from evergreen.jsonable import plain as _plain

Outcome = Literal["promoted", "rolled_back", "pending"]
Basis = Literal["realized", "paired", "estimated"]

PROMOTED: Outcome = "promoted"
ROLLED_BACK: Outcome = "rolled_back"
PENDING: Outcome = "pending"
# A cap for "labels needed" when the estimate diverges (gain exactly at the margin).
_MAX_NEEDED = 1_000_000_000


@dataclass(frozen=True)
class LabelledScores:
    """An arm's labelled rows: labels (class codes for multiclass) and the scores its
    metric is computed from (one per row, or rows x classes)."""

    y_true: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if len(self.y_true) != len(self.scores):
            raise ValueError(
                f"LabelledScores has {len(self.y_true)} labels but {len(self.scores)} scores; "
                "pass one score per labelled row"
            )


@dataclass(frozen=True)
class PairedEvidence:
    """Both models scored on the same labelled production rows newer than everything the
    canary was trained or evaluated on: `y_true` and each model's scores."""

    y_true: np.ndarray
    canary: np.ndarray
    champion: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.y_true)


@dataclass(frozen=True)
class ArmEvidence:
    """What one arm served during the review window.

    `mean_prediction` is the positive rate for a binary classifier (mean of the served 0/1
    decisions) and the mean predicted value for a regressor; None with no rows and for a
    multiclass model (its classes have no mean).
    `labelled` holds the labelled rows for the bootstrap; it is left out of `to_dict()`.
    """

    alias: str
    version: str
    n_predictions: int
    n_labelled: int
    realized_metric: float | None
    estimated_metric: float | None = None
    mean_prediction: float | None = None
    labelled: LabelledScores | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (NaN -> None), without the labelled rows."""
        return _plain({f.name: getattr(self, f.name) for f in fields(self) if f.name != "labelled"})


@dataclass(frozen=True)
class EvidenceNeeded:
    """How much more the review needs before it can decide (0: enough of that)."""

    predictions: int
    labels: int
    champion_labels: int = 0


@dataclass(frozen=True)
class CanaryDecision:
    """The review's verdict with its evidence.

    `gain` = canary minus champion on `basis`, oriented so that positive means the canary
    is better; `gain_low`/`gain_high` its bootstrap interval when one was computed.
    `prediction_shift` = canary minus champion mean prediction (positive rate for classifiers).
    """

    outcome: Outcome
    canary_version: str
    champion_version: str
    metric: str
    margin: float
    reasons: list[str]
    basis: Basis | None = None
    canary_value: float | None = None
    champion_value: float | None = None
    gain: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    prediction_shift: float | None = None
    needed: EvidenceNeeded | None = None
    canary: ArmEvidence | None = field(default=None, repr=False)
    champion: ArmEvidence | None = field(default=None, repr=False)

    def summary(self) -> str:
        """One line for logs, events and version tags."""
        return (
            f"canary {self.canary_version} vs champion {self.champion_version}: "
            f"{self.outcome.replace('_', ' ')}: " + "; ".join(self.reasons)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (NaN -> None), safe for Prefect event payloads."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["needed"] = None if self.needed is None else asdict(self.needed)
        out["canary"] = None if self.canary is None else self.canary.to_dict()
        out["champion"] = None if self.champion is None else self.champion.to_dict()
        out["summary"] = self.summary()
        return _plain(out)


def collect_arm_evidence(
    log: pd.DataFrame,
    labels: pd.DataFrame | None,
    config: ModelConfig,
    version: str,
    alias: str,
    estimated_metric: float | None = None,
) -> ArmEvidence:
    """Summarise the rows of `log` that `version` served under `alias`.

    `log` is the prediction log (id, prediction, probability columns, model version and
    `alias` columns); `labels` holds (id, target) rows delivered so far (None: none yet; an
    id delivered twice counts once, the latest delivery wins). The realized metric uses the
    served probabilities for ranking/probability metrics and the served decision for
    threshold metrics (`evaluation.served_scores`), so it measures what the arm actually
    did. `estimated_metric` is the CBPE/DLE estimate for this arm, computed by the caller.
    """
    cols = config.columns
    metric, problem_type = config.metric, config.problem_type
    uses_probability = problem_type != "regression" and metric not in THRESHOLD_METRICS
    needed = [cols.id, cols.prediction, cols.model_version, ALIAS_COLUMN]
    if uses_probability:
        if not config.probability_columns:
            raise ValueError(f"metric {metric!r} needs columns.probability to be configured")
        needed += config.probability_columns
    _require(log, needed, "prediction log")

    served = log.loc[
        (log[ALIAS_COLUMN].astype(str) == str(alias))
        & (log[cols.model_version].astype(str) == str(version))
    ]
    predictions = pd.to_numeric(served[cols.prediction], errors="coerce")
    target = _labels_for(served, labels, config)
    has_label = ~np.isnan(target)
    labelled = None
    realized = None
    if has_label.any():
        y = target[has_label]
        s = served_scores(served, config)[has_label]
        labelled = LabelledScores(y_true=y, scores=s)
        realized = _finite_or_none(metric_value(y, s, problem_type, metric))
    mean_prediction = None
    if len(served) and problem_type != MULTICLASS:
        mean_prediction = _finite_or_none(float(predictions.mean()))
    return ArmEvidence(
        alias=str(alias),
        version=str(version),
        n_predictions=len(served),
        n_labelled=int(has_label.sum()),
        realized_metric=realized,
        estimated_metric=_finite_or_none(estimated_metric),
        mean_prediction=mean_prediction,
        labelled=labelled,
    )


def decide_canary(
    canary: ArmEvidence,
    champion: ArmEvidence,
    canary_cfg: CanaryConfig,
    problem_type: str,
    metric: str,
    *,
    window_elapsed: bool = True,
    bootstrap_samples: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    paired: PairedEvidence | None = None,
) -> CanaryDecision:
    """Promote, roll back or keep waiting (see the module docstring for the rules).

    `window_elapsed=False` (the canary started less than `canary.window_hours` ago) lets
    an inconclusive bootstrap keep the review pending; the default decides on the point
    estimate. Pure; the bootstrap (only when both arms carry `labelled` rows and the basis
    is realized) is seeded by `seed`.
    """
    if canary_cfg.min_predictions is None or canary_cfg.min_labels is None:
        raise ValueError(
            "canary.min_predictions / canary.min_labels are unset here: pass the config through "
            "evergreen.decisions.defaults.canary_config, which derives them from data.rows_per_batch"
        )
    decision = CanaryDecision(
        outcome=PENDING,
        canary_version=canary.version,
        champion_version=champion.version,
        metric=metric,
        margin=canary_cfg.margin,
        reasons=[],
        prediction_shift=_shift(canary, champion),
        canary=canary,
        champion=champion,
    )
    short_predictions = max(canary_cfg.min_predictions - canary.n_predictions, 0)
    realized_ok = _has_realized(canary, canary_cfg) and _has_realized(champion, canary_cfg)
    paired_ok = not realized_ok and _has_paired(paired, canary_cfg, problem_type, metric)
    estimated_ok = canary.estimated_metric is not None and champion.estimated_metric is not None
    if short_predictions or not (realized_ok or paired_ok or estimated_ok):
        can_compare = realized_ok or paired_ok or estimated_ok
        needed = EvidenceNeeded(
            predictions=short_predictions,
            labels=0 if can_compare else _labels_short(canary, canary_cfg),
            champion_labels=0 if can_compare else _labels_short(champion, canary_cfg),
        )
        reasons = _pending_reasons(canary, champion, canary_cfg, needed)
        return replace(decision, reasons=reasons, needed=needed)

    basis: Basis = "realized" if realized_ok else ("paired" if paired_ok else "estimated")
    if paired_ok:
        assert paired is not None
        new = metric_value(paired.y_true, paired.canary, problem_type, metric)
        old = metric_value(paired.y_true, paired.champion, problem_type, metric)
    else:
        new = canary.realized_metric if realized_ok else canary.estimated_metric
        old = champion.realized_metric if realized_ok else champion.estimated_metric
    assert new is not None and old is not None  # guaranteed by realized_ok / estimated_ok
    gain = metric_gain(new, old, metric)
    low = high = None
    if paired_ok and bootstrap_samples > 0:
        assert paired is not None
        interval = bootstrap_metric_difference(
            paired.y_true, paired.canary, paired.champion, problem_type, metric,
            n_samples=bootstrap_samples, confidence=confidence, seed=seed,
        )
        low, high = (-interval.high, -interval.low) if lower_is_better(metric) else (interval.low, interval.high)
    elif (
        realized_ok
        and bootstrap_samples > 0
        and canary.labelled is not None
        and champion.labelled is not None
    ):
        low, high = _unpaired_gain_interval(
            canary.labelled,
            champion.labelled,
            problem_type,
            metric,
            bootstrap_samples,
            confidence,
            seed,
        )
    decision = replace(
        decision,
        basis=basis,
        canary_value=new,
        champion_value=old,
        gain=gain,
        gain_low=low,
        gain_high=high,
    )
    comparison = (
        f"canary {metric} {format_value(new)} {describe_gain(gain, metric)} champion {format_value(old)} "
        f"({_evidence_text(canary, champion, basis, paired)}; allowed: {format_value(canary_cfg.margin)})"
    )
    interval = (
        f"the {confidence:.0%} interval of the canary's gain is [{format_value(low)}, {format_value(high)}]"
        if low is not None and high is not None
        else None
    )
    threshold = -canary_cfg.margin
    inconclusive = low is not None and high is not None and low <= threshold <= high
    if inconclusive and basis == "paired" and not window_elapsed:
        reason = (
            f"{comparison}, but {interval} straddles {format_value(threshold)}: noise could explain "
            "the difference; waiting for more labelled rows or the canary's own labels"
        )
        return replace(decision, reasons=[reason], needed=EvidenceNeeded(0, _labels_short(canary, canary_cfg)))
    if inconclusive and not window_elapsed:
        assert low is not None and high is not None
        labels = _labels_to_conclude(canary.n_labelled, gain, low, high, threshold)
        reason = (
            f"{comparison}, but {interval} straddles {format_value(threshold)}: noise could explain "
            f"the difference; about {labels} more labelled canary predictions (or the end "
            "of the review window) are needed"
        )
        return replace(decision, reasons=[reason], needed=EvidenceNeeded(0, labels))

    reasons = [comparison] + ([interval] if interval else [])
    if basis == "estimated":
        reasons.append(
            f"too few labels for a realized comparison (canary {canary.n_labelled}, champion "
            f"{champion.n_labelled}, required {canary_cfg.min_labels}); decided on the estimate"
        )
        if decision.prediction_shift is not None:
            reasons.append(f"prediction drift between arms: {_shift_text(canary, champion)}")
    outcome = PROMOTED if clears(gain, threshold) else ROLLED_BACK
    return replace(decision, outcome=outcome, reasons=reasons)


# --------------------------------------------------------------------------- helpers


def _labels_for(
    served: pd.DataFrame, labels: pd.DataFrame | None, config: ModelConfig
) -> np.ndarray:
    """The target of each served row as the metrics take it (class codes for multiclass;
    NaN where no label has arrived)."""
    id_col, target = config.columns.id, config.columns.target
    if labels is None or len(served) == 0:
        return np.full(len(served), np.nan)
    _require(labels, [id_col, target], "labels")
    if pd.api.types.is_numeric_dtype(served[id_col]) != pd.api.types.is_numeric_dtype(
        labels[id_col]
    ):
        raise ValueError(
            f"id column {id_col!r} is {served[id_col].dtype} in the prediction log but "
            f"{labels[id_col].dtype} in the labels; write both with the same type"
        )
    # A label delivered twice counts once: the latest delivery wins.
    latest = labels.drop_duplicates(subset=id_col, keep="last").set_index(id_col)[target]
    return target_values(served[id_col].map(latest), config, f"labels column {target!r}")


def _min_labels(cfg: CanaryConfig) -> int:
    return cfg.min_labels or 0  # set: decide_canary refuses a config without it


def _has_realized(arm: ArmEvidence, cfg: CanaryConfig) -> bool:
    return arm.realized_metric is not None and arm.n_labelled >= _min_labels(cfg)


def _labels_short(arm: ArmEvidence, cfg: CanaryConfig) -> int:
    short = max(_min_labels(cfg) - arm.n_labelled, 0)
    # Enough labels but an undefined metric (e.g. one class only): at least one more.
    return short if short or arm.realized_metric is not None else 1


def _pending_reasons(
    canary: ArmEvidence, champion: ArmEvidence, cfg: CanaryConfig, needed: EvidenceNeeded
) -> list[str]:
    reasons = []
    if needed.predictions:
        reasons.append(
            f"the canary served {canary.n_predictions} predictions; {cfg.min_predictions} are "
            f"required (canary.min_predictions; {needed.predictions} more)"
        )
    for arm, short in ((canary, needed.labels), (champion, needed.champion_labels)):
        if not short:
            continue
        if arm.n_labelled >= _min_labels(cfg):
            reasons.append(
                f"the {arm.alias} has {arm.n_labelled} labelled predictions but its realized "
                "metric is undefined (e.g. one class only); more labels are needed"
            )
        else:
            reasons.append(
                f"the {arm.alias} has {arm.n_labelled} labelled predictions; "
                f"{cfg.min_labels} are required (canary.min_labels; {short} more) and there is no "
                "estimate to decide on"
            )
    return reasons


def _unpaired_gain_interval(
    canary: LabelledScores,
    champion: LabelledScores,
    problem_type: str,
    metric: str,
    n_samples: int,
    confidence: float,
    seed: int,
) -> tuple[float | None, float | None]:
    """Percentile interval of the canary's gain, each arm resampled on its own rows."""
    rng = np.random.default_rng(seed)
    gains = np.empty(n_samples)
    for i in range(n_samples):
        a = rng.integers(0, len(canary.y_true), len(canary.y_true))
        b = rng.integers(0, len(champion.y_true), len(champion.y_true))
        new = metric_value(canary.y_true[a], canary.scores[a], problem_type, metric)
        old = metric_value(champion.y_true[b], champion.scores[b], problem_type, metric)
        gains[i] = metric_gain(new, old, metric)
    gains = gains[np.isfinite(gains)]
    if gains.size == 0:
        return None, None
    alpha = 1.0 - confidence
    low, high = np.quantile(gains, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _labels_to_conclude(n: int, gain: float, low: float, high: float, threshold: float) -> int:
    """More canary labels for the interval to clear `threshold`, assuming the point gain
    holds and the interval narrows as 1/sqrt(n)."""
    if gain >= threshold:
        half, distance = gain - low, gain - threshold  # the lower end must rise above it
    else:
        half, distance = high - gain, threshold - gain  # the upper end must fall below it
    if distance <= 0 or half <= 0 or n <= 0:
        return _MAX_NEEDED
    total = n * (half / distance) ** 2
    return int(min(max(math.ceil(total - n), 1), _MAX_NEEDED))


def _has_paired(paired: PairedEvidence | None, cfg: CanaryConfig, problem_type: str, metric: str) -> bool:
    """Enough newly labelled rows, scored by both models, with a defined metric."""
    if paired is None or paired.rows < _min_labels(cfg):
        return False
    value = metric_value(paired.y_true, paired.champion, problem_type, metric)
    return value is not None and math.isfinite(value)


def _evidence_text(canary: ArmEvidence, champion: ArmEvidence, basis: Basis, paired: PairedEvidence | None = None) -> str:
    if basis == "realized":
        return f"realized on {canary.n_labelled} vs {champion.n_labelled} labels"
    if basis == "paired" and paired is not None:
        return (
            f"both models on the same {paired.rows} labelled rows newer than the canary's training data; "
            f"the canary served {canary.n_predictions} predictions"
        )
    return f"estimated on {canary.n_predictions} vs {champion.n_predictions} predictions"


def _shift(canary: ArmEvidence, champion: ArmEvidence) -> float | None:
    if canary.mean_prediction is None or champion.mean_prediction is None:
        return None
    return canary.mean_prediction - champion.mean_prediction


def _shift_text(canary: ArmEvidence, champion: ArmEvidence) -> str:
    return (
        f"mean prediction {format_value(canary.mean_prediction)} on the canary vs "
        f"{format_value(champion.mean_prediction)} on the champion"
    )


def _require(frame: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; it has {list(frame.columns)} "
            "(check columns.* in the config)"
        )


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
