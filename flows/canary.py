"""The `canary-review` flow: canary vs champion on the traffic each served; promote, roll
back, or wait for more evidence."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.states import Completed, State

from blocks.model_config import resolve_config
from evergreen.adapters import registry
from evergreen.config import ModelConfig
from evergreen.reports import PromotionResult
from evergreen.telemetry import disable_telemetry
from tasks import promotion
from tasks.events import emit
from tasks.registry import settle_registry

MODEL_PROMOTED = "evergreen.model.promoted"
MODEL_ROLLED_BACK = "evergreen.model.rolled_back"


@flow(name="canary-review", log_prints=True)
def canary_review(config: str | ModelConfig = "car-loan") -> State:
    disable_telemetry()
    cfg = resolve_config(config)
    name = cfg.mlflow.model_name
    settle_registry(cfg)  # an interrupted earlier run is finished first
    canary_v = promotion.resolve_alias(cfg, registry.CANARY)
    if canary_v is None:
        return Completed(message="no canary to review", data=PromotionResult(model_name=name, decision="skipped", reasons=["no canary"]))
    champion = promotion.resolve_alias(cfg, registry.CHAMPION)
    started = promotion.canary_started_at(cfg, canary_v.version)
    arms = promotion.collect_evidence(cfg, canary_v.version, champion.version if champion else "", started)
    decision = promotion.decide_canary(cfg, arms.canary, arms.champion, arms.canary_hours)
    base = {"canary": canary_v.version, "champion": champion.version if champion else None}
    if decision.outcome == "pending":
        msg = "not enough evidence yet: " + "; ".join(decision.reasons)
        return Completed(name="Pending", message=msg, data=PromotionResult(model_name=name, decision="pending", reasons=decision.reasons, **base, checks=decision.to_dict()))
    previous = promotion.apply_canary_decision(cfg, canary_v.version, decision)
    evidence = decision.to_dict()
    if decision.outcome == "promoted":
        emit(cfg, MODEL_PROMOTED, {"version": canary_v.version, "previous_champion": previous, "evidence": evidence})
        return Completed(
            message=f"v{canary_v.version} promoted to champion (was v{previous}): {'; '.join(decision.reasons)}",
            data=PromotionResult(model_name=name, decision="promoted", reasons=decision.reasons, champion=canary_v.version, canary=None, checks=evidence),
        )
    emit(cfg, MODEL_ROLLED_BACK, {"from_version": canary_v.version, "to_version": base["champion"], "reason": "; ".join(decision.reasons), "evidence": evidence})
    return Completed(
        message=f"canary v{canary_v.version} rolled back; champion stays v{base['champion']}: {'; '.join(decision.reasons)}",
        data=PromotionResult(model_name=name, decision="rolled_back", reasons=decision.reasons, champion=base["champion"], canary=None, checks=evidence),
    )

