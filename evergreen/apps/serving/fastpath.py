"""Low-latency scoring of small frames, checked against TrainedModel.predict.

`TrainedModel.predict` spends most of a one-row request in pandas (category conversion,
DMatrix construction from a DataFrame): ~10 ms against ~1 ms for the trees. The service
scores through `FastScorer` instead, which encodes categories with plain dict look-ups over
the same fixed category lists and calls `Booster.inplace_predict` on a float matrix
(category codes are the positions in those lists, exactly as the pandas Categoricals of
`prepare_features` encode them).

`predict_columns` does the same on validated request columns (`schema.validate_columns`),
with no DataFrame at all. `build_scorer` only returns the fast path when both give
bit-identical output to `TrainedModel.predict` on a probe covering every category, unknown
values and missing values; otherwise it falls back to the model itself and logs why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from evergreen.adapters.column_batch import ColumnBatch
from evergreen.engines.training import Predictions, TrainedModel

# The same value -> category-string rule training uses (bools, integral floats).
from evergreen.engines.training import _category_string as category_string

log = logging.getLogger("evergreen.apps.serving.fastpath")


class Scorer(Protocol):
    def predict(self, df: pd.DataFrame) -> Predictions: ...


@dataclass(frozen=True)
class FastScorer:
    """Scores a frame with the model's booster, bypassing pandas conversions."""

    model: TrainedModel
    codes: dict[str, dict[str, int]]
    predict_matrix: Callable[[np.ndarray], np.ndarray]
    # Features and category lists: two scorers with the same layout read the same matrix.
    layout: tuple[Any, ...] = ()

    @classmethod
    def of(cls, model: TrainedModel) -> FastScorer:
        codes = {f: {c: i for i, c in enumerate(cats)} for f, cats in model.categories.items()}
        layout = tuple((f, tuple(model.categories.get(f, ()))) for f in model.features)
        return cls(
            model=model, codes=codes, predict_matrix=matrix_predictor(model.booster), layout=layout
        )

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
                matrix[:, j] = _codes(df[name].tolist(), lookup)
        return self._predict_matrix(matrix)

    def predict_columns(self, rows: ColumnBatch) -> Predictions:
        """Predictions for validated rows (`schema.validate_columns`): numeric features are
        float64 arrays already, categorical ones hold str / bool / int / None values."""
        return self.predict_features(self.matrix(rows))

    def matrix(self, rows: ColumnBatch) -> np.ndarray:
        """The model's input matrix of validated rows (features in order, category codes)."""
        missing = [f for f in self.model.features if f not in rows]
        if missing:
            raise KeyError(f"input rows lack columns {missing}; they have {list(rows.columns)}")
        matrix = np.empty((rows.n_rows, len(self.model.features)), dtype=np.float64)
        for j, name in enumerate(self.model.features):
            lookup = self.codes.get(name)
            values = rows[name]
            if lookup is None:
                matrix[:, j] = values if values.dtype == np.float64 else _as_float(values)
            else:
                matrix[:, j] = _codes(values.tolist(), lookup)
        return matrix

    def predict_features(self, matrix: np.ndarray) -> Predictions:
        """Predictions for rows of `matrix(...)` (a model of the same `layout`)."""
        return self._predict_matrix(matrix)

    def _predict_matrix(self, matrix: np.ndarray) -> Predictions:
        # The model's own rule from raw output to classes/probabilities (TrainedModel.outputs).
        return self.model.outputs(self.predict_matrix(matrix))


