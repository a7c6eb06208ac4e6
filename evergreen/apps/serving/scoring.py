"""Score one request on one snapshot: validate, route each row, predict, build the log rows.

Pure apart from the models' own computation: no I/O, no HTTP, no clock (the request time
and id are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evergreen.adapters.column_batch import ColumnBatch
from evergreen.adapters.predlog import ALIAS_COLUMN, REQUEST_ID_COLUMN, SERVED_AT_COLUMN
from evergreen.adapters.registry import CANARY, CHAMPION
from evergreen.apps.serving.models import ServingSnapshot
from evergreen.apps.serving.schema import RequestTable, validate_columns
from evergreen.config import ModelConfig
from evergreen.decisions.routing import route_many


class NotReadyError(RuntimeError):
    """No champion is loaded yet; the service answers 503."""


@dataclass(frozen=True)
class ScoredRequest:
    """The answer to a request and the rows it adds to the prediction log. `predictions`
    holds a number per row (binary: the positive-class probability; regression: the value)
    or, for a multiclass model, a record per row (the predicted class and each class's
    probability, under the config's column names)."""

    predictions: list[Any]
    versions: list[str]
    aliases: list[str]
    log: ColumnBatch

    @property
    def log_rows(self) -> pd.DataFrame:
        """The logged rows as a frame (the service appends `log` itself, columnar)."""
        return self.log.to_frame()

    def counts(self) -> dict[tuple[str, str], int]:
        """Rows per (alias, version). One snapshot serves a request, so an alias has one
        version in it: two C-level scans instead of counting pairs."""
        out = {}
        for alias in (CHAMPION, CANARY):
            k = self.aliases.count(alias)
            if k:
                out[(alias, self.versions[self.aliases.index(alias)])] = k
        return out

    def response(self) -> dict[str, Any]:
        """The JSON body: MLflow's `predictions` plus the serving version and alias per row."""
        return {"predictions": self.predictions, "versions": self.versions, "aliases": self.aliases}


def routing_salt(config: ModelConfig) -> str:
    """The routing hash salt: the registered model name, so two models split independently."""
    return config.mlflow.model_name


def score_table(
    snapshot: ServingSnapshot,
    table: RequestTable,
    config: ModelConfig,
    request_time: pd.Timestamp,
    request_id: str,
) -> ScoredRequest:
    """Validate the rows against the served models' features, route each by its id and score
    it with the model of its alias.

    Binary classification answers the positive-class probability (what `mlflow models serve`
    returns for an XGBoost Booster) and logs the 0/1 class at the model's threshold;
    regression answers and logs the value. Multiclass answers a record per row, as MLflow
    answers a pyfunc model whose output is a DataFrame (`{"y_pred": "b", "y_pred_proba_a":
    0.1, "y_pred_proba_b": 0.7, ...}`, the config's names), and logs the same columns. Works
    on numpy columns throughout (no DataFrame per request): the log rows become a frame when
    the prediction log is flushed.
    """
    if snapshot.champion is None:
        raise NotReadyError(f"no champion of {snapshot.model_name} is loaded yet; see GET /ready")
    cols = config.columns
    rows = validate_columns(table, snapshot.specs, cols.id, cols.timestamp, request_time)
    n = rows.n_rows
    alias_list = route_many(
        rows[cols.id].tolist(), routing_salt(config), snapshot.canary_share, snapshot.has_canary
    )
    binary = config.problem_type == "binary_classification"
    served_by = [(a, snapshot.model_for(a)) for a in (CHAMPION, CANARY)]
    if config.problem_type == "multiclass_classification":
        return _score_classes(rows, alias_list, served_by, config, request_time, request_id)
    if CANARY not in alias_list:  # no canary, or no row of this request drew it
        _, served = served_by[0]
        assert served is not None
        scored = served.predict_columns(rows)
        prediction = np.asarray(scored.prediction, dtype=np.int64 if binary else float)
        probability = (
            np.asarray(scored.probability, dtype=float)
            if scored.probability is not None
            else np.full(n, np.nan)
        )
        versions = [served.version] * n
    else:
        aliases = np.array(alias_list, dtype=object)
        prediction = np.zeros(n, dtype=np.int64 if binary else float)
        probability = np.full(n, np.nan)
        version_array = np.empty(n, dtype=object)
        matrices: dict[Any, Any] = {}
        for alias, served in served_by:
            mask = aliases == alias
            if not mask.any():
                continue
            assert served is not None  # route_many only picks canary when one is loaded
            scored = served.predict_subset(rows, mask, matrices)
            prediction[mask] = scored.prediction
            if scored.probability is not None:
                probability[mask] = scored.probability
            version_array[mask] = served.version
        versions = version_array.tolist()

    log_columns: dict[str, np.ndarray] = {cols.prediction: prediction}
    log_dtypes = {cols.prediction: "int64" if binary else "float64"}
    if binary and isinstance(cols.probability, str):
        log_columns[cols.probability] = probability
        log_dtypes[cols.probability] = "float64"
    answer = probability if binary else prediction
    return ScoredRequest(
        predictions=answer.astype(float).tolist(),
        versions=versions,
        aliases=alias_list,
        log=_log_rows(
            rows, log_columns, log_dtypes, versions, alias_list, config, request_time, request_id
        ),
    )


def _score_classes(
    rows: ColumnBatch,
    alias_list: list[str],
    served_by: list[tuple[str, Any]],
    config: ModelConfig,
    request_time: pd.Timestamp,
    request_id: str,
) -> ScoredRequest:
    """A multiclass request: the predicted class and one probability column per class (by
    the config's names, whatever order a model keeps its classes in), per serving alias."""
    from evergreen.engines.training import output_columns  # loaded with the models already

    cols, n = config.columns, rows.n_rows
    aliases = np.array(alias_list, dtype=object)
    parts = []
    matrices: dict[Any, Any] = {}
    for alias, served in served_by:
        mask = aliases == alias
        if not mask.any():
            continue
        assert served is not None  # route_many only picks canary when one is loaded
        scored = served.predict_subset(rows, mask, matrices)
        parts.append((mask, output_columns(scored, cols), served.version))
    names = [cols.prediction, *config.probability_columns]
    if len(parts) == 1:
        columns = parts[0][1]
        versions = [parts[0][2]] * n
    else:
        columns = {cols.prediction: np.empty(n, dtype=object)}
        columns |= {name: np.full(n, np.nan) for name in config.probability_columns}
        version_array = np.empty(n, dtype=object)
        for mask, out, version in parts:
            for name in names:
                columns[name][mask] = out[name]
            version_array[mask] = version
        versions = version_array.tolist()
    labels = columns[cols.prediction]
    if all(out[cols.prediction].dtype == np.int64 for _, out, _ in parts):
        labels, label_dtype = labels.astype(np.int64), "int64"
    else:
        labels, label_dtype = _text([str(v) for v in labels.tolist()]), "str"
    log_columns = {cols.prediction: labels}
    log_columns |= {
        name: np.asarray(columns[name], dtype=float) for name in config.probability_columns
    }
    log_dtypes = {cols.prediction: label_dtype} | dict.fromkeys(
        config.probability_columns, "float64"
    )
    values = [log_columns[name].tolist() for name in names]
    return ScoredRequest(
        predictions=[dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)],
        versions=versions,
        aliases=alias_list,
        log=_log_rows(
            rows, log_columns, log_dtypes, versions, alias_list, config, request_time, request_id
        ),
    )


