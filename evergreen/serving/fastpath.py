"""Low-latency scoring of small frames, checked against TrainedModel.predict.

`TrainedModel.predict` spends most of a one-row request in pandas (category conversion,
DMatrix construction from a DataFrame): ~10 ms against ~1 ms for the trees. The service
scores through `FastScorer` instead, which encodes categories with plain dict look-ups over
the same fixed category lists and calls `Booster.inplace_predict` on a float matrix
(category codes are the positions in those lists, exactly as the pandas Categoricals of
`prepare_features` encode them).

`build_scorer` only returns the fast path when it gives bit-identical output to
`TrainedModel.predict` on a probe frame covering every category, unknown values and
missing values; otherwise it falls back to the model itself and logs why.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from evergreen.training import Predictions, TrainedModel

# The same value -> category-string rule training uses (bools, integral floats).
from evergreen.training import _category_string as category_string

log = logging.getLogger("evergreen.serving.fastpath")


class Scorer(Protocol):
    def predict(self, df: pd.DataFrame) -> Predictions: ...


@dataclass(frozen=True)
class FastScorer:
    """Scores a frame with the model's booster, bypassing pandas conversions."""

    model: TrainedModel
    codes: dict[str, dict[str, int]]

    @classmethod
    def of(cls, model: TrainedModel) -> FastScorer:
        codes = {f: {c: i for i, c in enumerate(cats)} for f, cats in model.categories.items()}
        return cls(model=model, codes=codes)

    def predict(self, df: pd.DataFrame) -> Predictions:
        """Same contract as TrainedModel.predict."""
        missing = [f for f in self.model.features if f not in df.columns]
        if missing:
            raise KeyError(f"input frame lacks columns {missing}; it has {list(df.columns)}")
        matrix = np.empty((len(df), len(self.model.features)), dtype=np.float64)
        for j, name in enumerate(self.model.features):
            lookup = self.codes.get(name)
            if lookup is None:
                col = df[name]
                if not pd.api.types.is_float_dtype(col.dtype):
                    col = pd.to_numeric(col, errors="coerce")
                matrix[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                matrix[:, j] = [_code(v, lookup) for v in df[name].tolist()]
        raw = self.model.booster.inplace_predict(matrix, missing=np.nan)
        if self.model.problem_type == "binary_classification":
            proba = np.asarray(raw).astype(float)
            return Predictions(
                prediction=(proba >= self.model.threshold).astype(np.int64), probability=proba
            )
        return Predictions(prediction=np.asarray(raw).astype(float), probability=None)


def _code(value: Any, lookup: dict[str, int]) -> float:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    # Values not seen in training are missing, as in prepare_features.
    return float(lookup.get(category_string(value), math.nan))


def build_scorer(model: TrainedModel, seed: int = 0) -> Scorer:
    """The fast scorer when it matches `model.predict` exactly on a probe frame, else the model."""
    try:
        probe = probe_frame(model, seed)
        fast = FastScorer.of(model)
        expected, got = model.predict(probe), fast.predict(probe)
        same = _same(expected, got)
    except Exception as exc:
        log.warning("fast scoring path unavailable (%s); scoring with TrainedModel.predict", exc)
        return model
    if not same:
        log.warning("fast scoring path disagrees with TrainedModel.predict; using the latter")
        return model
    return fast


def _same(a: Predictions, b: Predictions) -> bool:
    if not np.array_equal(a.prediction, b.prediction):
        return False
    if a.probability is None or b.probability is None:
        return a.probability is None and b.probability is None
    return bool(np.array_equal(a.probability, b.probability))


def probe_frame(model: TrainedModel, seed: int = 0, rows: int = 64) -> pd.DataFrame:
    """Rows that visit every category, an unknown one and missing values of each feature."""
    rng = np.random.default_rng(seed)
    data: dict[str, list[Any]] = {}
    for name in model.features:
        cats = model.categories.get(name)
        if cats is None:
            values: list[Any] = rng.normal(scale=3.0, size=rows).tolist()
            values[0] = None
        else:
            pool = [*cats, "__unseen__", None]
            values = [pool[i % len(pool)] for i in range(rows)]
            rng.shuffle(values)
        data[name] = values
    return pd.DataFrame(data, dtype=object).astype(
        {n: float for n in model.features if n not in model.categories}
    )
