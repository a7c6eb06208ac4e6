"""Plain JSON types for results, event payloads and MLflow dicts (Prefect silently drops
events whose payload holds numpy scalars)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd


def plain(value: Any, *, infinity_as_text: bool = False) -> Any:
    """`value` with numpy scalars/arrays, timestamps, dataclasses and pydantic models turned
    into plain Python; NaN and NaT become None, and so do infinities unless
    `infinity_as_text` keeps them readable as "inf"/"-inf" (a bound in a validation report)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value), infinity_as_text=infinity_as_text)
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return plain(value.model_dump(), infinity_as_text=infinity_as_text)
    if isinstance(value, dict):
        return {str(k): plain(v, infinity_as_text=infinity_as_text) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [plain(v, infinity_as_text=infinity_as_text) for v in value]
    if isinstance(value, (np.datetime64, np.timedelta64)):  # first: timedelta64 is an np.integer
        return None if np.isnat(value) else str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isfinite(f):
            return f
        return ("inf" if f > 0 else "-inf") if infinity_as_text and not math.isnan(f) else None
    if value is None:
        return None
    if isinstance(value, str):
        return str(value)  # numpy's str_ too
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return plain(value.item(), infinity_as_text=infinity_as_text)
    return str(value)
