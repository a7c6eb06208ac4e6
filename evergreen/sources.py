"""Reading what a retrain can learn from: the training reference and the labelled batches."""

from __future__ import annotations

import pandas as pd

from evergreen import io, ledger
from evergreen.config import ModelConfig
from evergreen.window import LabelledBatch, join_labels


def read_training_reference(config: ModelConfig) -> pd.DataFrame | None:
    """The training reference table, or None when the policy leaves it out or it is absent."""
    path = config.data.path("training_reference")
    if not config.retrain.include_reference or not io.exists(path):
        return None
    return io.read_table(path)


def read_labelled_batches(config: ModelConfig, up_to_day: str | None = None) -> list[LabelledBatch]:
    """Every production batch with the labels delivered so far joined on id.

    Batches the monitor rejected come back with valid=False and the reason, so the window
    can exclude (and report) them without reading their (bad) data.
    """
    labels = io.read_labels(config.data.path("labels"), up_to_day=up_to_day)
    rejected = ledger.read_ledger(config.data.path("state")).rejected()
    out: list[LabelledBatch] = []
    for b in io.list_batches(config.data.path("batches")):
        if up_to_day is not None and b.day > up_to_day:
            continue
        if b.day in rejected:
            out.append(LabelledBatch(b.day, pd.DataFrame(), valid=False, reason=rejected[b.day]))
            continue
        if labels is None:
            continue
        try:
            frame = io.read_table(b.path)
        except io.DataReadError as exc:
            out.append(LabelledBatch(b.day, pd.DataFrame(), valid=False, reason=str(exc)))
            continue
        out.append(LabelledBatch(b.day, join_labels(frame, labels, config.columns)))
    return out


def read_fresh_labelled(config: ModelConfig, after: pd.Timestamp | None = None) -> pd.DataFrame:
    """The freshest labelled production rows for the gate: rows newer than `after` (the end of
    the challenger's training data), topped up with the most recent rows when fewer than
    `gate.min_rows` are that fresh; at most `gate.evaluation_rows`, oldest first."""
    batches = [b for b in read_labelled_batches(config) if b.valid and len(b.frame)]
    if not batches:
        return pd.DataFrame()
    ts = config.columns.timestamp
    frame = pd.concat([b.frame for b in batches], ignore_index=True)
    frame[ts] = pd.to_datetime(frame[ts], utc=True)
    frame = frame.sort_values(ts, kind="mergesort").reset_index(drop=True)
    if after is not None:
        cutoff = pd.Timestamp(after)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        fresh = frame[frame[ts] > cutoff]
        if len(fresh) >= config.gate.min_rows:
            frame = fresh
    return frame.tail(config.gate.evaluation_rows).reset_index(drop=True)
