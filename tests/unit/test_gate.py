"""The promotion gate: every check passes and fails on constructed, seeded scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evergreen.config import GateConfig
from evergreen.decisions.evaluation import evaluate_predictions, metric_value
from evergreen.decisions.gate import (
    GateDecision,
    ModelEvidence,
    decide_promotion,
    metric_gain,
)
from evergreen.engines.scoring import evaluate_model, measure_model
from evergreen.engines.training import train_model

BINARY, REGRESSION = "binary_classification", "regression"
PROBLEM = {"roc_auc": BINARY, "f1": BINARY, "mae": REGRESSION, "rmse": REGRESSION}


def _evidence(
    version: str,
    y: np.ndarray,
    scores: np.ndarray,
    metric: str,
    *,
    slices: dict[str, np.ndarray] | None = None,
    latency: float = 1.0,
    size: float = 1.0,
    threshold: float = 0.5,
) -> ModelEvidence:
    evaluation = evaluate_predictions(
        y, scores, PROBLEM[metric], metric, slices=slices, threshold=threshold
    )
    return ModelEvidence(version, evaluation, np.asarray(scores, float), latency, size)


def _pair(
    metric: str, extra_noise: float, n: int = 3000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a base model's scores and a worse model's scores (the base's noise plus
    `extra_noise` more), so the two are paired and the difference is clear."""
    rng = np.random.default_rng(seed)
    e1, e2 = rng.normal(size=n), rng.normal(size=n)
    if PROBLEM[metric] == BINARY:
        y = (rng.random(n) < 0.4).astype(float)
        signal = 1.2 * (2 * y - 1)
        base = 1 / (1 + np.exp(-(signal + e1)))
        worse = 1 / (1 + np.exp(-(signal + e1 + extra_noise * e2)))
        return y, base, worse
    y = rng.normal(10, 3, n)
    return y, y + e1, y + e1 + extra_noise * e2


def _gain(metric: str, y: np.ndarray, new: np.ndarray, old: np.ndarray) -> float:
    p = PROBLEM[metric]
    return metric_gain(metric_value(y, new, p, metric), metric_value(y, old, p, metric), metric)


def _decide(
    challenger: ModelEvidence,
    champion: ModelEvidence | None,
    y: np.ndarray,
    metric: str,
    **gate: object,
) -> GateDecision:
    return decide_promotion(challenger, champion, y, GateConfig(**gate), PROBLEM[metric], metric)


def _assert_check(decision: GateDecision, name: str, passed: bool) -> None:
    check = decision.check(name)
    assert check is not None, f"check {name} was skipped: {decision.skipped}"
    assert check.passed is passed, check.detail
    label = name.replace("_", " ") + ":"
    failed_reasons = [r for r in decision.reasons if r.startswith(label)]
    assert len(failed_reasons) == (0 if passed else 1), decision.reasons
    if not passed:
        assert not decision.passed


# --------------------------------------------------------------------------- all pass


@pytest.mark.parametrize("metric", ["roc_auc", "mae"])
@pytest.mark.parametrize("mode", ["non_inferiority", "improvement"])
def test_a_clearly_better_challenger_passes_every_check(metric: str, mode: str) -> None:
    y, better, worse = _pair(metric, extra_noise=1.0)
    decision = _decide(
        _evidence("2", y, better, metric), _evidence("1", y, worse, metric), y, metric, mode=mode
    )
    assert decision.passed, decision.reasons
    assert decision.reasons == []
    names = [c.name for c in decision.checks]
    expected = ["relative_margin", "bootstrap", "latency", "size"]
    if PROBLEM[metric] == BINARY:
        expected.insert(2, "calibration")
    assert names == expected
    assert "floor" in decision.skipped[0]
    assert decision.summary().startswith("gate passed for version 2 against champion 1")


# --------------------------------------------------------------------------- floor


