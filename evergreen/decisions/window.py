"""Assembling the training window of a retrain from the reference table and labelled batches.

Pure: frames in, a `TrainingWindow` out. Which batches are valid comes from the caller
(the batch ledger); this module only applies the policy and records what it left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from evergreen.config import ColumnRoles, RetrainPolicyConfig
from evergreen.jsonable import plain
from evergreen.times import utc, utc_series


class WindowError(ValueError):
    """Inputs that cannot form a training window; the message names the table and column."""


@dataclass(frozen=True)
class LabelledBatch:
    """One production batch with its labels joined (see `join_labels`).

    `valid` is False when the batch failed validation; `reason` says why (recorded in
    `TrainingWindow.excluded`).
    """

    batch_id: str
    frame: pd.DataFrame
    valid: bool = True
    reason: str = ""


@dataclass(frozen=True)
class TrainingWindow:
    """The rows a retrain trains on, oldest first, and where they came from.

    `frame` holds only the id, timestamp, feature and target columns (in that order);
    timestamps are UTC. Reference rows (if any) come first, then batch rows by time.
    `sources` are the batch ids that contributed rows; `excluded` maps every other batch
    id to the reason it was left out.
    """

    frame: pd.DataFrame
    sources: list[str]
    excluded: dict[str, str]
    rows: int
    time_min: pd.Timestamp | None
    time_max: pd.Timestamp | None
    reference_rows: int = 0
    window_start: pd.Timestamp | None = None
    batch_rows: int = 0


def window_columns(columns: ColumnRoles) -> list[str]:
    """Columns of a training window, in order: id, timestamp, features, target."""
    return [columns.id, columns.timestamp, *columns.features, columns.target]


def join_labels(batch: pd.DataFrame, labels: pd.DataFrame, columns: ColumnRoles) -> pd.DataFrame:
    """Rows of `batch` that have a label, with the label as the target column.

    Inner join on the id column; the batch's row order and columns are kept (a target
    column already in the batch is replaced by the label). Raises WindowError when a
    table lacks the id/target column, the id types differ, or labels repeat an id.
    """
    key, target = columns.id, columns.target
    if key not in batch.columns:
        raise WindowError(f"batch has no id column {key!r}; columns are {list(batch.columns)}")
    missing = [c for c in (key, target) if c not in labels.columns]
    if missing:
        raise WindowError(
            f"labels lack column(s) {missing}; label files must hold {key!r} and {target!r}"
        )
    duplicated = labels[key][labels[key].duplicated()]
    if len(duplicated):
        examples = [plain(v) for v in duplicated.unique()[:5]]
        raise WindowError(
            f"labels hold {len(duplicated)} duplicate id(s) in column {key!r} (e.g. {examples}); "
            "keep one label per id (deduplicate the label files) before joining"
        )
    if _id_kind(batch[key]) != _id_kind(labels[key]):
        raise WindowError(
            f"id column {key!r} is {batch[key].dtype} in the batch but {labels[key].dtype} in "
            "the labels; write both with the same type"
        )
    label_by_id = labels.set_index(key)[target]
    has_label = batch[key].isin(label_by_id.index).to_numpy()
    out = batch.loc[has_label].drop(columns=[target], errors="ignore")
    out[target] = out[key].map(label_by_id).to_numpy()
    return out.reset_index(drop=True)


def assemble_window(
    reference: pd.DataFrame | None,
    batches: Sequence[LabelledBatch],
    policy: RetrainPolicyConfig,
    columns: ColumnRoles,
    now: pd.Timestamp | None = None,
) -> TrainingWindow:
    """Select the rows to retrain on.

    - invalid batches, batches without labelled rows and batches missing window columns
      are excluded (with the reason);
    - rows whose target is missing are dropped; rows stamped after `now` are dropped (a
      replay never trains on the future);
    - "sliding": batch rows from the last `window_days` days before `now` (default: the
      newest labelled row), of the newest `window_batches` batches that have labelled
      rows, or the newest `window_rows` rows (one unit: `RetrainPolicyConfig.window_unit`);
      "expanding": every batch row;
    - `include_reference` puts the reference table's labelled rows first (they are
      always older than production); the window limits apply to batch rows only.
    """
    wanted = window_columns(columns)
    seen: set[str] = set()
    excluded: dict[str, str] = {}
    parts: list[pd.DataFrame] = []
    for batch in batches:
        if batch.batch_id in seen:
            raise WindowError(f"batch {batch.batch_id!r} is listed twice; pass each batch once")
        seen.add(batch.batch_id)
        rows, reason = _usable_rows(batch, wanted, columns)
        if rows is None:
            excluded[batch.batch_id] = reason
        else:
            parts.append(rows.assign(_batch=batch.batch_id))

    end = utc(now) if now is not None else None
    recent = _concat(parts, [*wanted, "_batch"], columns)
    if end is not None:
        recent = recent[recent[columns.timestamp] <= end]
        _record_missing(parts, recent, excluded, f"every labelled row is after now ({end})")
    recent = recent.sort_values(columns.timestamp, kind="mergesort", ignore_index=True)
    recent, start = _apply_policy(recent, policy, columns, end)
    _record_missing(parts, recent, excluded, _outside_reason(policy))
    used = list(dict.fromkeys(recent["_batch"]))

    reference_part = (
        _reference_rows(reference, wanted, columns) if policy.include_reference else None
    )
    frames = [f for f in (reference_part, recent[wanted]) if f is not None]
    frame = _concat(frames, wanted, columns)
    times = frame[columns.timestamp].dropna()
    return TrainingWindow(
        frame=frame,
        sources=used,
        excluded=excluded,
        rows=len(frame),
        time_min=times.min() if len(times) else None,
        time_max=times.max() if len(times) else None,
        reference_rows=0 if reference_part is None else len(reference_part),
        window_start=start,
        batch_rows=len(recent),
    )


def _usable_rows(
    batch: LabelledBatch, wanted: list[str], columns: ColumnRoles
) -> tuple[pd.DataFrame | None, str]:
    if not batch.valid:
        return None, batch.reason or "failed validation"
    if columns.target not in batch.frame.columns:
        return None, f"no labels joined (column {columns.target!r} missing)"
    missing = [c for c in wanted if c not in batch.frame.columns]
    if missing:
        return None, f"missing column(s) {missing}"
    rows = batch.frame.loc[batch.frame[columns.target].notna(), wanted]
    if rows.empty:
        return None, "no labelled rows"
    rows = rows.assign(**{columns.timestamp: _to_utc(rows[columns.timestamp], batch.batch_id)})
    return rows, ""


def _apply_policy(
    recent: pd.DataFrame,
    policy: RetrainPolicyConfig,
    columns: ColumnRoles,
    end: pd.Timestamp | None,
) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """The batch rows the window keeps, and where it starts (None: unbounded)."""
    unit = policy.window_unit
    if unit is None or recent.empty:
        return recent, None
    kind, size = unit
    ts = columns.timestamp
    if kind == "days":
        last = end if end is not None else recent[ts].max()
        start = last - pd.Timedelta(days=size)
        return recent[recent[ts] >= start].reset_index(drop=True), start
    if kind == "batches":
        # The newest batches by their newest row; a batch's rows stay together.
        newest = recent.groupby("_batch", sort=False)[ts].max().sort_values(kind="mergesort")
        recent = recent[recent["_batch"].isin(set(newest.index[-int(size) :]))]
    else:
        recent = recent.tail(int(size))
    return recent.reset_index(drop=True), recent[ts].min()


def _record_missing(
    parts: list[pd.DataFrame], kept: pd.DataFrame, excluded: dict[str, str], reason: str
) -> None:
    kept_ids = set(kept["_batch"])
    for part in parts:
        batch_id = part["_batch"].iat[0]
        if batch_id not in kept_ids and batch_id not in excluded:
            excluded[batch_id] = reason


def _outside_reason(policy: RetrainPolicyConfig) -> str:
    unit = policy.window_unit
    if unit is None:
        return "outside the window"
    kind, size = unit
    field = f"retrain.window_{kind}"
    return f"outside the sliding window (last {size:g} {kind}, {field})"


def _reference_rows(
    reference: pd.DataFrame | None, wanted: list[str], columns: ColumnRoles
) -> pd.DataFrame | None:
    if reference is None:
        return None
    required = [c for c in wanted if c != columns.timestamp]
    missing = [c for c in required if c not in reference.columns]
    if missing:
        raise WindowError(
            f"reference table lacks column(s) {missing}; it must hold {required} "
            f"(and optionally {columns.timestamp!r})"
        )
    rows = reference.loc[reference[columns.target].notna()]
    if columns.timestamp in rows.columns:
        stamps = _to_utc(rows[columns.timestamp], "reference")
    else:  # a reference without timestamps is still older than every batch
        stamps = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    rows = rows.assign(**{columns.timestamp: stamps})[wanted]
    return rows.sort_values(columns.timestamp, kind="mergesort", na_position="first")


def _concat(frames: list[pd.DataFrame], wanted: list[str], columns: ColumnRoles) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if frames:
        return pd.concat(frames, ignore_index=True)
    empty = {c: pd.Series(dtype="object") for c in wanted}
    empty[columns.timestamp] = pd.Series(dtype="datetime64[ns, UTC]")
    return pd.DataFrame(empty)


def _to_utc(stamps: pd.Series, where: str) -> pd.Series:
    try:
        return utc_series(stamps)
    except (ValueError, TypeError) as exc:
        raise WindowError(
            f"{where}: timestamp column {stamps.name!r} is not datetimes ({exc})"
        ) from exc


def _id_kind(s: pd.Series) -> str:
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return "number"
    return (
        "string"
        if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")
        else str(s.dtype)
    )


# ----------------------------------------------------------------------------- after a change


EPISODE_EVALUATION_ROWS = 5_000
"""An episode's hold-out is half its post-change rows until `evaluation_fraction` of them is
at least this many (enough for a paired bootstrap to resolve a gain of about 0.01 AUC)."""


def episode_evaluation_rows(
    post: int, total: int, evaluation_fraction: float, min_evaluation_rows: int, floor_rows: int = 0
) -> int | None:
    """How many of a window's newest rows an alert episode's retrain holds out, given `post`
    of its `total` rows are stamped at or after the change point: half the post-change rows
    (the other half is what the model learns the new world from), or `evaluation_fraction`
    of them when that is more than `min_evaluation_rows` and `EPISODE_EVALUATION_ROWS` and the
    half is not needed: the gate's test of an improvement on post-change rows needs all the
    rows it can get while they are few. Never fewer than `floor_rows` (the hold-out is the
    next monitor's reference: with few post-change rows it reaches back before the change)
    nor more than half the window. None when fewer than two post-change rows exist."""
    if post < 2:
        return None
    share = int(round(post * evaluation_fraction))
    n_eval = share if share >= max(min_evaluation_rows, EPISODE_EVALUATION_ROWS) else post // 2
    return max(min(max(n_eval, floor_rows), total // 2), 1)


def split_at_change(
    frame: pd.DataFrame,
    timestamp: str,
    change_point: pd.Timestamp,
    evaluation_fraction: float,
    min_evaluation_rows: int,
    floor_rows: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """An alert episode's hold-out: the newest `episode_evaluation_rows` rows of `frame`.
    Returns (train, evaluation), oldest first; None when fewer than two post-change rows exist."""
    ordered = frame.sort_values(timestamp, kind="mergesort", ignore_index=True)
    post = int((utc_series(ordered[timestamp]) >= utc(change_point)).sum())
    n_eval = episode_evaluation_rows(post, len(ordered), evaluation_fraction, min_evaluation_rows, floor_rows)
    if n_eval is None:
        return None
    return ordered.iloc[: len(ordered) - n_eval], ordered.iloc[len(ordered) - n_eval :]


def post_change_weights(timestamps: pd.Series, change_point: pd.Timestamp, share: float):  # noqa: ANN201 - ndarray
    """Training weights for rows stamped `timestamps` that give the rows from after
    `change_point` `share` of the total weight (never less than their plain share: each
    weighs at least as much as an older row). None when there is nothing to weigh (no
    post-change or no earlier row, or share 0)."""
    import numpy as np

    post = (utc_series(timestamps) >= utc(change_point)).to_numpy()
    n_post, n_pre = int(post.sum()), int((~post).sum())
    if share <= 0 or n_post == 0 or n_pre == 0:
        return None
    weight = max(1.0, share / (1.0 - share) * n_pre / n_post)
    return np.where(post, weight, 1.0)
