"""A trained model put to use on labelled rows: its evaluation, its evidence for the gate
(metrics, latency, size) and the NannyML reference the next monitor reads (the model is any `engines.training.TrainedModel`; XGBoost is not
imported here)."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evergreen.config import ModelConfig
from evergreen.decisions.evaluation import EvaluationResult, evaluate_predictions, target_values
from evergreen.decisions.gate import BYTES_PER_MB, LATENCY_ROWS, ModelEvidence

if TYPE_CHECKING:
    from evergreen.engines.training import TrainedModel


def evaluate_model(model: TrainedModel, frame: pd.DataFrame, config: ModelConfig) -> EvaluationResult:
    """The configured metric, calibration and per-slice metrics of `model` on labelled rows."""
    cols = config.columns
    preds = model.predict(frame)
    return evaluate_predictions(
        target_values(frame[cols.target], config),
        preds.scores,
        config.problem_type,
        config.metric,
        slices={c: frame[c].to_numpy() for c in cols.slices},
        threshold=model.threshold,
    )


def monitor_reference(model: TrainedModel, frame: pd.DataFrame, config: ModelConfig, version: str) -> pd.DataFrame:
    """NannyML's reference for the next monitor: the held-out rows with this model's
    predictions, probabilities and labels (multiclass: the predicted class and one
    probability column per class, named as `columns.probability` says)."""
    from evergreen.engines.training import output_columns

    cols = config.columns
    out = frame.copy()
    for name, values in output_columns(model.predict(frame), cols).items():
        out[name] = values
    out[cols.model_version] = version
    # Batches carry naive UTC timestamps; NannyML cannot plot a mix of aware and naive.
    stamps = pd.to_datetime(out[cols.timestamp])
    if stamps.dt.tz is not None:
        out[cols.timestamp] = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def measure_model(
    model: TrainedModel,
    frame: pd.DataFrame,
    config: ModelConfig,
    version: str,
    repeats: int = 3,
) -> ModelEvidence:
    """Evaluate `model` on the labelled `frame` and time its predictions.

    Latency is the median of `repeats` timed `predict` calls on exactly 1,000 rows (the
    frame's rows, cycled or cut to 1,000; after one untimed warm-up call), so the figure
    does not depend on the size of the evaluation frame and includes the per-call overhead
    a served request pays. Size is the length of the serialized booster in MB (10^6 bytes).
    """
    if len(frame) == 0:
        raise ValueError(f"cannot measure model version {version} on an empty evaluation frame")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    scores = model.predict(frame).scores
    timing_rows = frame.iloc[np.resize(np.arange(len(frame)), LATENCY_ROWS)]
    model.predict(timing_rows)  # warm-up: first-call allocations are not serving latency
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(timing_rows)
        seconds.append(time.perf_counter() - start)
    return ModelEvidence(
        version=str(version),
        evaluation=evaluate_model(model, frame, config),
        scores=np.asarray(scores, dtype=np.float64),
        latency_ms_per_1000=statistics.median(seconds) * 1000.0 * 1000.0 / LATENCY_ROWS,
        size_mb=len(model.to_bytes()) / BYTES_PER_MB,
    )
