"""Helpers shared by the flow and end-to-end tests: candidates registered outside the
retrain flow and the prediction log the scoring service would have written."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from evergreen.adapters import io, registry, tracking
from evergreen.adapters.predlog import PredictionLogWriter
from evergreen.apps.serving.scoring import routing_salt
from evergreen.config import ModelConfig
from evergreen.decisions.routing import route_many
from evergreen.engines.training import train_model


def register_challenger(cfg: ModelConfig, frame: pd.DataFrame, tags: dict[str, str]) -> str:
    """Register a model trained on `frame` as challenger, bypassing the retrain flow."""
    tracking.connect(cfg.mlflow)
    model = train_model(frame, cfg)
    exp = tracking.ensure_experiment(cfg.mlflow, cfg.mlflow.training_experiment)
    with mlflow.start_run(experiment_id=exp) as run:
        logged = registry.log_model(model, frame[cfg.columns.features].head(3))
    v = registry.create_version(cfg.mlflow.model_name, logged.model_uri, run.info.run_id, {"evergreen.status": "candidate", **tags})
    registry.move_alias(cfg.mlflow.model_name, registry.CHALLENGER, v.version, "test", "test")
    return v.version


def labelled(cfg: ModelConfig) -> pd.DataFrame:
    from evergreen.loop.sources import read_labelled_batches

    return pd.concat([b.frame for b in read_labelled_batches(cfg)], ignore_index=True)


def serve_history(cfg: ModelConfig, days: list[str]) -> None:
    """Write the prediction log the scoring service would have written for these days."""
    name = cfg.mlflow.model_name
    champion = registry.load_alias(name, registry.CHAMPION)
    canary = registry.load_alias(name, registry.CANARY)
    writer = PredictionLogWriter(cfg.data.path("predictions_log"), timestamp_column=cfg.columns.timestamp)
    for day in days:
        batch = io.read_table(f"{cfg.data.path('batches')}/{day}.parquet")
        aliases = np.array(route_many(batch[cfg.columns.id], routing_salt(cfg), cfg.canary.traffic_share, True))
        out = batch.copy()
        for alias, loaded in (("champion", champion), ("canary", canary)):
            rows = aliases == alias
            preds = loaded.model.predict(batch[rows])
            out.loc[rows, cfg.columns.prediction] = preds.prediction
            out.loc[rows, cfg.columns.probability] = preds.probability
            out.loc[rows, cfg.columns.model_version] = loaded.version.version
        out["alias"] = aliases
        out["served_at"] = pd.Timestamp.now(tz="UTC")
        out["request_id"] = "test"
        writer.append(out)
    writer.close()


def scrambled(cfg: ModelConfig, seed: int) -> pd.DataFrame:
    """The labelled batches with their labels permuted: a model trained on it is worse."""
    frame = labelled(cfg)
    frame[cfg.columns.target] = np.random.default_rng(seed).permutation(frame[cfg.columns.target].to_numpy())
    return frame


def read_model_events(model: str, names: list[str], since, expect: int | None = None, timeout: float = 30.0):
    """Events of a model read back from the Prefect API (they are written asynchronously:
    poll until `expect` of them are there, or until the timeout)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    flt = EventFilter(
        occurred=EventOccurredFilter(since=since),
        event=EventNameFilter(name=names),
        resource=EventResourceFilter(id=[f"evergreen.model.{model}"]),
    )
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=flt, limit=50).events
        if expect is None or len(events) >= expect or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def write_toy_drift_stream(config: ModelConfig, root: str, chunks: int, rows: int, drift_at: int) -> None:
    """The unit tests' toy data as a daily stream of `chunks` x `rows` under `root`: the top
    feature moves by 2 standard deviations from chunk `drift_at` on while the outcome keeps
    the old rule, so the first model's metric falls and a retrained one can recover."""
    from evergreen.simulation.stream import write_stream_from_frames
    from tests.unit.conftest import _make_frame

    reference, analysis = _make_frame(3000, seed=1), _make_frame(chunks * rows, seed=2)
    analysis["id"] += 1_000_000  # production ids never repeat the reference's
    write_stream_from_frames(
        config,
        reference.drop(columns="p_true"),
        analysis.drop(columns="p_true"),
        root,
        drift="covariate",
        drift_start=drift_at,
        drift_params={"features": ["x1"], "method": "additive", "strength": 2.0},
    )