@pytest.mark.parametrize(
    ("metric", "offset", "passed"),
    [
        ("roc_auc", -0.01, True),  # floor below the value
        ("roc_auc", +0.01, False),
        ("mae", +0.01, True),  # for an error metric the floor is a ceiling
        ("mae", -0.01, False),
    ],
)
def test_floor(metric: str, offset: float, passed: bool) -> None:
    y, scores, _ = _pair(metric, 0.0)
    challenger = _evidence("2", y, scores, metric)
    floor = challenger.evaluation.value + offset
    decision = _decide(challenger, _evidence("1", y, scores, metric), y, metric, metric_floor=floor)
    _assert_check(decision, "floor", passed)
    assert decision.passed is passed
    check = decision.check("floor")
    assert check is not None and check.threshold == floor
    if not passed:
        side = "below the floor" if metric == "roc_auc" else "above the ceiling"
        assert f"is 0.01 {side}" in decision.reasons[0]


def test_floor_fails_on_an_undefined_metric() -> None:
    y = np.ones(100)  # one class: AUC is undefined
    ev = _evidence("2", y, np.linspace(0, 1, 100), "roc_auc")
    decision = _decide(ev, None, y, "roc_auc", metric_floor=0.5)
    _assert_check(decision, "floor", False)
    assert "undefined" in decision.reasons[0]


# --------------------------------------------------------------------------- relative margin


@pytest.mark.parametrize("metric", ["roc_auc", "mae"])
@pytest.mark.parametrize(
    ("mode", "slack", "passed"),
    [
        ("non_inferiority", +0.002, True),
        ("non_inferiority", -0.002, False),
        ("improvement", -0.002, True),
        ("improvement", +0.002, False),
    ],
)
def test_relative_margin(metric: str, mode: str, slack: float, passed: bool) -> None:
    y, better, worse = _pair(metric, extra_noise=0.4)
    if mode == "non_inferiority":  # a slightly worse challenger, margin around its loss
        new, old = worse, better
        gap = -_gain(metric, y, new, old)
        margin = gap + slack
    else:  # a slightly better challenger, required improvement around its gain
        new, old = better, worse
        gap = _gain(metric, y, new, old)
        margin = gap + slack
    assert gap > 0.005  # the construction gives a real difference
    decision = _decide(
        _evidence("2", y, new, metric),
        _evidence("1", y, old, metric),
        y,
        metric,
        mode=mode,
        margin=margin,
    )
    _assert_check(decision, "relative_margin", passed)
    check = decision.check("relative_margin")
    assert check is not None
    assert check.value == pytest.approx(_gain(metric, y, new, old))
    assert check.threshold == pytest.approx(margin if mode == "improvement" else -margin)
    if not passed and mode == "non_inferiority":
        # roc_auc falls, mae rises: the sentence names the direction of the raw value
        direction = "below" if metric == "roc_auc" else "above"
        reason = next(r for r in decision.reasons if r.startswith("relative margin:"))
        assert f"is {gap:.4g} {direction} champion" in reason
        assert f"(allowed: {margin:.4g})" in reason


def test_relative_margin_reason_reads_like_the_issue() -> None:
    y, better, worse = _pair("roc_auc", extra_noise=0.5)
    decision = _decide(
        _evidence("2", y, worse, "roc_auc"), _evidence("1", y, better, "roc_auc"), y, "roc_auc"
    )
    new = metric_value(y, worse, BINARY, "roc_auc")
    old = metric_value(y, better, BINARY, "roc_auc")
    assert (
        f"relative margin: challenger roc_auc {new:.4g} is {old - new:.4g} below champion "
        f"{old:.4g} (allowed: 0.005)"
    ) in decision.reasons


# --------------------------------------------------------------------------- slices


