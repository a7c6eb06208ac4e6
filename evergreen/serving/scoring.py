"""Score one request on one snapshot: validate, route each row, predict, build the log rows.

Pure apart from the models' own computation: no I/O, no HTTP, no clock (the request time
and id are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evergreen.config import ModelConfig
from evergreen.registry import CANARY, CHAMPION
from evergreen.serving.models import ServingSnapshot
from evergreen.serving.predlog import ALIAS_COLUMN, REQUEST_ID_COLUMN, SERVED_AT_COLUMN
from evergreen.serving.router import route_many
from evergreen.serving.schema import RequestTable, validate_table


class NotReadyError(RuntimeError):
    """No champion is loaded yet; the service answers 503."""


@dataclass(frozen=True)
class ScoredRequest:
    """The answer to a request and the rows it adds to the prediction log."""

    predictions: list[float]
    versions: list[str]
    aliases: list[str]
    log_rows: pd.DataFrame

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
    regression answers and logs the value.
    """
    if snapshot.champion is None:
        raise NotReadyError(f"no champion of {snapshot.model_name} is loaded yet; see GET /ready")
    cols = config.columns
    frame = validate_table(table, snapshot.specs, cols.id, cols.timestamp, request_time)
    aliases = np.array(
        route_many(
            frame[cols.id].tolist(),
            routing_salt(config),
            snapshot.canary_share,
            snapshot.has_canary,
        ),
        dtype=object,
    )
    n = len(frame)
    binary = config.problem_type == "binary_classification"
    prediction = np.zeros(n, dtype=np.int64 if binary else float)
    probability = np.full(n, np.nan)
    versions = np.empty(n, dtype=object)
    for alias in (CHAMPION, CANARY):
        rows = aliases == alias
        if not rows.any():
            continue
        served = snapshot.model_for(alias)
        assert served is not None  # route_many only picks canary when one is loaded
        scored = served.predict(frame if rows.all() else frame.loc[rows])
        prediction[rows] = scored.prediction
        if scored.probability is not None:
            probability[rows] = scored.probability
        versions[rows] = served.version

    # One construction instead of column-by-column inserts: this runs on every request.
    log_columns: dict[str, Any] = {name: frame[name] for name in frame.columns}
    log_columns[cols.prediction] = prediction
    if binary and cols.probability:
        log_columns[cols.probability] = probability
    log_columns[cols.model_version] = versions.astype(str)
    log_columns[ALIAS_COLUMN] = aliases.astype(str)
    log_columns[SERVED_AT_COLUMN] = np.full(
        n, _naive_utc(request_time).to_datetime64(), dtype="datetime64[us]"
    )
    log_columns[REQUEST_ID_COLUMN] = np.full(n, request_id, dtype=object)
    log_rows = pd.DataFrame(log_columns, index=frame.index)
    answer = probability if binary else prediction
    return ScoredRequest(
        predictions=answer.astype(float).tolist(),
        versions=versions.tolist(),
        aliases=aliases.tolist(),
        log_rows=log_rows,
    )


def _naive_utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts
