"""Training rows for the tests that train without a snapshot store: an in-memory
`training.RowReader`, and an alert episode's retrain on a frame (no MLflow import here)."""

from __future__ import annotations

import pandas as pd

from evergreen.config import ModelConfig


def frame_reader(frame: pd.DataFrame, size: int = 500):  # noqa: ANN201 - training.RowReader
    """A RowReader over an in-memory frame, `size` rows a chunk, skipping unneeded chunks."""

    def read(columns, needed):  # noqa: ANN001, ANN202
        for start in range(0, len(frame), size):
            if needed is None or needed[start : start + size].any():
                yield start, frame[columns].iloc[start : start + size]

    return read


def episode_retrain(frame: pd.DataFrame, change: pd.Timestamp | None, cfg: ModelConfig):  # noqa: ANN201
    """The retrain's hold-out and training on `frame` for an episode whose change is at
    `change` (None: outside an episode), as the retrain step does them on a snapshot:
    returns (RowHoldOut, TrainedModel)."""
    from evergreen.loop import retraining

    holdout = retraining.hold_out_rows(frame["timestamp"], lambda p: frame.iloc[p].reset_index(drop=True), cfg, change)
    return holdout, retraining.train_rows(frame_reader(frame), holdout, cfg)