def _sliced(metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A challenger equal to the champion except on slice B (worse there) and on a tiny
    slice C (much worse, but too small to count)."""
    y, base, worse = _pair(metric, extra_noise=0.8, n=3000)
    group = np.where(np.arange(len(y)) % 2 == 0, "A", "B")
    group[:20] = "C"
    challenger = np.where(group == "A", base, worse)
    challenger = np.where(group == "C", base[::-1][: len(y)], challenger)  # junk scores
    return y, base, challenger, {"group": group}


@pytest.mark.parametrize("metric", ["roc_auc", "mae"])
@pytest.mark.parametrize(("slack", "passed"), [(+0.005, True), (-0.005, False)])
def test_slices(metric: str, slack: float, passed: bool) -> None:
    y, champion, challenger, slices = _sliced(metric)
    rows = slices["group"] == "B"
    loss = -_gain(metric, y[rows], challenger[rows], champion[rows])
    assert loss > 0.01
    decision = _decide(
        _evidence("2", y, challenger, metric, slices=slices),
        _evidence("1", y, champion, metric, slices=slices),
        y,
        metric,
        slice_margin=loss + slack,
        margin=0.5,
    )
    _assert_check(decision, "slices", passed)
    check = decision.check("slices")
    assert check is not None
    # Slice C (20 rows) is worse still but below the minimum, so B is the worst counted.
    assert check.value == pytest.approx(-loss)
    assert "group=B" in check.detail and "group=C" not in check.detail


def test_slices_are_skipped_when_none_is_large_enough() -> None:
    y, champion, challenger, slices = _sliced("roc_auc")
    decision = decide_promotion(
        _evidence("2", y, challenger, "roc_auc", slices=slices),
        _evidence("1", y, champion, "roc_auc", slices=slices),
        y,
        GateConfig(),
        BINARY,
        "roc_auc",
        min_slice_rows=10_000,
    )
    assert decision.check("slices") is None
    assert any(s.startswith("slices: skipped") for s in decision.skipped)


# --------------------------------------------------------------------------- bootstrap


def _noisy_tiny_improvement(metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two equally good models on few rows; the one that happens to score better is the
    challenger, so its point gain is positive but pure noise."""
    rng = np.random.default_rng(1234)  # not _pair's seed: the perturbations are independent
    n = 300
    y, base, _ = _pair(metric, 0.0, n=n, seed=3)
    if PROBLEM[metric] == BINARY:
        a = np.clip(base + rng.normal(0, 0.05, n), 0, 1)
        b = np.clip(base + rng.normal(0, 0.05, n), 0, 1)
    else:
        a, b = base + rng.normal(0, 0.3, n), base + rng.normal(0, 0.3, n)
    return (y, a, b) if _gain(metric, y, a, b) > 0 else (y, b, a)


@pytest.mark.parametrize("metric", ["roc_auc", "mae"])
def test_bootstrap_keeps_a_noisy_tiny_improvement_from_passing(metric: str) -> None:
    y, new, old = _noisy_tiny_improvement(metric)
    assert 0 < _gain(metric, y, new, old) < 0.02
    decision = _decide(
        _evidence("2", y, new, metric),
        _evidence("1", y, old, metric),
        y,
        metric,
        mode="improvement",
        margin=0.0,
    )
    _assert_check(decision, "relative_margin", True)  # the point estimate alone would promote
    _assert_check(decision, "bootstrap", False)
    reason = next(r for r in decision.reasons if r.startswith("bootstrap:"))
    assert "noise could explain the improvement" in reason
    check = decision.check("bootstrap")
    assert check is not None and check.value is not None and check.value <= 0
    assert check.threshold == 0.0


@pytest.mark.parametrize("metric", ["roc_auc", "mae"])
@pytest.mark.parametrize(
    ("mode", "challenger_is", "passed"),
    [
        ("improvement", "better", True),
        ("improvement", "worse", False),
        ("non_inferiority", "better", True),
        ("non_inferiority", "worse", False),
    ],
)
def test_bootstrap(metric: str, mode: str, challenger_is: str, passed: bool) -> None:
    # mae is the lower-is-better case: a direction mix-up would flip every outcome here.
    y, better, worse = _pair(metric, extra_noise=1.0)
    new, old = (better, worse) if challenger_is == "better" else (worse, better)
    decision = _decide(
        _evidence("2", y, new, metric), _evidence("1", y, old, metric), y, metric, mode=mode
    )
    _assert_check(decision, "bootstrap", passed)
    check = decision.check("bootstrap")
    assert check is not None
    assert check.threshold == (0.0 if mode == "improvement" else -0.005)
    if not passed and mode == "non_inferiority":
        assert "may be worse than the allowed margin" in decision.reasons[-1] or any(
            "may be worse" in r for r in decision.reasons
        )


def test_bootstrap_is_seeded_by_the_gate() -> None:
    y, new, old = _noisy_tiny_improvement("roc_auc")
    a, b = _evidence("2", y, new, "roc_auc"), _evidence("1", y, old, "roc_auc")

    def low(seed: int) -> float | None:
        check = _decide(a, b, y, "roc_auc", seed=seed).check("bootstrap")
        assert check is not None
        return check.value

    assert low(7) == low(7)
    assert low(7) != low(8)


def test_bootstrap_compares_threshold_metrics_at_each_models_own_threshold() -> None:
    # Same scores; the challenger's threshold (0.2) catches the positives the champion's
    # default 0.5 misses. Comparing both at one threshold would see no difference at all.
    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.3).astype(float)
    scores = np.clip(0.15 + 0.2 * y + rng.normal(0, 0.05, 2000), 0, 1)
    challenger = _evidence("2", y, scores, "f1", threshold=0.25)
    champion = _evidence("1", y, scores, "f1", threshold=0.5)
    assert challenger.evaluation.value > champion.evaluation.value + 0.2
    decision = _decide(challenger, champion, y, "f1", mode="improvement")
    _assert_check(decision, "bootstrap", True)
    check = decision.check("bootstrap")
    assert check is not None and check.value is not None and check.value > 0.2


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize(("slack", "passed"), [(+0.005, True), (-0.005, False)])
def test_calibration(slack: float, passed: bool) -> None:
    # A monotone squash keeps the ranking (AUC, slices, bootstrap identical) but worsens brier.
    y, scores, _ = _pair("roc_auc", 0.0)
    squashed = 0.5 + 0.4 * (scores - 0.5)
    challenger = _evidence("2", y, squashed, "roc_auc")
    champion = _evidence("1", y, scores, "roc_auc")
    assert challenger.evaluation.calibration is not None
    assert champion.evaluation.calibration is not None
    worse_by = challenger.evaluation.calibration.brier - champion.evaluation.calibration.brier
    assert worse_by > 0.01
    decision = _decide(challenger, champion, y, "roc_auc", calibration_margin=worse_by + slack)
    _assert_check(decision, "calibration", passed)
    assert decision.passed is passed  # every other check passes: the ranking did not change
    if not passed:
        assert decision.reasons == [
            f"calibration: challenger brier {challenger.evaluation.calibration.brier:.4g} is "
            f"{worse_by:.4g} above champion {champion.evaluation.calibration.brier:.4g} "
            f"(allowed: {worse_by + slack:.4g} above)"
        ]


