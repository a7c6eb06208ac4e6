"""The `promote` flow: gate the challenger against the champion on the freshest labelled
data; pass -> canary, fail -> rejected."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.states import Completed, Failed, State

from blocks.model_config import resolve_config
from evergreen.config import ModelConfig
from evergreen.loop import sources
from evergreen.reports import PromotionResult
from evergreen.telemetry import disable_telemetry
from tasks import promotion
from tasks.events import emit
from tasks.registry import settle_registry

GATE_PASSED = "evergreen.gate.passed"
GATE_FAILED = "evergreen.gate.failed"
CANARY_STARTED = "evergreen.canary.started"


@flow(name="promote", log_prints=True)
def promote(config: str | ModelConfig = "car-loan", version: str | None = None) -> State:
    """Gate the `challenger` (or the registered `version` the event names) against `champion`."""
    disable_telemetry()
    cfg = resolve_config(config)
    promotion.check_registered_model(cfg)
    settle_registry(cfg)  # an interrupted earlier run is finished first
    challenger = promotion.load_alias(cfg, "challenger")
    if challenger is None or (version is not None and challenger.version.version != str(version)):
        msg = f"no challenger to gate (challenger: {challenger and challenger.version.version}, asked: {version})"
        return Completed(message=msg, data=PromotionResult(model_name=cfg.mlflow.model_name, decision="skipped", reasons=[msg]))
    champion = promotion.load_alias(cfg, "champion")
    if champion is not None and champion.version.version == challenger.version.version:
        promotion.drop_challenger(cfg, "bootstrap: challenger is already champion")
        msg = f"v{challenger.version.version} is already champion (bootstrap); nothing to gate"
        return Completed(message=msg, data=PromotionResult(model_name=cfg.mlflow.model_name, decision="skipped", reasons=[msg], champion=champion.version.version))

    fresh = promotion.load_fresh_labelled(cfg, challenger.version.tags.get("evergreen.train_end"))
    if (msg := sources.gate_evidence_shortfall(len(fresh), cfg)) is not None:
        return Failed(name="NotEnoughData", message=msg, data=PromotionResult(model_name=cfg.mlflow.model_name, decision="failed", reasons=[msg]))
    ch = promotion.measure_model(challenger, fresh, cfg)
    cp = promotion.measure_model(champion, fresh, cfg) if champion is not None else None
    decision = promotion.decide_promotion(ch, cp, fresh, cfg)
    if not promotion.apply_gate_decision(cfg, challenger.version.version, decision):
        msg = f"v{challenger.version.version} was decided otherwise by a concurrent run, or replaced; nothing applied"
        return Completed(message=msg, data=PromotionResult(model_name=cfg.mlflow.model_name, decision="skipped", reasons=[msg]))

    payload = {
        "version": challenger.version.version,
        "champion_version": champion.version.version if champion else None,
        "results": decision.to_dict(),
        "rows": len(fresh),
    }
    result = PromotionResult(
        model_name=cfg.mlflow.model_name,
        decision="passed" if decision.passed else "failed",
        reasons=decision.reasons or [decision.summary()],
        champion=champion.version.version if champion else None,
        canary=challenger.version.version if decision.passed else None,
        challenger=challenger.version.version,
        checks=decision.to_dict(),
    )
    if decision.passed:
        emit(cfg, GATE_PASSED, payload)
        emit(cfg, CANARY_STARTED, {"version": challenger.version.version, "traffic_share": cfg.canary.traffic_share, "champion_version": payload["champion_version"]})
        return Completed(message=f"v{challenger.version.version} passed the gate; canary at {cfg.canary.traffic_share:.0%} of traffic", data=result)
    emit(cfg, GATE_FAILED, payload)
    return Failed(name="GateFailed", message=f"v{challenger.version.version} rejected: " + "; ".join(decision.reasons), data=result)
