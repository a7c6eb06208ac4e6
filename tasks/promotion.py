"""Promotion tasks: load registry models, gather evidence, apply decisions to the registry."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from evergreen.adapters import io, registry, tracking
from evergreen.config import ModelConfig
from evergreen.decisions import canary, gate
from evergreen.loop import sources
from tasks.registry import actor, current_flow_run_id, registry_lock


@task(name="check-registered-model", cache_policy=NO_CACHE)
def check_registered_model(config: ModelConfig) -> None:
    """Fails (ConfigError naming mlflow.model_name) when the registry has no such model."""
    tracking.check_registered_model(config.mlflow)


@task(name="load-registered-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def load_alias(config: ModelConfig, alias: str) -> registry.LoadedModel | None:
    tracking.connect(config.mlflow)
    return registry.load_alias(config.mlflow.model_name, alias)


@task(name="resolve-alias", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def resolve_alias(config: ModelConfig, alias: str) -> registry.VersionInfo | None:
    tracking.connect(config.mlflow)
    return registry.version_by_alias(config.mlflow.model_name, alias)


@task(name="canary-started-at", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def canary_started_at(config: ModelConfig, version: str) -> str | None:
    """When `canary` last moved to `version` (from the alias history)."""
    tracking.connect(config.mlflow)
    for move in reversed(registry.alias_history(config.mlflow.model_name)):
        if move.alias == registry.CANARY and move.to_version == version:
            return move.time
    return None


@task(name="load-fresh-labelled-data", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def load_fresh_labelled(config: ModelConfig, after: str | None) -> pd.DataFrame:
    return sources.read_fresh_labelled(config, pd.Timestamp(after) if after else None)


@task(name="measure-model", cache_policy=NO_CACHE)
def measure_model(model: registry.LoadedModel, frame: pd.DataFrame, config: ModelConfig) -> gate.ModelEvidence:
    return gate.measure_model(model.model, frame, config, model.version.version)


@task(name="decide-promotion", cache_policy=NO_CACHE)
def decide_promotion(
    challenger: gate.ModelEvidence, champion: gate.ModelEvidence | None, frame: pd.DataFrame, config: ModelConfig
) -> gate.GateDecision:
    y = frame[config.columns.target].to_numpy()
    return gate.decide_promotion(challenger, champion, y, config.gate, config.problem_type, config.metric)


@task(name="apply-gate-decision", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def apply_gate_decision(config: ModelConfig, version: str, decision: gate.GateDecision) -> bool:
    """Pass: challenger -> canary. Fail: version rejected, challenger alias removed.

    When `challenger` no longer points at `version`, nothing is written: returns True if the
    registry already holds this decision (a retry after the writes went through, or a
    concurrent run that decided the same), False if it holds another one or a newer
    candidate replaced the version while it was gated."""
    tracking.connect(config.mlflow)
    name, results = config.mlflow.model_name, decision.to_dict()
    with registry_lock(config):
        current = registry.version_by_alias(name, registry.CHALLENGER)
        if current is None or current.version != version:
            if decision.passed:
                canary_now = registry.version_by_alias(name, registry.CANARY)
                return canary_now is not None and canary_now.version == version
            return registry.get_version(name, version).status == "rejected"
        if decision.passed:
            registry.start_canary(name, version, results, actor(), current_flow_run_id())
        else:
            registry.reject_challenger(name, version, results, decision.reasons, actor(), current_flow_run_id())
    return True


@task(name="drop-challenger-alias", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def drop_challenger(config: ModelConfig, reason: str) -> None:
    tracking.connect(config.mlflow)
    with registry_lock(config):
        registry.move_alias(config.mlflow.model_name, registry.CHALLENGER, None, reason, actor(), current_flow_run_id())


@dataclass(frozen=True)
class ArmsEvidence:
    canary: canary.ArmEvidence
    champion: canary.ArmEvidence
    # How long the canary has run: hours between the first and the last row it served, by
    # the rows' timestamps (request time unless the client sent one), so a replay measures
    # its own clock, like the retrain cooldown.
    canary_hours: float = 0.0


@dataclass(frozen=True)
class RollbackOutcome:
    rolled_back_from: str | None  # None: nothing changed (already rolled back)
    champion: str


@task(name="collect-canary-evidence", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def collect_evidence(
    config: ModelConfig, canary_version: str, champion_version: str, since: str | None
) -> ArmsEvidence:
    """What each arm actually served since the canary started, with the labels that arrived."""
    from evergreen.adapters.predlog import ALIAS_COLUMN, read_prediction_log

    log = read_prediction_log(config.data.path("predictions_log"))
    if len(log) and since and "served_at" in log.columns:
        served = pd.to_datetime(log["served_at"], utc=True)
        log = log[served >= pd.Timestamp(since)]
    labels = io.read_labels(config.data.path("labels"))
    if log.empty:  # nothing served since the canary started
        return ArmsEvidence(
            canary.ArmEvidence(registry.CANARY, canary_version, 0, 0, None),
            canary.ArmEvidence(registry.CHAMPION, champion_version, 0, 0, None),
        )
    by_canary = (log[ALIAS_COLUMN].astype(str) == registry.CANARY) & (log[config.columns.model_version].astype(str) == str(canary_version))
    stamps = pd.to_datetime(log.loc[by_canary, config.columns.timestamp], utc=True)
    return ArmsEvidence(
        canary.collect_arm_evidence(log, labels, config, canary_version, registry.CANARY),
        canary.collect_arm_evidence(log, labels, config, champion_version, registry.CHAMPION),
        canary_hours=float((stamps.max() - stamps.min()) / pd.Timedelta(hours=1)) if stamps.notna().any() else 0.0,
    )


@task(name="decide-canary", cache_policy=NO_CACHE)
def decide_canary(
    config: ModelConfig, canary_arm: canary.ArmEvidence, champion_arm: canary.ArmEvidence, canary_hours: float
) -> canary.CanaryDecision:
    """Before the canary has run `canary.window_hours`, only a conclusive comparison decides."""
    elapsed = canary_hours >= config.canary.window_hours
    return canary.decide_canary(canary_arm, champion_arm, config.canary, config.problem_type, config.metric, window_elapsed=elapsed)


@task(name="apply-canary-decision", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def apply_canary_decision(config: ModelConfig, version: str, decision: canary.CanaryDecision) -> str | None:
    """Promote (returns the previous champion) or reject the canary."""
    tracking.connect(config.mlflow)
    name, reason = config.mlflow.model_name, "; ".join(decision.reasons)
    with registry_lock(config):
        current = registry.version_by_alias(name, registry.CANARY)
        if current is None or current.version != version:
            raise RuntimeError(f"canary moved while it was reviewed (expected v{version}, now {current and current.version}); rerun the review")
        if decision.outcome == "promoted":
            return registry.promote_canary(name, version, f"canary review: {reason}", actor(), current_flow_run_id())
        registry.reject_canary(name, version, f"canary review: {reason}", actor(), current_flow_run_id())
        return None


@task(name="roll-back-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def roll_back(config: ModelConfig, to_version: str | None, from_version: str | None, reason: str) -> RollbackOutcome:
    """Champion back to `to_version` (default: the previous champion). Idempotent: when the
    champion is no longer `from_version` (the run already happened), nothing changes."""
    tracking.connect(config.mlflow)
    name = config.mlflow.model_name
    with registry_lock(config):
        current = registry.version_by_alias(name, registry.CHAMPION)
        if current is None:
            raise RuntimeError(f"model {name} has no champion to roll back")
        if from_version is not None and current.version != from_version:
            return RollbackOutcome(None, current.version)
        target = to_version or registry.previous_champion(name)
        if target is None:
            raise RuntimeError(f"model {name}: champion v{current.version} has no previous champion; pass a version to roll back to")
        registry.get_version(name, target)  # raises with the name when the version does not exist
        rolled_from = registry.roll_back_champion(name, target, reason, actor(), current_flow_run_id())
        return RollbackOutcome(rolled_from, target)


@task(name="check-rollback", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def check_rollback(config: ModelConfig) -> gate.RollbackCheck | None:
    """Champion and previous champion measured on the same freshest labelled rows; None
    when there is no previous champion or too few rows to judge."""
    tracking.connect(config.mlflow)
    name = config.mlflow.model_name
    previous = registry.previous_champion(name)
    current = registry.load_alias(name, registry.CHAMPION)
    if previous is None or current is None:
        return None
    fresh = sources.read_fresh_labelled(config, None)
    if len(fresh) < config.gate.min_rows:
        return None
    old = registry.load_version(name, previous)
    cur_ev = gate.measure_model(current.model, fresh, config, current.version.version)
    old_ev = gate.measure_model(old.model, fresh, config, previous)
    return gate.decide_rollback(cur_ev, old_ev, config.metric, config.canary.margin, len(fresh))
