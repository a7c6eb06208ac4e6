"""An alert episode's model through the MLflow registry: the probe and the cross-fit probes
come back for the gate (`registry.load_version`), and the scoring service lets them go
(`load_from_registry`: it scores with the served booster alone, and the same)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evergreen.adapters import registry, tracking
from tests.rows import episode_retrain
from tests.serving.serving_support import FEATURES, make_config, make_frame


def _episode_model(cfg):
    """A retrain for an episode whose change is at row 1,400 of 2,000 (x1's effect reverses)."""
    frame = pd.concat([make_frame(1400, seed=3), make_frame(600, seed=4, flip=True)], ignore_index=True)
    frame["timestamp"] = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(len(frame)) * 30, unit="s")
    change = frame["timestamp"].iloc[1400]
    return frame, episode_retrain(frame, change, cfg)[1]


def test_the_registry_keeps_the_cross_fit_probes_and_the_service_lets_them_go(tmp_path: Path) -> None:
    import mlflow

    from evergreen.apps.serving.models import load_from_registry

    cfg = make_config(tmp_path)
    frame, model = _episode_model(cfg)
    assert model.probe is not None and model.cross_fit is not None and len(model.cross_fit.folds) == 4
    name = cfg.mlflow.model_name
    tracking.connect(cfg.mlflow)
    exp = tracking.ensure_experiment(cfg.mlflow, cfg.mlflow.training_experiment)
    with mlflow.start_run(experiment_id=exp) as run:
        logged = registry.log_model(model, frame[FEATURES].head(5))
    version = registry.create_version(name, logged.model_uri, run.info.run_id, {}).version

    gated = registry.load_version(name, version).model
    assert gated.unseen_since() == model.unseen_since()
    assert np.array_equal(gated.cross_fitted().predict(frame).probability, model.cross_fitted().predict(frame).probability)
    assert not np.array_equal(gated.cross_fitted().predict(frame).probability, gated.predict(frame).probability)

    served = load_from_registry(name, version)
    assert served.model.probe is None and served.model.cross_fit is None
    assert served.model.to_bytes() == model.to_bytes()
    assert np.array_equal(served.predict(frame).probability, model.predict(frame).probability)