def matrix_predictor(booster: Any) -> Callable[[np.ndarray], np.ndarray]:
    """`booster.inplace_predict(matrix, missing=nan)` for float64 matrices, made cheap for
    the small matrices of scoring requests (same trees, same output):

    - one thread: a request of a few rows is scored in microseconds, and waking OpenMP
      threads for it costs more than that (requests run concurrently anyway). Threads split
      rows, never trees, so the values are the same. The booster is copied, the model's
      own is left as it is.
    - the same C call as `inplace_predict` (XGBoosterPredictFromDense) without the Python
      wrapper around it, which spends ~0.2 ms per call on type dispatch, JSON and building
      a class for the output. It relies on xgboost internals (`xgboost.core._LIB`), so it is
      only used when it answers exactly what `inplace_predict` answers on probe matrices;
      otherwise the public call is used.
    - one proxy DMatrix per thread, reused: without one, every call builds a proxy whose
      context re-reads the cgroup CPU quota files and parses the device string with a regex
      (~25 us of the ~60 us a one-row prediction costs here).
    """
    single = booster.copy()
    single.set_param({"nthread": 1})

    def public(matrix: np.ndarray) -> np.ndarray:
        return single.inplace_predict(matrix, missing=np.nan)

    try:
        direct = _direct_predictor(single)
        probe = np.random.default_rng(0).normal(size=(7, single.num_features()))
        probe[0, :] = np.nan
        # Several shapes in turn: the reused proxy must never answer for an earlier matrix.
        if all(
            np.array_equal(direct(m), public(m)) for m in (probe, probe[:1], probe[3:], probe)
        ):
            return direct
        log.warning("direct XGBoost prediction disagrees with inplace_predict; using the latter")
    except Exception as exc:  # another xgboost version: fall back to the public call
        log.warning("direct XGBoost prediction unavailable (%s); using inplace_predict", exc)
    return public


def _direct_predictor(booster: Any) -> Callable[[np.ndarray], np.ndarray]:
    import ctypes
    import threading

    from xgboost.core import _LIB, _check_call, _ProxyDMatrix, c_bst_ulong, make_jcargs

    args = make_jcargs(
        type=0, training=False, iteration_begin=0, iteration_end=0,
        missing=math.nan, strict_shape=False, cache_id=0,
    )  # fmt: skip
    call = _LIB.XGBoosterPredictFromDense
    # A proxy only points at the matrix of the call in flight: one per thread (requests are
    # scored on the event loop and, when large, in the thread pool, concurrently).
    local = threading.local()

    def proxy() -> Any:
        found = getattr(local, "proxy", None)
        if found is None:
            found = local.proxy = _ProxyDMatrix()
        return found

    def predict(matrix: np.ndarray) -> np.ndarray:
        # `booster` (not just its handle) stays referenced here: freeing it frees the handle.
        handle = booster.handle
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        rows, cols = data.shape
        # The array interface xgboost's own `array_interface(data)` writes for this matrix.
        interface = (
            f'{{"data": [{data.ctypes.data}, true], "shape": [{rows}, {cols}], '
            f'"strides": null, "typestr": "<f8", "version": 3}}'
        ).encode()
        shape = ctypes.POINTER(c_bst_ulong)()
        dims = c_bst_ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        _check_call(
            call(handle, interface, args, proxy().handle, ctypes.byref(shape),
                 ctypes.byref(dims), ctypes.byref(preds))
        )  # fmt: skip
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        size = math.prod(out_shape) if out_shape else 0  # not np.prod: ~10 us on a tuple
        # The buffer belongs to the booster (reused by the next call): copy it out.
        raw = ctypes.string_at(preds, 4 * size) if size else b""
        return np.frombuffer(raw, dtype=np.float32).reshape(out_shape).copy()

    return predict


def _as_float(values: np.ndarray) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def _codes(values: list[Any], lookup: dict[str, int]) -> list[float]:
    # Strings are looked up as they are (the common case); other values go through the
    # training-time category-string rule.
    nan = math.nan
    return [
        lookup.get(v, nan) if type(v) is str else _code(v, lookup)  # type: ignore[misc]
        for v in values
    ]


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
        expected = model.predict(probe)
        same = _same(expected, fast.predict(probe)) and _same(
            expected, fast.predict_columns(_probe_rows(probe, model))
        )
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


def _probe_rows(probe: pd.DataFrame, model: TrainedModel) -> ColumnBatch:
    """The probe frame as validated request columns (what the service passes)."""
    columns: dict[str, np.ndarray] = {}
    for name in model.features:
        if name in model.categories:
            values = np.empty(len(probe), dtype=object)
            values[:] = probe[name].tolist()
            columns[name] = values
        else:
            columns[name] = probe[name].to_numpy(dtype=np.float64, na_value=np.nan)
    dtypes = {n: "object" if n in model.categories else "float64" for n in columns}
    return ColumnBatch(columns, dtypes, len(probe))


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
