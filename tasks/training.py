"""Retrain tasks: window, snapshot, train, evaluate, log to MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from evergreen.adapters import registry, tracking
from evergreen.config import ModelConfig
from evergreen.decisions import policy, window
from evergreen.engines import snapshot
from evergreen.engines.evaluation import EvaluationResult
from evergreen.lineage import Trigger
from evergreen.loop import retraining, sources

if TYPE_CHECKING:  # XGBoost is imported by the tasks that train (a skipped retrain never does)
    from evergreen.engines import training


@task(name="decide-retrain-start", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def decide_retrain_start(config: ModelConfig, trigger: str) -> tuple[policy.StartCheck, pd.Timestamp | None]:
    """The retrain policy's start check before any work (every blocker: candidate under
    review, cooldown, new labelled rows, budget); returns the decision and the data clock."""
    return sources.check_retrain_start(config, trigger)


@task(name="assemble-training-window", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def assemble_training_window(config: ModelConfig) -> window.TrainingWindow:
    """Reference + labelled production batches by the retrain policy; rejected batches left out."""
    return sources.assemble_training_window(config)


@task(name="snapshot-training-data", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def snapshot_training_data(config: ModelConfig, win: window.TrainingWindow) -> snapshot.StagedSnapshot:
    """Content-addressed copy of the window, staged: invisible in the store until
    `publish-snapshot` (stored once per digest)."""
    return snapshot.stage_snapshot(
        win.frame, config.data.path("dataset_store"), sources=win.sources, time_column=config.columns.timestamp
    )


@task(name="publish-snapshot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_snapshot(staged: snapshot.StagedSnapshot) -> snapshot.SnapshotInfo:
    return snapshot.commit_snapshot(staged)


@task(name="discard-snapshot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def discard_snapshot(staged: snapshot.StagedSnapshot) -> None:
    """The window was rejected: its staged copy leaves the store."""
    snapshot.discard_snapshot(staged)


@task(name="hold-out-recent", cache_policy=NO_CACHE)
def hold_out_recent(frame: pd.DataFrame, config: ModelConfig) -> retraining.HoldOut:
    return retraining.hold_out_recent(frame, config)


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(frame: pd.DataFrame, config: ModelConfig) -> training.TrainedModel:
    from evergreen.engines import training

    return training.train_model(frame, config)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(model: training.TrainedModel, frame: pd.DataFrame, config: ModelConfig) -> EvaluationResult:
    return retraining.evaluate_model(model, frame, config)


@dataclass(frozen=True)
class LoggedCandidate:
    run_id: str
    experiment_id: str
    model_uri: str
    tracking_uri: str


@task(name="log-training-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_training_run(
    config: ModelConfig,
    model: training.TrainedModel,
    evaluation: EvaluationResult,
    snap: snapshot.SnapshotInfo,
    win: window.TrainingWindow,
    holdout: retraining.HoldOut,
    trigger: Trigger,
    lineage_tags: dict[str, str],
) -> LoggedCandidate:
    """Params, metrics, the model (XGBoost format), the dataset, the next NannyML reference
    and plots, in one run of the training experiment."""
    import mlflow

    from evergreen.engines import plots

    uri = tracking.connect(config.mlflow)
    exp_id = tracking.ensure_experiment(config.mlflow, config.mlflow.training_experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"retrain-{snap.digest[:12]}", tags=lineage_tags) as run:
        mlflow.log_params(
            {
                **{f"xgb.{k}": v for k, v in model.params.items()},
                "best_iteration": model.best_iteration,
                "seed": config.training.seed,
                "window.policy": config.retrain.window,
                "window.rows": win.rows,
                "window.reference_rows": win.reference_rows,
                "train_rows": len(holdout.train),
                "evaluation_rows": len(holdout.evaluation),
                "trigger": trigger.kind,
            }
        )
        tracking.log_metrics(evaluation.flat_metrics())
        dataset = tracking.pandas_dataset(
            win.frame, source=snap.uri, targets=config.columns.target, name=f"{config.name}-training", digest=snap.digest[:32]
        )
        mlflow.log_input(
            dataset,
            context="training",
            tags={
                "evergreen.sha256": snap.digest,
                "rows": str(snap.rows),
                "time_min": str(snap.time_min),
                "time_max": str(snap.time_max),
                "sources": ",".join(snap.sources)[:4000],
            },
        )
        example = holdout.evaluation[list(config.columns.features)].head(5)
        logged = registry.log_model(model, example)
        reference = retraining.monitor_reference(model, holdout.evaluation, config, version="candidate")
        _log_parquet(reference, registry.REFERENCE_ARTIFACT)
        mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
        mlflow.log_figure(plots.feature_importance(model.feature_importance()), "plots/feature_importance.png")
        if evaluation.calibration is not None:
            mlflow.log_figure(plots.calibration_curve(evaluation.calibration), "plots/calibration.png")
    return LoggedCandidate(run_id=run.info.run_id, experiment_id=exp_id, model_uri=logged.model_uri, tracking_uri=uri)


def _log_parquet(frame: pd.DataFrame, artifact_file: str) -> None:
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent))
