"""Evaluation maths: metrics, calibration, per-slice metrics and a paired bootstrap.

numpy only (the backtest calls these many times). Every metric is computed from row
weights, so a plain evaluation (all weights 1) and a bootstrap resample (weights = how
often each row was drawn) run the same code; the unit tests pin both to scikit-learn.

Scores: one value per row (binary: the positive-class probability; regression: the
predicted value) or, for multiclass, a matrix of one row per row and one column per class
(the class probabilities, classes in the config's order). Every function takes either:
the multiclass metrics are computed from the same weighted per-row quantities.

Conventions: binary labels are 0/1 (the positive class is 1); a row is predicted
positive when its score >= threshold; multiclass labels are class codes 0..K-1 (the
position of the class in `columns.probability`; `encode_classes` / `target_values` make
them from the data's labels) and a row's predicted class is its most probable one (the
first on a tie, as numpy's argmax). A metric that is undefined (AUC with one class,
anything on zero rows) is NaN, and `to_dict()` turns it into None. Precision, recall and
F1 with an empty denominator are 0.0, as in scikit-learn.

Multiclass metrics are macro averages over every configured class, as scikit-learn computes
them with `labels=range(K)` and NannyML on its multiclass tables: `roc_auc_ovr` is the mean
of the one-vs-rest AUCs (undefined when a class has no row, or every row, in the labels),
`f1_macro` / `precision_macro` / `recall_macro` the mean of the per-class figures.
Calibration: `brier` is the multiclass Brier score (mean over rows of the squared distance
between the probability vector and the one-hot label, scikit-learn's `brier_score_loss`
for several classes; 0 is perfect, 2 the worst), `log_loss` the cross-entropy; the
calibration curve is of the top-label confidence (the highest probability against the share
of rows whose predicted class is right).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evergreen.config import LOWER_IS_BETTER, METRICS, ModelConfig, class_key
from evergreen.jsonable import plain as _plain

CALIBRATION_METRICS = ("brier", "log_loss")
"""Extra classifier metrics `metric_value` accepts (lower is better), e.g. for a calibration gate."""

_THRESHOLD_METRICS = ("f1", "accuracy", "precision", "recall")
MULTICLASS = "multiclass_classification"
# Macro metrics: the binary metric of each class against the rest, averaged.
_MACRO = {
    "f1_macro": "f1",
    "precision_macro": "precision",
    "recall_macro": "recall",
    "roc_auc_ovr": "roc_auc",
}
DECISION_METRICS = frozenset({*_THRESHOLD_METRICS, "f1_macro", "precision_macro", "recall_macro"})
"""Metrics computed from each row's decision (a class) rather than from its scores."""
_MISSING_SLICE = "(missing)"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_\-. /]+")
# Rows x resamples processed at once by the bootstrap (memory ~ 8 bytes each, a few copies).
_BOOTSTRAP_CELLS = 2_000_000


def metrics_for(problem_type: str) -> tuple[str, ...]:
    """Metric names `metric_value` accepts for a problem type."""
    if problem_type not in METRICS:
        raise ValueError(f"unknown problem_type {problem_type!r}; use one of {tuple(METRICS)}")
    if problem_type == "regression":
        return METRICS[problem_type]
    return (*METRICS[problem_type], *CALIBRATION_METRICS)


def lower_is_better(metric: str) -> bool:
    """True for losses/errors (mae, rmse, mse, mape, brier, log_loss)."""
    return metric in LOWER_IS_BETTER or metric in CALIBRATION_METRICS


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CalibrationBin:
    """One bin of the calibration curve: scores in [lower, upper)."""

    lower: float
    upper: float
    mean_predicted: float
    observed: float
    n: int


@dataclass(frozen=True)
class Calibration:
    """How well probabilities match frequencies. ece = sum(n_b |predicted_b - observed_b|) / n."""

    brier: float
    log_loss: float
    ece: float
    bins: list[CalibrationBin]