def test_calibration_is_skipped_for_regression() -> None:
    y, a, b = _pair("mae", 1.0)
    decision = _decide(_evidence("2", y, a, "mae"), _evidence("1", y, b, "mae"), y, "mae")
    assert decision.check("calibration") is None
    assert any(s.startswith("calibration: skipped") for s in decision.skipped)


# --------------------------------------------------------------------------- latency, size


@pytest.mark.parametrize("metric", ["roc_auc", "mae"])
@pytest.mark.parametrize(
    ("name", "field", "limit_field", "value", "passed"),
    [
        ("latency", "latency", "max_latency_ms", 49.0, True),
        ("latency", "latency", "max_latency_ms", 50.0, True),  # at the limit passes
        ("latency", "latency", "max_latency_ms", 62.0, False),
        ("size", "size", "max_model_mb", 99.0, True),
        ("size", "size", "max_model_mb", 130.5, False),
    ],
)
def test_latency_and_size(
    metric: str, name: str, field: str, limit_field: str, value: float, passed: bool
) -> None:
    y, scores, _ = _pair(metric, 0.0)
    challenger = _evidence("2", y, scores, metric, **{field: value})
    champion = _evidence("1", y, scores, metric)
    limit = {"max_latency_ms": 50.0, "max_model_mb": 100.0}[limit_field]
    decision = _decide(challenger, champion, y, metric, **{limit_field: limit})
    _assert_check(decision, name, passed)
    assert decision.passed is passed  # identical scores: every other check passes
    if not passed:
        assert f"{value - limit:.4g} over the limit {limit:.4g}" in decision.reasons[0]


