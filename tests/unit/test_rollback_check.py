"""The automatic rollback only rolls back when the previous champion is really better."""

from __future__ import annotations

import numpy as np

from evergreen.decisions.evaluation import evaluate_predictions
from evergreen.decisions.gate import ModelEvidence, decide_rollback


def _evidence(version: str, noise: float, seed: int = 0) -> tuple[ModelEvidence, int]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    p = np.clip(y * 0.6 + 0.2 + rng.normal(0, noise, len(y)), 0, 1)
    evaluation = evaluate_predictions(y, p, "binary_classification", "roc_auc")
    return ModelEvidence(version=version, evaluation=evaluation, scores=p, latency_ms_per_1000=1.0, size_mb=1.0), len(y)


def test_rolls_back_when_the_previous_champion_is_clearly_better() -> None:
    current, rows = _evidence("3", noise=0.6)
    previous, _ = _evidence("1", noise=0.1)
    check = decide_rollback(current, previous, "roc_auc", margin=0.01, rows=rows)
    assert check.worth_it and "previous champion is better" in check.reason and "v1" in check.reason


def test_keeps_the_champion_when_both_degrade_alike() -> None:
    current, rows = _evidence("3", noise=0.3)
    previous, _ = _evidence("1", noise=0.3)
    check = decide_rollback(current, previous, "roc_auc", margin=0.01, rows=rows)
    assert not check.worth_it and "keeping the champion" in check.reason