def _log_rows(
    rows: ColumnBatch,
    log_columns: dict[str, np.ndarray],
    log_dtypes: dict[str, str],
    versions: list[str],
    alias_list: list[str],
    config: ModelConfig,
    request_time: pd.Timestamp,
    request_id: str,
) -> ColumnBatch:
    """The request's rows with the model's outputs and the serving columns, as logged."""
    cols, n = config.columns, rows.n_rows
    log_columns = dict(log_columns)
    log_columns[cols.model_version] = _text(versions)
    log_columns[ALIAS_COLUMN] = _text(alias_list)
    log_columns[SERVED_AT_COLUMN] = np.full(n, _naive_utc64(request_time), dtype="datetime64[us]")
    log_columns[REQUEST_ID_COLUMN] = np.full(n, request_id, dtype=object)
    log_dtypes = log_dtypes | {
        cols.model_version: "str",
        ALIAS_COLUMN: "str",
        SERVED_AT_COLUMN: "datetime64[us]",
        REQUEST_ID_COLUMN: "str",
    }
    return rows.with_columns(log_columns, log_dtypes)


def _text(values: list[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _naive_utc64(ts: pd.Timestamp) -> np.datetime64:
    """`ts` as naive UTC microseconds (`.value` counts UTC nanoseconds, naive or not;
    cheaper than tz_convert + tz_localize, ~10 us a request)."""
    return np.datetime64(ts.value // 1000, "us")
