"""Scoring-service tests: a temporary MLflow registry with two small models.

No Prefect here: the service does not use it.
"""

from __future__ import annotations

import pytest
from serving_support import FEATURES, Registry, make_config, make_frame

from evergreen.engines.training import TrainedModel


@pytest.fixture(scope="session")
def registry_store(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two versions of `serving-test` trained with train_model and registered in MLflow."""
    import mlflow

    from evergreen.adapters import registry, tracking
    from evergreen.engines.training import train_model

    tmp = tmp_path_factory.mktemp("serving")
    config = make_config(tmp)
    tracking.connect(config.mlflow)
    experiment = tracking.ensure_experiment(config.mlflow, config.mlflow.training_experiment)
    models: dict[str, TrainedModel] = {}
    for seed, flip in ((0, False), (1, True)):
        frame = make_frame(3000, seed, flip)
        model = train_model(frame, config)
        with mlflow.start_run(experiment_id=experiment) as run:
            logged = registry.log_model(model, frame[FEATURES].head(5))
            info = registry.create_version(
                config.mlflow.model_name, logged.model_uri, run.info.run_id, {}
            )
        models[info.version] = model
    return Registry(config=config, models=models, root=tmp)