@dataclass(frozen=True)
class SliceMetric:
    """The configured metric on the rows where `column` equals `value`."""

    column: str
    value: str
    n: int
    metric: float


@dataclass(frozen=True)
class EvaluationResult:
    """The configured metric (`value`), every metric of the problem type, calibration
    (binary only) and per-slice metrics on `n` rows."""

    problem_type: str
    metric: str
    value: float
    n: int
    metrics: dict[str, float]
    calibration: Calibration | None = None
    slices: list[SliceMetric] = field(default_factory=list)
    threshold: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (NaN -> None), safe for Prefect event payloads."""
        return _plain(asdict(self))

    def flat_metrics(self) -> dict[str, float]:
        """Metric name -> value for `mlflow.log_metrics`; undefined (NaN) values are left out.

        Keys: the metric names, "n", "brier"/"log_loss"/"ece", and
        "slice.<column>.<value>.<metric>" / "slice.<column>.<value>.n" with names reduced
        to the characters MLflow accepts.
        """
        flat: dict[str, float] = {name: v for name, v in self.metrics.items()}
        flat["n"] = float(self.n)
        if self.calibration is not None:
            flat["brier"] = self.calibration.brier
            flat["log_loss"] = self.calibration.log_loss
            flat["ece"] = self.calibration.ece
        seen: set[str] = set()
        for s in self.slices:
            prefix = _unique(f"slice.{_safe_name(s.column)}.{_safe_name(s.value)}", seen)
            flat[f"{prefix}.{_safe_name(self.metric)}"] = s.metric
            flat[f"{prefix}.n"] = float(s.n)
        return {k: float(v) for k, v in flat.items() if not math.isnan(v)}


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval of metric(a) - metric(b).

    `mean` is the mean over resamples, `point` the difference on all rows, `n_samples`
    the resamples where both metrics were defined.
    """

    low: float
    high: float
    mean: float
    point: float = math.nan
    confidence: float = 0.95
    n_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


# --------------------------------------------------------------------------- public functions


def metric_value(
    y_true: Any, y_score: Any, problem_type: str, metric: str, threshold: float = 0.5
) -> float:
    """One metric on all rows (NaN when undefined, e.g. AUC with a single class)."""
    y, s = _check_inputs(y_true, y_score, problem_type, metric)
    prepared = _prepare(y, s, problem_type, metric, threshold)
    return float(_metric_from_weights(np.ones((1, len(y))), prepared)[0])


def evaluate_predictions(
    y_true: Any,
    y_score: Any,
    problem_type: str,
    metric: str,
    slices: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    n_bins: int = 10,
) -> EvaluationResult:
    """Evaluate scores against labels: every metric of the problem type, calibration for
    classifiers (brier, log loss, ece, `n_bins` uniform bins; of the top-label confidence
    for multiclass) and the configured metric per value of each slice column (`slices` maps
    a column name to its per-row values)."""
    y, s = _check_inputs(y_true, y_score, problem_type, metric)
    ones = np.ones((1, len(y)))
    metrics = {
        name: float(_metric_from_weights(ones, _prepare(y, s, problem_type, name, threshold))[0])
        for name in METRICS[problem_type]
    }
    calibration = None
    if problem_type != "regression":
        calibration = _calibration(y, s, n_bins)
    return EvaluationResult(
        problem_type=problem_type,
        metric=metric,
        value=metrics[metric]
        if metric in metrics
        else metric_value(y, s, problem_type, metric, threshold),
        n=len(y),
        metrics=metrics,
        calibration=calibration,
        slices=_slice_metrics(y, s, problem_type, metric, threshold, slices or {}),
        threshold=float(threshold),
    )


