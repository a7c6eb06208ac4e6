"""Timestamps on one clock: UTC. Batches may carry naive or zone-aware times; every
comparison in the loop is made in UTC."""

from __future__ import annotations

from typing import Any

import pandas as pd


def utc(value: Any) -> pd.Timestamp:
    """One timestamp in UTC (a naive one is taken to be UTC already)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc_series(values: pd.Series) -> pd.Series:
    """A column of timestamps in UTC (naive values are taken to be UTC already)."""
    return pd.to_datetime(values, utc=True)
