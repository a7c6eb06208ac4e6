"""Evaluation maths, pinned to scikit-learn."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from evergreen.decisions.evaluation import (
    _metric_from_weights,
    _prepare,
    bootstrap_metric_difference,
    evaluate_predictions,
    metric_value,
)

TOL = {"rel": 1e-9, "abs": 1e-9}


def _binary(n: int = 400, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(0.3 * y + rng.normal(0.35, 0.2, n), 0, 1)
    if ties:  # coarse scores: many tied values, as a tree model produces
        score = np.round(score, 1)
    return y, score


def _regression(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.normal(50, 20, n)
    y[:5] = 0.0  # MAPE's epsilon guard is exercised
    return y, y + rng.normal(0, 5, n)


def _sk_binary(metric: str, y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    pred = (score >= threshold).astype(int)
    return {
        "roc_auc": lambda: skm.roc_auc_score(y, score),
        "f1": lambda: skm.f1_score(y, pred, zero_division=0.0),
        "accuracy": lambda: skm.accuracy_score(y, pred),
        "precision": lambda: skm.precision_score(y, pred, zero_division=0.0),
        "recall": lambda: skm.recall_score(y, pred, zero_division=0.0),
        "brier": lambda: skm.brier_score_loss(y, score),
        "log_loss": lambda: skm.log_loss(y, y_proba=score),
    }[metric]()


def _sk_regression(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    return {
        "mae": lambda: skm.mean_absolute_error(y, pred),
        "mse": lambda: skm.mean_squared_error(y, pred),
        "rmse": lambda: skm.root_mean_squared_error(y, pred),
        "mape": lambda: skm.mean_absolute_percentage_error(y, pred),
    }[metric]()


BINARY = ["roc_auc", "f1", "accuracy", "precision", "recall", "brier", "log_loss"]
REGRESSION = ["mae", "mse", "rmse", "mape"]


@pytest.mark.parametrize("metric", BINARY)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_metrics_match_sklearn(metric: str, ties: bool, threshold: float) -> None:
    y, score = _binary(ties=ties)
    got = metric_value(y, score, "binary_classification", metric, threshold=threshold)
    assert got == pytest.approx(_sk_binary(metric, y, score, threshold), **TOL)


@pytest.mark.parametrize("metric", REGRESSION)
def test_regression_metrics_match_sklearn(metric: str) -> None:
    y, pred = _regression()
    got = metric_value(y, pred, "regression", metric)
    assert got == pytest.approx(_sk_regression(metric, y, pred), **TOL)


def test_log_loss_clips_certain_wrong_predictions_like_sklearn() -> None:
    y = np.array([1, 0, 1, 0])
    score = np.array([0.0, 1.0, 1.0, 0.0])
    got = metric_value(y, score, "binary_classification", "log_loss")
    assert got == pytest.approx(skm.log_loss(y, y_proba=score), **TOL)


@pytest.mark.parametrize("metric", ["f1", "precision", "recall"])
def test_threshold_metrics_with_empty_denominator_are_zero_like_sklearn(metric: str) -> None:
    y = np.array([0, 0, 0, 0])
    score = np.array([0.1, 0.2, 0.3, 0.4])  # nothing predicted positive, no positives
    assert metric_value(y, score, "binary_classification", metric) == _sk_binary(metric, y, score)


def test_auc_with_one_class_is_nan() -> None:
    assert math.isnan(metric_value([1, 1, 1], [0.2, 0.5, 0.9], "binary_classification", "roc_auc"))


def test_metric_on_zero_rows_is_nan() -> None:
    assert math.isnan(metric_value([], [], "regression", "mae"))
    assert math.isnan(metric_value([], [], "binary_classification", "accuracy"))


@pytest.mark.parametrize(
    ("y", "score", "problem", "metric", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "binary_classification", "roc_auc", "other than 0/1"),
        ([0, 1], [0.1, np.nan], "binary_classification", "roc_auc", "y_score holds 1 missing"),
        ([0, 1], [0.1], "binary_classification", "roc_auc", "y_true has 2 rows"),
        ([0, 1], [0.1, 0.2], "binary_classification", "mae", "not valid for binary"),
        ([1.0, 2.0], [1.0, 2.0], "regression", "roc_auc", "not valid for regression"),
        ([1.0, 2.0], [1.0, 2.0], "ranking", "mae", "unknown problem_type"),
    ],
)
def test_bad_inputs_are_named(y, score, problem, metric, message) -> None:
    with pytest.raises(ValueError, match=message):
        metric_value(y, score, problem, metric)


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "scores-on-bin-edges"])
def test_evaluate_binary_has_every_metric_calibration_and_n(ties: bool) -> None:
    y, score = _binary(n=500, seed=3, ties=ties)
    result = evaluate_predictions(y, score, "binary_classification", "roc_auc")
    assert result.n == 500
    assert result.value == pytest.approx(skm.roc_auc_score(y, score), **TOL)
    for name in ["roc_auc", "f1", "accuracy", "precision", "recall"]:
        assert result.metrics[name] == pytest.approx(_sk_binary(name, y, score), **TOL)
    cal = result.calibration
    assert cal is not None
    assert cal.brier == pytest.approx(skm.brier_score_loss(y, score), **TOL)
    assert cal.log_loss == pytest.approx(skm.log_loss(y, y_proba=score), **TOL)
    prob_true, prob_pred = calibration_curve(y, score, n_bins=10)
    assert [b.observed for b in cal.bins] == pytest.approx(prob_true.tolist(), **TOL)
    assert [b.mean_predicted for b in cal.bins] == pytest.approx(prob_pred.tolist(), **TOL)
    assert sum(b.n for b in cal.bins) == 500
    expected_ece = sum(b.n * abs(b.mean_predicted - b.observed) for b in cal.bins) / 500
    assert cal.ece == pytest.approx(expected_ece)


def test_evaluate_regression_has_no_calibration() -> None:
    y, pred = _regression()
    result = evaluate_predictions(y, pred, "regression", "rmse")
    assert result.calibration is None
    assert result.value == pytest.approx(skm.root_mean_squared_error(y, pred), **TOL)
    assert set(result.metrics) == {"mae", "mse", "rmse", "mape"}


def test_calibration_rejects_scores_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        evaluate_predictions([0, 1], [-0.5, 2.0], "binary_classification", "roc_auc")


@pytest.mark.parametrize("metric", ["roc_auc", "f1", "accuracy"])
def test_slices_match_sklearn_on_each_subset(metric: str) -> None:
    y, score = _binary(n=600, seed=5)
    rng = np.random.default_rng(1)
    salary = rng.choice(np.array(["0 - 20K €", "20K - 40K €", "40K+ €"], dtype=object), 600)
    result = evaluate_predictions(
        y, score, "binary_classification", metric, slices={"salary_range": salary}
    )
    assert [s.value for s in result.slices] == ["0 - 20K €", "20K - 40K €", "40K+ €"]
    for s in result.slices:
        rows = salary == s.value
        assert s.column == "salary_range"
        assert s.n == int(rows.sum())
        assert s.metric == pytest.approx(_sk_binary(metric, y[rows], score[rows]), **TOL)


def test_single_class_slice_gives_none_not_an_error() -> None:
    y = np.array([0, 1, 0, 1, 1, 1])
    score = np.array([0.2, 0.8, 0.3, 0.6, 0.7, 0.9])
    group = np.array(["a", "a", "a", "a", "b", None], dtype=object)
    result = evaluate_predictions(y, score, "binary_classification", "roc_auc", slices={"g": group})
    by_value = {s.value: s for s in result.slices}
    assert by_value["a"].metric == 1.0
    assert math.isnan(by_value["b"].metric) and by_value["b"].n == 1
    assert by_value["(missing)"].n == 1
    as_dict = result.to_dict()
    assert {s["value"]: s["metric"] for s in as_dict["slices"]}["b"] is None
    assert "slice.g.b.roc_auc" not in result.flat_metrics()
    assert result.flat_metrics()["slice.g.b.n"] == 1.0


def test_to_dict_is_plain_json() -> None:
    y, score = _binary(n=200)
    result = evaluate_predictions(
        y, score, "binary_classification", "f1", slices={"s": np.array([1, 2] * 100)}
    )

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                assert type(k) is str
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
        else:
            assert obj is None or type(obj) in (str, int, float, bool), type(obj)

    as_dict = result.to_dict()
    walk(as_dict)
    json.dumps(as_dict, allow_nan=False)


def test_flat_metrics_are_mlflow_safe_and_complete() -> None:
    y, score = _binary(n=300)
    salary = np.array(["20K - 40K €", "€20K - 40K", "40K+ / yr"] * 100, dtype=object)
    flat = evaluate_predictions(
        y, score, "binary_classification", "roc_auc", slices={"salary_range": salary}
    ).flat_metrics()
    for key, value in flat.items():
        assert re.fullmatch(r"[A-Za-z0-9_\-. /]+", key), key
        assert type(value) is float
    assert {
        "roc_auc",
        "f1",
        "accuracy",
        "precision",
        "recall",
        "brier",
        "log_loss",
        "ece",
        "n",
    } <= set(flat)
    # "20K - 40K €" and "€20K - 40K" clean to the same name: both are kept.
    assert "slice.salary_range.20K - 40K.roc_auc" in flat
    assert "slice.salary_range.20K - 40K_2.roc_auc" in flat
    assert flat["slice.salary_range.40K_ / yr.n"] == 100.0


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("metric", BINARY)
def test_weighted_metrics_equal_sklearn_on_the_resampled_rows(metric: str) -> None:
    """A bootstrap resample as weights gives the same metric as materialising the rows."""
    y, score = _binary(n=150, seed=2, ties=True)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 150, (4, 150))
    weights = np.stack([np.bincount(row, minlength=150) for row in idx]).astype(float)
    got = _metric_from_weights(weights, _prepare(y, score, "binary_classification", metric, 0.5))
    expected = [_sk_binary(metric, y[row], score[row]) for row in idx]
    assert got.tolist() == pytest.approx(expected, **TOL)


@pytest.mark.parametrize("metric", REGRESSION)
def test_weighted_regression_metrics_equal_sklearn_on_the_resampled_rows(metric: str) -> None:
    y, pred = _regression(n=120)
    idx = np.random.default_rng(4).integers(0, 120, (3, 120))
    weights = np.stack([np.bincount(row, minlength=120) for row in idx]).astype(float)
    got = _metric_from_weights(weights, _prepare(y, pred, "regression", metric, 0.5))
    expected = [_sk_regression(metric, y[row], pred[row]) for row in idx]
    assert got.tolist() == pytest.approx(expected, **TOL)


def test_bootstrap_is_deterministic_with_a_seed() -> None:
    y, a = _binary(n=500, seed=1)
    _, b = _binary(n=500, seed=2)
    first = bootstrap_metric_difference(y, a, b, "binary_classification", "roc_auc", 200, 0.9, 11)
    again = bootstrap_metric_difference(y, a, b, "binary_classification", "roc_auc", 200, 0.9, 11)
    other = bootstrap_metric_difference(y, a, b, "binary_classification", "roc_auc", 200, 0.9, 12)
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("problem", "metric"),
    [("binary_classification", "roc_auc"), ("binary_classification", "f1"), ("regression", "mae")],
)
def test_identical_scorers_give_an_interval_at_zero(problem: str, metric: str) -> None:
    y, score = _binary(n=300) if problem == "binary_classification" else _regression()
    interval = bootstrap_metric_difference(y, score, score.copy(), problem, metric, 100, 0.95, 0)
    assert interval.low <= 0.0 <= interval.high
    assert interval.low == interval.high == interval.mean == interval.point == 0.0
    assert interval.n_samples == 100


def test_better_scorer_gives_a_positive_interval_around_the_observed_difference() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good = np.clip(0.5 * y + rng.normal(0.25, 0.2, 2000), 0, 1)
    poor = np.clip(0.15 * y + rng.normal(0.4, 0.2, 2000), 0, 1)
    interval = bootstrap_metric_difference(
        y, good, poor, "binary_classification", "roc_auc", 300, 0.95, 3
    )
    observed = skm.roc_auc_score(y, good) - skm.roc_auc_score(y, poor)
    assert interval.point == pytest.approx(observed, **TOL)
    assert 0 < interval.low < observed < interval.high
    assert interval.mean == pytest.approx(observed, abs=0.01)
    reversed_ = bootstrap_metric_difference(
        y, poor, good, "binary_classification", "roc_auc", 300, 0.95, 3
    )
    assert reversed_.high == pytest.approx(-interval.low, **TOL)


def test_bootstrap_of_500_resamples_on_20k_rows_is_fast() -> None:
    y, a = _binary(n=20_000, seed=1)
    _, b = _binary(n=20_000, seed=2)
    start = time.perf_counter()
    interval = bootstrap_metric_difference(
        y, a, b, "binary_classification", "roc_auc", 500, 0.95, 0
    )
    elapsed = time.perf_counter() - start
    assert interval.n_samples == 500
    assert elapsed < 5.0, f"bootstrap took {elapsed:.2f} s"
