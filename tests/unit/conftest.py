"""Small generated tabular data shared by the core unit tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from evergreen.config import ModelConfig, parse_config


def _make_frame(n: int = 2000, seed: int = 0, regression: bool = False) -> pd.DataFrame:
    """Rows with a known labelling rule; `p_true` is the true positive probability."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue", "amber"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    flag = rng.random(n) < 0.6
    logit = 2.0 * x1 - 1.5 * x2 + np.where(color == "red", 1.0, -0.5) + np.where(flag, 0.5, -0.5)
    p_true = 1 / (1 + np.exp(-logit))
    target = (
        logit + rng.normal(scale=0.5, size=n)
        if regression
        else (rng.random(n) < p_true).astype(int)
    )
    return pd.DataFrame(
        {
            "id": np.arange(n) + 1000 * seed,
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n) * 60, unit="s"),
            "x1": x1,
            "x2": x2,
            "color": color,
            "flag": flag,
            "target": target,
            "p_true": p_true,
        }
    )


@pytest.fixture
def toy_frame() -> Callable[..., pd.DataFrame]:
    return _make_frame


def _config(problem_type: str = "binary_classification", **training: object) -> ModelConfig:
    return parse_config(
        {
            "name": "unit",
            "problem_type": problem_type,
            "metric": "roc_auc" if problem_type == "binary_classification" else "rmse",
            "columns": {
                "target": "target",
                "features": ["x1", "x2", "color", "flag"],
                "categorical": ["color", "flag"],
            },
            "data": {"rows_per_batch": 100, "label_delay_days": 2, "start_date": "2024-03-01"},
            "training": {
                "num_boost_round": 40,
                "early_stopping_rounds": 5,
                "nthread": 1,
                **training,
            },
            "mlflow": {"model_name": "unit"},
        }
    )


@pytest.fixture
def toy_config() -> Callable[..., ModelConfig]:
    return _config
