"""`tracking.pandas_dataset`: the MLflow dataset a retrain logs carries the same schema as
MLflow's own inference over every row, and the profile and digest of the whole frame."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from evergreen.adapters import tracking


def _window(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "id": [f"id{i}" for i in range(rows)],
            "ts": pd.date_range("2024-01-01", periods=rows, freq="min"),
            "amount": rng.normal(size=rows),
            "count": rng.integers(0, 9, rows),
            "region": pd.Categorical(rng.choice(["n", "s", "e"], rows)),
            "channel": rng.choice(["web", "branch"], rows),
            "flag": rng.integers(0, 2, rows).astype(bool),
            "target": rng.integers(0, 2, rows),
        }
    )


def test_sampled_schema_is_mlflows_full_schema_and_the_profile_is_of_every_row() -> None:
    from mlflow.types.utils import _infer_schema

    frame = _window(3 * tracking.SCHEMA_SAMPLE_ROWS + 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hint about integer columns
        dataset = tracking.pandas_dataset(frame, "file:///tmp/window", "target", "w", "d" * 32)
        assert dataset.schema == _infer_schema(frame)
    assert dataset.profile == {"num_rows": len(frame), "num_elements": int(frame.size)}
    assert dataset.digest == "d" * 32
    assert "channel" in dataset.to_dict()["schema"]
