"""The scoring service in a replay: a batch as a model served it (its predictions replace
whatever the stream carried), with the serving version as the service logs it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from evergreen.config import ColumnRoles


def serve_batch(model: Any, batch: pd.DataFrame, version: str, columns: ColumnRoles) -> tuple[pd.DataFrame, Any]:
    """`batch` scored by `model` (a TrainedModel); returns the served frame and the
    predictions."""
    preds = model.predict(batch)
    served = batch.copy()
    served[columns.prediction] = preds.prediction
    if columns.probability is not None and preds.probability is not None:
        served[columns.probability] = preds.probability
    served[columns.model_version] = version
    return served, preds
