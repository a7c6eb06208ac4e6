"""The retrain steps between a training window and a registrable candidate: hold out the
most recent slice, train on the rest, evaluate, and build the next NannyML reference."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evergreen.config import ModelConfig
from evergreen.engines.scoring import evaluate_model as evaluate_model
from evergreen.engines.scoring import monitor_reference as monitor_reference

if TYPE_CHECKING:  # XGBoost costs ~5 s to import: not for a retrain that is skipped
    from evergreen.engines.training import CrossFitPlan


# The hold-out is the next monitor's NannyML reference: at least twice the rows NannyML
# needs to calibrate its thresholds (engines.monitoring.MIN_REFERENCE_ROWS).
MIN_HOLDOUT_ROWS = 200


@dataclass(frozen=True)
class HoldOut:
    """Training rows and the most recent rows held out for evaluation."""

    train: pd.DataFrame
    evaluation: pd.DataFrame

    @property
    def train_rows(self) -> int:
        return len(self.train)

    @property
    def evaluation_rows(self) -> int:
        return len(self.evaluation)


@dataclass(frozen=True)
class RowHoldOut:
    """A window read in chunks (`window_stream.WindowPlan`), split as `hold_out_recent` and
    `train_model` split a frame: `roles[i]` says whether the window's i-th row is fitted on
    (`training.FIT`), is the early-stopping set (`training.VALIDATE`) or held out for
    evaluation (`EVALUATE`); the held-out rows are read into `evaluation` (by time, as
    `hold_out_recent` orders them): they become the next monitor's reference, which the
    monitor holds in memory."""

    roles: np.ndarray
    evaluation: pd.DataFrame
    train_end: pd.Timestamp | None
    weights: np.ndarray | None = None  # per window row (an episode's post-change weights)
    # per window row, for the final refit on every row (`train_rows`): the post-change
    # weights over the hold-out too
    final_weights: np.ndarray | None = None
    # in an alert episode, the folds of the cross-fit probes (`cross_fit_rows`)
    cross_fit: CrossFitPlan | None = None

    @property
    def train_rows(self) -> int:
        return int((self.roles != EVALUATE).sum())

    @property
    def evaluation_rows(self) -> int:
        return len(self.evaluation)


EVALUATE = 2


def split_rows(timestamps: pd.Series, config: ModelConfig, change_point: pd.Timestamp | None = None) -> np.ndarray:
    """The roles of a window's rows (see `RowHoldOut`) from its timestamps alone: the newest
    `held_out_rows` by time are held out (`hold_out_recent`), the last
    `training.validation_fraction` of the rest by time stop the boosting early
    (`train_model`). Ties in time keep the window's order; rows without a time come last,
    as the sorts of `split_by_time` place them."""
    from evergreen.engines.training import FIT, VALIDATE

    n = len(timestamps)
    roles = np.full(n, FIT, dtype=np.int8)
    if n < 2:
        return roles
    order = _time_order(timestamps)
    held = held_out_rows(timestamps, config, change_point)
    roles[order[n - held :]] = EVALUATE
    rest = n - held
    if rest >= 2:
        roles[order[rest - _last_share(rest, config.training.validation_fraction) : rest]] = VALIDATE
    return roles


def _time_order(timestamps: pd.Series) -> np.ndarray:
    """Positions of `timestamps` in time order, ties in their order, missing times last. Sorted
    as a pandas datetime Series: its `to_numpy()` would box a zoned column into one Timestamp
    object per row (5 s of a 1M-row window's hold-out, against 0.5 s)."""
    return pd.to_datetime(timestamps).reset_index(drop=True).sort_values(kind="mergesort").index.to_numpy()


def held_out_rows(timestamps: pd.Series, config: ModelConfig, change_point: pd.Timestamp | None = None) -> int:
    """How many of the window's newest rows are held out: `training.evaluation_fraction`, or
    in an alert episode (`change_point`) `window.episode_evaluation_rows` of its post-change
    rows (at least `MIN_HOLDOUT_ROWS`)."""
    from evergreen.decisions.defaults import gate_min_rows
    from evergreen.decisions.window import episode_evaluation_rows
    from evergreen.times import utc, utc_series

    n, fraction = len(timestamps), config.training.evaluation_fraction
    if change_point is not None and n >= 2:
        post = int((utc_series(timestamps) >= utc(change_point)).sum())
        held = episode_evaluation_rows(post, n, fraction, gate_min_rows(config), MIN_HOLDOUT_ROWS)
        if held is not None:
            return min(held, n - 1)
    return _last_share(n, fraction)


def _last_share(n: int, fraction: float) -> int:
    """How many rows `split_by_time` holds out of `n` for `fraction`."""
    return min(max(int(round(n * fraction)), 1), n - 1)


def hold_out_rows(
    timestamps: pd.Series,
    take: Callable[[np.ndarray], pd.DataFrame],
    config: ModelConfig,
    change_point: pd.Timestamp | None = None,
) -> RowHoldOut:
    """`hold_out_recent` for a window read in chunks: its rows' roles (`split_rows`), the
    held-out rows, read with `take(positions)` (positions ascending) and put in time order,
    and in an alert episode the training rows' post-change weights (`window.post_change_weights`)."""
    from evergreen.decisions.window import post_change_weights

    roles = split_rows(timestamps, config, change_point)
    held = np.flatnonzero(roles == EVALUATE)
    frame = take(held)
    by_time = _time_order(timestamps.iloc[held])
    evaluation = frame.iloc[by_time].reset_index(drop=True)
    trained = roles != EVALUATE
    stamps = pd.to_datetime(timestamps[trained])
    weights = final_weights = None
    if change_point is not None:
        trained_weights = post_change_weights(timestamps[trained], change_point, config.retrain.post_change_weight)
        if trained_weights is not None:
            weights = np.ones(len(roles))
            weights[trained] = trained_weights
        final_weights = post_change_weights(timestamps, change_point, config.retrain.post_change_weight)
    train_end = stamps.max() if len(stamps) else None
    return RowHoldOut(
        roles=roles, evaluation=evaluation, train_end=train_end, weights=weights, final_weights=final_weights,
        cross_fit=cross_fit_rows(timestamps, trained, change_point, train_end, config),
    )


# Fewest post-change rows per cross-fit fold (fewer post-change rows: fewer folds).
MIN_FOLD_ROWS = 100


def cross_fit_rows(
    timestamps: pd.Series,
    trained: np.ndarray,
    change_point: pd.Timestamp | None,
    train_end: pd.Timestamp | None,
    config: ModelConfig,
) -> CrossFitPlan | None:
    """The cross-fit probes of an alert episode's retrain (`training.CrossFit`): the
    window's rows stamped at or after the change point, cut by time into
    `gate.cross_fit_folds` folds of about as many rows (a fold ends where the next one's
    time begins: rows with the same time share a fold), at least `MIN_FOLD_ROWS` each.
    Each probe learns from every other row of the window, weighed as the final refit weighs
    its rows (`window.post_change_weights`), and scores its fold: with k folds each learns
    from (k-1)/k of the new world, so its gain is near the final model's, and the gate
    judges on every post-change row. None outside an episode, without
    `training.refit_on_holdout` (the hold-out is then never trained on), with fewer than
    two folds, or when no training row is from after the change (nothing would learn the
    new world but from the hold-out)."""
    from evergreen.decisions.window import post_change_weights
    from evergreen.engines.training import CrossFitPlan, FoldPlan
    from evergreen.times import utc, utc_series

    if change_point is None or train_end is None or not config.training.refit_on_holdout:
        return None
    stamps = utc_series(timestamps).reset_index(drop=True)
    post = (stamps >= utc(change_point)).to_numpy()
    k = min(config.gate.cross_fit_folds, int(post.sum()) // MIN_FOLD_ROWS)
    if k < 2 or not (post & trained).any():
        return None
    times = stamps[post].sort_values(ignore_index=True)
    starts = sorted({times.iloc[(i * len(times)) // k] for i in range(k)})
    folds = []
    for i, begin in enumerate(starts):
        inside = post & (stamps >= begin).to_numpy()
        if i + 1 < len(starts):
            inside &= (stamps < starts[i + 1]).to_numpy()
        weights = np.ones(len(inside))
        kept = post_change_weights(timestamps[~inside], change_point, config.retrain.post_change_weight)
        if kept is not None:
            weights[~inside] = kept
        since, until = stamps[inside].min(), stamps[inside].max()
        folds.append(FoldPlan(inside, weights, since, until))
    return CrossFitPlan(folds, config.columns.timestamp) if len(folds) >= 2 else None


def validate_window(plan, suite):  # noqa: ANN001, ANN201 - WindowPlan, SuiteSpec -> ValidationReport
    """The training suite on a window read in chunks (`validation.validate_chunks`)."""
    from evergreen.engines.validation import validate_chunks

    return validate_chunks(plan.chunks(), suite, f"training window ({plan.rows:,} rows)")


def train_rows(read: Callable[[list[str], np.ndarray | None], Iterable[tuple[int, pd.DataFrame]]], holdout: RowHoldOut, config: ModelConfig):  # noqa: ANN201, E501 - TrainedModel
    """XGBoost on the window's FIT and VALIDATE rows, read in chunks (`train_model_chunks`);
    with `training.refit_on_holdout` the model is then refit on every row of the window, the
    evaluation hold-out included, for the rounds early stopping chose, and the model without
    the hold-out is kept as its probe (`TrainedModel.held_out`): the hold-out is the newest
    data, after a change the most valuable, and the gate measures the probe on it (in an
    alert episode it scores the post-change rows with its cross-fit probes: `cross_fit_rows`)."""
    from evergreen.engines.training import FIT, VALIDATE, train_model_chunks

    final = (FIT, VALIDATE, EVALUATE) if config.training.refit_on_holdout else None
    return train_model_chunks(
        read, holdout.roles, config, weights=holdout.weights, final=final, final_weights=holdout.final_weights,
        cross_fit=holdout.cross_fit,
    )


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
        split_at_change(
            frame, ts, change_point, config.training.evaluation_fraction, gate_min_rows(config), MIN_HOLDOUT_ROWS
        )
        if change_point is not None
        else None
    )
    if split is None:
        recent = split_by_time(frame, ts, config.training.evaluation_fraction)
        return HoldOut(train=recent.train, evaluation=recent.validation)
    train, evaluation = split
    assert change_point is not None
    weights = post_change_weights(train[ts], change_point, config.retrain.post_change_weight)
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