# --------------------------------------------------------------------------- no champion


@pytest.mark.parametrize("metric", ["roc_auc", "mae"])
@pytest.mark.parametrize(
    ("floor_offset", "latency", "passed"),
    [(None, 1.0, True), (-0.01, 1.0, True), (+0.01, 1.0, False), (None, 400.0, False)],
)
def test_without_a_champion_only_absolute_checks_apply(
    metric: str, floor_offset: float | None, latency: float, passed: bool
) -> None:
    y, scores, _ = _pair(metric, 0.0)
    challenger = _evidence("2", y, scores, metric, latency=latency)
    floor = None
    if floor_offset is not None:
        sign = -1 if metric == "mae" else 1  # "below the floor" for an error is above it
        floor = challenger.evaluation.value + sign * floor_offset
    decision = _decide(challenger, None, y, metric, metric_floor=floor)
    names = {c.name for c in decision.checks}
    assert names == ({"floor"} if floor is not None else set()) | {"latency", "size"}
    assert decision.passed is passed
    assert decision.champion_version is None
    assert any("no champion to compare against" in s for s in decision.skipped)
    assert "no champion to compare against" in decision.summary()


# --------------------------------------------------------------------------- contract


def test_to_dict_is_plain_json() -> None:
    y, better, worse = _pair("roc_auc", 0.5)
    decision = _decide(
        _evidence("2", y, worse, "roc_auc", latency=np.float64(60.0)),  # type: ignore[arg-type]
        _evidence("1", y, better, "roc_auc"),
        y,
        "roc_auc",
    )
    payload = decision.to_dict()
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert payload["passed"] is False
    assert payload["challenger_version"] == "2" and payload["champion_version"] == "1"
    assert {c["name"] for c in payload["checks"]} >= {"relative_margin", "latency"}
    assert payload["summary"] == decision.summary()
    assert type(payload["checks"][-2]["value"]) is float  # latency, numpy scalar converted


def test_rows_of_different_lengths_are_refused() -> None:
    y, a, b = _pair("roc_auc", 0.5)
    with pytest.raises(ValueError, match="champion version 1 has 2999 scores"):
        _decide(
            _evidence("2", y, a, "roc_auc"), _evidence("1", y[1:], b[1:], "roc_auc"), y, "roc_auc"
        )


def test_measure_model(toy_frame, toy_config) -> None:
    config = toy_config()
    frame = toy_frame(600, seed=1)
    model = train_model(frame, config)
    evaluation_rows = toy_frame(300, seed=2)
    evidence = measure_model(model, evaluation_rows, config, "7")
    assert evidence.version == "7"
    assert evidence.evaluation == evaluate_model(model, evaluation_rows, config)
    expected = model.predict(evaluation_rows).probability
    np.testing.assert_allclose(evidence.scores, expected)
    assert evidence.size_mb == len(model.to_bytes()) / 1_000_000
    assert 0 < evidence.latency_ms_per_1000 < 60_000
    # Without a champion the absolute checks run on the measured figures.
    gate = config.gate.model_copy(update={"max_latency_ms": 1e9})
    decision = decide_promotion(
        evidence, None, evaluation_rows["target"], gate, config.problem_type, config.metric
    )
    assert decision.passed, decision.reasons
    assert [c.name for c in decision.checks] == ["latency", "size"]
    size = decision.check("size")
    assert size is not None and size.value == evidence.size_mb