def bootstrap_metric_difference(
    y_true: Any,
    score_a: Any,
    score_b: Any,
    problem_type: str,
    metric: str,
    n_samples: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> Interval:
    """Paired bootstrap interval of metric(a) - metric(b): both scorers are measured on
    the same resampled rows, `n_samples` times, with a seeded generator. Rows are resampled
    whole: a multiclass row keeps its label and its probability vector."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    y, a = _check_inputs(y_true, score_a, problem_type, metric, score_name="score_a")
    _, b = _check_inputs(y_true, score_b, problem_type, metric, score_name="score_b")
    n = len(y)
    prep_a = _prepare(y, a, problem_type, metric, threshold)
    prep_b = _prepare(y, b, problem_type, metric, threshold)
    ones = np.ones((1, n))
    point = float(_metric_from_weights(ones, prep_a)[0] - _metric_from_weights(ones, prep_b)[0])
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, point, confidence, 0)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    diffs = []
    for start in range(0, n_samples, chunk):
        weights = _resample_counts(rng, n, min(chunk, n_samples - start))
        diffs.append(_metric_from_weights(weights, prep_a) - _metric_from_weights(weights, prep_b))
    diff = np.concatenate(diffs)
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        return Interval(math.nan, math.nan, math.nan, point, confidence, 0)
    alpha = 1.0 - confidence
    low, high = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    return Interval(float(low), float(high), float(diff.mean()), point, confidence, int(diff.size))


# --------------------------------------------------------------------------- labels and scores


def encode_classes(values: Any, classes: Sequence[str], what: str = "target") -> np.ndarray:
    """Class codes 0..K-1 (floats, NaN where a value is missing) of class labels, matched to
    `classes` (the config's class keys, in order) by their text (`config.class_key`: 1,
    1.0 and "1" are the same class). A value that is no class raises, naming a few."""
    series = pd.Series(np.asarray(values, dtype=object).ravel(), dtype=object)
    present = series.notna()
    index = {key: i for i, key in enumerate(classes)}
    mapping: dict[Any, float] = {}
    unknown: list[Any] = []
    for value in pd.unique(series[present]):
        code = index.get(class_key(value))
        if code is None:
            unknown.append(value)
        else:
            mapping[value] = float(code)
    if unknown:
        sample = [_plain(v) for v in unknown[:5]]
        raise ValueError(
            f"{what} holds values that are not classes of columns.probability, e.g. {sample}; "
            f"the classes are {list(classes)} (add them to columns.probability or fix the data)"
        )
    codes = np.full(len(series), np.nan)
    if present.any():
        codes[present.to_numpy()] = series[present].map(mapping).to_numpy(dtype=np.float64)
    return codes


def target_values(values: Any, config: ModelConfig, what: str = "target") -> np.ndarray:
    """Labels as the numbers the metrics take: class codes for multiclass (`encode_classes`),
    floats otherwise (NaN where a label is missing or not a number)."""
    if config.problem_type == MULTICLASS:
        assert config.classes is not None
        return encode_classes(values, config.classes, what)
    series = pd.Series(np.asarray(values, dtype=object).ravel(), dtype=object)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def served_scores(frame: pd.DataFrame, config: ModelConfig) -> np.ndarray:
    """What the configured metric reads from served rows (a prediction log, a batch): a
    score metric reads the served probabilities (binary: the probability column;
    multiclass: the probability columns, one per class in order), a decision metric the
    served decision (binary: the 0/1 prediction; multiclass: the predicted class as a
    one-hot row, NaN where none was logged), regression the predicted value."""
    cols = config.columns
    if config.problem_type == MULTICLASS and config.metric not in DECISION_METRICS:
        return np.column_stack(
            [
                pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                for c in config.probability_columns
            ]
        )
    if config.problem_type == MULTICLASS:
        assert config.classes is not None
        codes = encode_classes(
            frame[cols.prediction], config.classes, f"prediction column {cols.prediction!r}"
        )
        onehot = np.full((len(codes), len(config.classes)), np.nan)
        known = ~np.isnan(codes)
        onehot[known] = (codes[known, None] == np.arange(len(config.classes))).astype(np.float64)
        return onehot
    column = cols.prediction
    if config.problem_type == "binary_classification" and config.metric not in DECISION_METRICS:
        if not cols.probability or not isinstance(cols.probability, str):
            raise ValueError(f"metric {config.metric!r} needs columns.probability to be configured")
        column = cols.probability
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Prepared:
    """Per-row quantities of one (labels, scores, metric); weights are applied later."""

    metric: str
    y: np.ndarray
    values: np.ndarray | None = None  # per-row loss for mean-type metrics
    predicted: np.ndarray | None = None  # 0/1 predictions for threshold metrics
    order: np.ndarray | None = None  # score order, for AUC
    groups: np.ndarray | None = None  # starts of tied-score groups in `order`
    parts: tuple[_Prepared, ...] | None = None  # one binary problem per class, macro-averaged


def _check_inputs(
    y_true: Any, y_score: Any, problem_type: str, metric: str, score_name: str = "y_score"
) -> tuple[np.ndarray, np.ndarray]:
    allowed = metrics_for(problem_type)
    if metric not in allowed:
        raise ValueError(f"metric {metric!r} is not valid for {problem_type}; use one of {allowed}")
    y = _as_float(y_true, "y_true")
    if problem_type == MULTICLASS:
        s = _as_matrix(y_score, score_name)
        if len(y) != len(s):
            raise ValueError(
                f"y_true has {y.size} rows but {score_name} has {len(s)}; pass one score row per label"
            )
        k = s.shape[1]
        bad = (y != np.floor(y)) | (y < 0) | (y >= k)
        if bad.any():
            raise ValueError(
                f"y_true holds values other than the class codes 0..{k - 1} "
                f"(e.g. {np.unique(y[bad])[:5].tolist()}); encode the labels with encode_classes"
            )
        return y, s
    s = _as_float(y_score, score_name)
    if y.shape != s.shape:
        raise ValueError(
            f"y_true has {y.size} rows but {score_name} has {s.size}; pass one score per row"
        )
    if problem_type == "binary_classification":
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            raise ValueError(
                f"y_true holds values other than 0/1 (e.g. {np.unique(y[bad])[:5].tolist()}); "
                "encode the positive class as 1 and the negative class as 0"
            )
    return y, s


def _as_matrix(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric ({exc})") from exc
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(
            f"{name} must hold one probability per class and row for multiclass_classification "
            f"(a matrix rows x classes); got shape {arr.shape}"
        )
    nan = np.isnan(arr).any(axis=1)
    if nan.any():
        raise ValueError(
            f"{name} holds {int(nan.sum())} row(s) with missing/NaN probabilities; drop those rows first"
        )
    return arr


def _as_float(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric ({exc})") from exc
    nan = np.isnan(arr)
    if nan.any():
        raise ValueError(
            f"{name} holds {int(nan.sum())} missing/NaN value(s); drop those rows or impute them first"
        )
    return arr


def _prepare(
    y: np.ndarray, s: np.ndarray, problem_type: str, metric: str, threshold: float
) -> _Prepared:
    if s.ndim == 2:
        return _prepare_multiclass(y, s, metric)
    if metric == "roc_auc":
        order = np.argsort(s, kind="mergesort")
        ranked = s[order]
        groups = (
            np.r_[0, np.flatnonzero(ranked[1:] != ranked[:-1]) + 1] if len(s) else np.zeros(0, int)
        )
        return _Prepared(metric, y, order=order, groups=groups)
    if metric in _THRESHOLD_METRICS:
        return _Prepared(metric, y, predicted=(s >= threshold).astype(np.float64))
    if metric == "brier":
        return _Prepared(metric, y, values=(s - y) ** 2)
    if metric == "log_loss":
        _check_probabilities(s)
        eps = np.finfo(np.float64).eps  # scikit-learn clips each class's probability alike
        p1 = np.clip(s, eps, 1 - eps)
        p0 = np.clip(1 - s, eps, 1 - eps)
        return _Prepared(metric, y, values=-np.where(y == 1, np.log(p1), np.log(p0)))
    error = s - y
    if metric == "mae":
        return _Prepared(metric, y, values=np.abs(error))
    if metric in ("mse", "rmse"):
        return _Prepared(metric, y, values=error**2)
    if metric == "mape":
        eps = np.finfo(np.float64).eps
        return _Prepared(metric, y, values=np.abs(error) / np.maximum(np.abs(y), eps))
    raise ValueError(f"metric {metric!r} is not valid for {problem_type}")


def _prepare_multiclass(y: np.ndarray, s: np.ndarray, metric: str) -> _Prepared:
    """A multiclass metric as per-class binary problems (macro metrics) or per-row values."""
    k = s.shape[1]
    onehot = (y[:, None] == np.arange(k)).astype(np.float64)
    decided = np.argmax(s, axis=1) if len(s) else np.zeros(0, dtype=np.int64)
    if metric == "roc_auc_ovr":
        parts = tuple(_prepare(onehot[:, c], s[:, c], "", "roc_auc", 0.5) for c in range(k))
        return _Prepared(metric, y, parts=parts)
    if metric in _MACRO:
        base = _MACRO[metric]
        parts = tuple(
            _Prepared(base, onehot[:, c], predicted=(decided == c).astype(np.float64))
            for c in range(k)
        )
        return _Prepared(metric, y, parts=parts)
    if metric == "accuracy":
        return _Prepared(metric, y, values=(decided == y).astype(np.float64))
    if metric == "brier":
        return _Prepared(metric, y, values=((s - onehot) ** 2).sum(axis=1))
    if metric == "log_loss":
        _check_probabilities(s)
        eps = np.finfo(np.float64).eps
        picked = s[np.arange(len(y)), y.astype(np.int64)] if len(y) else np.zeros(0)
        return _Prepared(metric, y, values=-np.log(np.clip(picked, eps, 1 - eps)))
    raise ValueError(f"metric {metric!r} is not valid for {MULTICLASS}")


def _metric_from_weights(weights: np.ndarray, p: _Prepared) -> np.ndarray:
    """The metric under each row of `weights` (shape resamples x rows) -> shape (resamples,)."""
    if p.parts is not None:
        # Macro average: undefined as soon as one class's metric is (as scikit-learn's AUC).
        return np.mean([_metric_from_weights(weights, part) for part in p.parts], axis=0)
    total = weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if p.metric == "roc_auc":
            return _weighted_auc(weights, p)
        if p.predicted is not None:
            result = _threshold_metric(weights, p.y, p.predicted, p.metric, total)
        else:
            assert p.values is not None
            result = weights @ p.values / total
            if p.metric == "rmse":
                result = np.sqrt(result)
    return np.where(total > 0, result, np.nan)


def _weighted_auc(weights: np.ndarray, p: _Prepared) -> np.ndarray:
    """Mann-Whitney AUC with ties counted half, for weighted rows (exact for integer weights)."""
    assert p.order is not None and p.groups is not None
    if weights.shape[1] == 0:
        return np.full(weights.shape[0], np.nan)
    y_sorted = p.y[p.order]
    w_sorted = weights[:, p.order]
    pos = np.add.reduceat(w_sorted * y_sorted, p.groups, axis=1)
    neg = np.add.reduceat(w_sorted * (1.0 - y_sorted), p.groups, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)


def _threshold_metric(
    weights: np.ndarray, y: np.ndarray, predicted: np.ndarray, metric: str, total: np.ndarray
) -> np.ndarray:
    tp = weights @ (y * predicted)
    fp = weights @ ((1.0 - y) * predicted)
    fn = weights @ (y * (1.0 - predicted))
    if metric == "accuracy":
        return (total - fp - fn) / total
    if metric == "precision":
        return _ratio(tp, tp + fp)
    if metric == "recall":
        return _ratio(tp, tp + fn)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # An empty denominator gives 0.0, as scikit-learn's default zero_division does.
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _resample_counts(rng: np.random.Generator, n: int, samples: int) -> np.ndarray:
    """How often each row is drawn in each of `samples` bootstrap resamples of n rows."""
    draws = rng.integers(0, n, size=(samples, n))
    draws += (np.arange(samples) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=samples * n)
    return counts.reshape(samples, n).astype(np.float64)


def _check_probabilities(s: np.ndarray) -> None:
    if s.size and (s.min() < 0 or s.max() > 1):
        raise ValueError(
            f"scores must be probabilities in [0, 1] for calibration and log loss; "
            f"got values in [{s.min():.4g}, {s.max():.4g}]"
        )


def _calibration(y: np.ndarray, s: np.ndarray, n_bins: int) -> Calibration:
    _check_probabilities(s)
    ones = np.ones((1, len(y)))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    if s.ndim == 2:  # top-label confidence against the share of right predictions
        confidence = s.max(axis=1) if len(s) else np.zeros(0)
        hit = (np.argmax(s, axis=1) == y).astype(np.float64) if len(s) else np.zeros(0)
    else:
        confidence, hit = s, y
    # Same binning as sklearn.calibration.calibration_curve(strategy="uniform").
    ids = np.searchsorted(edges[1:-1], confidence)
    counts = np.bincount(ids, minlength=n_bins)
    predicted = np.bincount(ids, weights=confidence, minlength=n_bins)
    observed = np.bincount(ids, weights=hit, minlength=n_bins)
    bins = [
        CalibrationBin(
            lower=float(edges[i]),
            upper=float(edges[i + 1]),
            mean_predicted=float(predicted[i] / counts[i]),
            observed=float(observed[i] / counts[i]),
            n=int(counts[i]),
        )
        for i in range(n_bins)
        if counts[i] > 0
    ]
    ece = (
        sum(b.n * abs(b.mean_predicted - b.observed) for b in bins) / len(y) if len(y) else math.nan
    )
    return Calibration(
        brier=float(_metric_from_weights(ones, _prepare(y, s, "", "brier", 0.5))[0]),
        log_loss=float(_metric_from_weights(ones, _prepare(y, s, "", "log_loss", 0.5))[0]),
        ece=float(ece),
        bins=bins,
    )


def _slice_metrics(
    y: np.ndarray,
    s: np.ndarray,
    problem_type: str,
    metric: str,
    threshold: float,
    slices: Mapping[str, Any],
) -> list[SliceMetric]:
    out: list[SliceMetric] = []
    for column, raw in slices.items():
        labels = _slice_labels(raw)
        if len(labels) != len(y):
            raise ValueError(
                f"slice column {column!r} has {len(labels)} values for {len(y)} rows; "
                "pass one value per evaluated row"
            )
        for value in sorted(set(labels.tolist())):
            rows = labels == value
            out.append(
                SliceMetric(
                    column=str(column),
                    value=value,
                    n=int(rows.sum()),
                    metric=metric_value(y[rows], s[rows], problem_type, metric, threshold),
                )
            )
    return out


def _slice_labels(raw: Any) -> np.ndarray:
    values = pd.Series(np.asarray(raw, dtype=object).ravel())
    labels = values.map(str).where(values.notna(), _MISSING_SLICE)
    return labels.to_numpy(dtype=object)


def _safe_name(text: str, limit: int = 80) -> str:
    cleaned = _UNSAFE_NAME.sub("_", str(text)).strip(" _")[:limit]
    return cleaned or "_"


def _unique(name: str, seen: set[str]) -> str:
    # Two values may clean to the same name ("€20K" and "$20K"); keep both.
    candidate, i = name, 2
    while candidate in seen:
        candidate, i = f"{name}_{i}", i + 1
    seen.add(candidate)
    return candidate
