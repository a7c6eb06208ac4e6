"""The retrain steps between a training window and a registrable candidate: hold out the
most recent slice, train on the rest, evaluate, and build the next NannyML reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from evergreen.config import ModelConfig
from evergreen.engines.scoring import evaluate_model as evaluate_model
from evergreen.engines.scoring import monitor_reference as monitor_reference

if TYPE_CHECKING:  # XGBoost costs ~5 s to import: not for a retrain that is skipped
    pass


@dataclass(frozen=True)
class HoldOut:
    """Training rows and the most recent rows held out for evaluation."""

    train: pd.DataFrame
    evaluation: pd.DataFrame


def hold_out_recent(frame: pd.DataFrame, config: ModelConfig, change_point: pd.Timestamp | None = None) -> HoldOut:
    """The last `training.evaluation_fraction` of the window by time is never trained on.

    In an alert episode (`change_point`), the hold-out is post-change data (the newest
    post-change rows, at least the gate's minimum, at most half of them: `window.split_at_change`)
    and the training rows from after the change weigh `retrain.post_change_weight` of the
    total (`window.post_change_weights`), so that the model learns the new world."""
    from evergreen.decisions.defaults import gate_min_rows
    from evergreen.decisions.window import post_change_weights, split_at_change
    from evergreen.engines.training import WEIGHT_COLUMN, split_by_time

    ts = config.columns.timestamp
    split = (
        split_at_change(frame, ts, change_point, config.training.evaluation_fraction, gate_min_rows(config))
        if change_point is not None
        else None
    )
    if split is None:
        recent = split_by_time(frame, ts, config.training.evaluation_fraction)
        return HoldOut(train=recent.train, evaluation=recent.validation)
    train, evaluation = split
    assert change_point is not None
    weights = post_change_weights(train, ts, change_point, config.retrain.post_change_weight)
    if weights is not None:
        train = train.assign(**{WEIGHT_COLUMN: weights})
    return HoldOut(train=train, evaluation=evaluation)


def training_suite(batch_suite, max_rows: int = 100_000_000):  # noqa: ANN001, ANN201 - SuiteSpec
    """The monitor's suite for a training window: its integrity checks on ids, timestamps and
    features (declared limits included), without the serving model's prediction columns (a
    window has labels instead), without the per-batch row limit, and without distribution
    checks: rows whose values left the old champion's range are what the next model must
    learn, so the window keeps them. (A batch an enforced distribution rule rejected is
    left out of the window already: the monitor recorded it rejected.)"""
    keep = [c for c in batch_suite.integrity_only().columns if c.role not in ("prediction", "probability")]
    return batch_suite.model_copy(
        update={"name": batch_suite.name.replace("-batch", "") + "-training", "columns": keep, "max_rows": max_rows}
    )
