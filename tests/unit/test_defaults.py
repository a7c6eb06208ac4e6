"""Defaults chosen from a stream's cadence and batch size (`evergreen.decisions.defaults`),
the gate and canary minimums derived from `data.rows_per_batch`, and the gate's honesty on
the few rows those minimums allow."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from evergreen.config import ConfigError, GateConfig, load_config, parse_config
from evergreen.decisions import defaults
from evergreen.decisions.evaluation import evaluate_predictions
from evergreen.decisions.gate import ModelEvidence, decide_promotion

ROOT = Path(__file__).resolve().parents[2]
DAY, WEEK, HOUR = timedelta(days=1), timedelta(days=7), timedelta(hours=1)


def _raw(**sections: dict) -> dict:
    base = {
        "name": "m",
        "columns": {"target": "y", "features": ["a", "b"]},
        "mlflow": {"model_name": "m"},
    }
    return {**base, **sections}


# ----------------------------------------------------------------------- defaults_for


def test_every_choice_has_a_reason_and_the_mapping_is_a_valid_config() -> None:
    chosen = defaults.defaults_for(WEEK, 144, WEEK, 2_000)
    assert all(c.reason.strip() for c in chosen.choices)
    assert len({c.field for c in chosen.choices}) == len(chosen.choices)
    mapping = chosen.as_config()
    cfg = parse_config(_raw(**mapping))
    assert cfg.retrain.window_unit == ("batches", chosen.value("retrain.window_batches"))
    assert cfg.retrain.cooldown_unit == ("batches", chosen.value("retrain.cooldown_batches"))
    assert defaults.gate_min_rows(cfg) == chosen.value("gate.min_rows")
    assert chosen.lines()[0].startswith("data.rows_per_batch: 144  # ")


def test_weekly_batches_of_a_few_hundred_rows_get_minimums_a_few_batches_meet() -> None:
    """Issue 16: weekly batches of 24-168 rows met a gate needing 500 rows never."""
    for rows in (24, 80, 168):
        chosen = defaults.defaults_for(WEEK, rows, WEEK, 2_000)
        gate = chosen.value("gate.min_rows")
        assert gate <= max(2 * rows, defaults.MIN_SAMPLE_ROWS)  # two batches (30 at least)
        assert chosen.value("canary.min_labels") <= max(rows, defaults.MIN_SAMPLE_ROWS)
        window = chosen.value("retrain.window_batches")
        assert window * rows >= 2_000 or window == 52  # the reference's rows, or a year of batches
        assert "batch" in chosen.reason("gate.min_rows")


def test_monthly_batches_get_a_window_of_batches_not_of_days() -> None:
    """Issue 16: a 14-day window on monthly batches held no batch at all."""
    chosen = defaults.defaults_for(timedelta(days=30), 3_000, timedelta(days=30), 5_000)
    assert chosen.value("retrain.window_batches") == defaults.MIN_WINDOW_BATCHES
    assert "retrain.window_days" not in chosen.as_config()["retrain"]
    # a quarter of the window after the labels arrived
    assert chosen.value("retrain.cooldown_batches") == 1 + 1
    assert chosen.value("retrain.period_days") == 4 * 2 * 30


def test_the_demo_stream_gets_the_demo_minimums() -> None:
    chosen = defaults.defaults_for(DAY, 2_500, 3 * DAY, 50_000)
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert chosen.value("gate.min_rows") == defaults.gate_min_rows(demo) == 500
    canary = defaults.canary_config(demo)  # the demo leaves them to the stream's size
    assert chosen.value("canary.min_predictions") == canary.min_predictions == 400  # 80% of a day's 500
    assert chosen.value("canary.min_labels") == canary.min_labels == 200
    assert chosen.value("retrain.window_batches") == 20  # 50,000 rows
    assert chosen.value("retrain.cooldown_batches") == 3 + 5


def test_the_window_never_reaches_back_more_than_a_year() -> None:
    chosen = defaults.defaults_for(WEEK, 10, WEEK, 50_000)
    assert chosen.value("retrain.window_batches") == 52
    assert "capped at a year" in chosen.reason("retrain.window_batches")
    fast = defaults.defaults_for(HOUR, 50, None, 10_000)
    assert fast.value("retrain.window_batches") == 200
    assert "unknown" in fast.reason("data.label_delay_days")
    assert fast.value("retrain.cooldown_batches") == 1 + 50  # one batch of delay assumed
    assert fast.value("retrain.period_days") == 30  # at least 30 days


def test_minimums_scale_between_their_bounds() -> None:
    small, big = defaults.defaults_for(DAY, 5, DAY, 1_000), defaults.defaults_for(DAY, 10**6, DAY, 10**7)
    assert small.value("gate.min_rows") == defaults.MIN_SAMPLE_ROWS
    assert big.value("gate.min_rows") == defaults.MAX_GATE_ROWS
    assert small.value("canary.min_predictions") == defaults.MIN_SAMPLE_ROWS
    assert big.value("canary.min_predictions") == defaults.MAX_CANARY_PREDICTIONS
    assert big.value("canary.min_labels") == defaults.MAX_CANARY_LABELS


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((timedelta(0), 10, None, 100), "cadence"),
        ((DAY, 0, None, 100), "rows_per_batch"),
        ((DAY, 10, -DAY, 100), "label_delay"),
        ((DAY, 10, None, -1), "reference_rows"),
    ],
)
def test_impossible_stream_figures_are_named(args: tuple, named: str) -> None:
    with pytest.raises(defaults.DefaultsError, match=named):
        defaults.defaults_for(*args)


# ----------------------------------------------------------------------- derived minimums


def test_unset_minimums_derive_from_the_batch_size() -> None:
    cfg = parse_config(_raw(data={"rows_per_batch": 144}))
    assert cfg.gate.min_rows is None
    assert defaults.gate_min_rows(cfg) == 288
    canary = defaults.canary_config(cfg)
    assert (canary.min_predictions, canary.min_labels) == (30, 30)  # 20% of 144 is 29
    given = parse_config(_raw(data={"rows_per_batch": 144}, gate={"min_rows": 50}, canary={"min_labels": 10}))
    assert defaults.gate_min_rows(given) == 50
    assert defaults.canary_config(given).min_labels == 10


def test_the_gate_refusal_says_what_to_change_or_how_long_to_wait() -> None:
    cfg = parse_config(_raw(data={"rows_per_batch": 144, "label_delay_days": 7}))
    message = defaults.gate_shortfall(144, cfg)
    assert message is not None
    assert message.startswith("only 144 fresh labelled rows; the gate needs 288 (gate.min_rows, derived")
    assert "about 1 more labelled batch" in message and "data.label_delay_days=7" in message
    assert "set gate.min_rows: 144" in message
    assert defaults.gate_shortfall(288, cfg) is None
    tiny = defaults.gate_shortfall(12, cfg)
    assert tiny is not None and "set gate.min_rows" not in tiny and "fewer than 30" in tiny


def test_a_config_with_unset_minimums_reaches_the_canary_review_resolved() -> None:
    from evergreen.decisions.canary import ArmEvidence, decide_canary

    cfg = parse_config(_raw(data={"rows_per_batch": 144}))
    arm = ArmEvidence("canary", "2", n_predictions=10, n_labelled=0, realized_metric=None)
    champion = ArmEvidence("champion", "1", n_predictions=100, n_labelled=50, realized_metric=0.8)
    with pytest.raises(ValueError, match="canary_config"):
        decide_canary(arm, champion, cfg.canary, cfg.problem_type, cfg.metric)
    decision = decide_canary(arm, champion, defaults.canary_config(cfg), cfg.problem_type, cfg.metric)
    assert decision.outcome == "pending" and decision.needed is not None
    assert decision.needed.predictions == 20
    wait = defaults.canary_wait(cfg, decision.needed.predictions, decision.needed.labels)
    # 30 labels at about 29 canary rows per batch: two more batches, then their label delay
    assert "about 2 more batch" in wait and "label_delay_days" in wait and "canary.min_predictions" in wait


def test_bad_minimums_are_still_refused() -> None:
    with pytest.raises(ConfigError, match="gate.min_rows"):
        parse_config(_raw(gate={"min_rows": 5}))


# ----------------------------------------------------------------------- the gate's honesty


def _scores(n: int, seed: int, extra_noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a champion's scores and a challenger's: the champion's noise plus more."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    signal, e1, e2 = 1.2 * (2 * y - 1), rng.normal(size=n), rng.normal(size=n)
    champion = 1 / (1 + np.exp(-(signal + e1)))
    challenger = 1 / (1 + np.exp(-(signal + e1 + extra_noise * e2)))
    return y, champion, challenger


def _passes(n: int, seed: int, extra_noise: float) -> bool:
    y, old, new = _scores(n, seed, extra_noise)
    evidence = [
        ModelEvidence(v, evaluate_predictions(y, s, "binary_classification", "roc_auc"), s, 1.0, 1.0)
        for v, s in (("2", new), ("1", old))
    ]
    gate = GateConfig(bootstrap_samples=300, seed=seed)
    return decide_promotion(evidence[0], evidence[1], y, gate, "binary_classification", "roc_auc").passed


@pytest.mark.parametrize("rows", [30, 60, 288])
def test_a_gate_on_few_rows_does_not_pass_a_worse_model(rows: int) -> None:
    """The minimums allow gates on a few dozen rows: the bootstrap interval widens with fewer
    rows, so a worse challenger (noisier scores: about 0.06 AUC worse) passes at most as
    often as the interval's 2.5% lower tail allows."""
    _, old, new = _scores(100_000, 0, 1.0)
    y_big = _scores(100_000, 0, 1.0)[0]
    from evergreen.decisions.evaluation import metric_value

    worse_by = metric_value(y_big, old, "binary_classification", "roc_auc") - metric_value(
        y_big, new, "binary_classification", "roc_auc"
    )
    assert worse_by > 0.03  # the challenger is really worse, by far more than the margin
    passed = sum(_passes(rows, seed, 1.0) for seed in range(40))
    assert passed <= 2, f"a worse challenger passed {passed} of 40 gates on {rows} rows"


def test_a_gate_on_few_rows_still_passes_an_equal_model() -> None:
    """Conservative, not closed: a challenger scoring exactly like the champion passes."""
    assert all(_passes(30, seed, 0.0) for seed in range(5))
