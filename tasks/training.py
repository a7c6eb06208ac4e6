"""Retrain tasks: window, snapshot, train, evaluate, log to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from evergreen.adapters import tracking
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


LoggedCandidate = tracking.LoggedCandidate


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
    return tracking.log_training_run(config, model, evaluation, snap, win, holdout, trigger.kind, lineage_tags)
