"""The `rollback` flow: `champion` back to the previous champion (or a named version)."""

# No `from __future__ import annotations`: a served flow is pickled into its run's
# subprocess, and Prefect validates its parameters against these annotations there.

from prefect import flow
from prefect.states import Completed, State

from blocks.model_config import resolve_config
from evergreen.config import ModelConfig
from evergreen.reports import PromotionResult
from evergreen.telemetry import disable_telemetry
from tasks import promotion
from tasks.events import emit
from tasks.registry import settle_registry

MODEL_ROLLED_BACK = "evergreen.model.rolled_back"


@flow(name="rollback", log_prints=True)
def rollback(
    config: str | ModelConfig = "car-loan",
    to_version: str | None = None,
    from_version: str | None = None,
    reason: str = "manual rollback",
    verify: bool = False,
) -> State:
    """Idempotent: with `from_version`, nothing happens once the champion is no longer it.
    With `verify` (the automation sets it), roll back only when the previous champion does
    better than the champion on the freshest labelled rows."""
    disable_telemetry()
    cfg = resolve_config(config)
    promotion.check_registered_model(cfg)
    settle_registry(cfg)  # an interrupted earlier run is finished first
    if verify and to_version is None:
        check = promotion.check_rollback(cfg)
        if check is None or not check.worth_it:
            msg = check.reason if check else "no previous champion or too few fresh labelled rows to judge; keeping the champion"
            return Completed(name="Kept", message=msg, data=PromotionResult(model_name=cfg.mlflow.model_name, decision="unchanged", reasons=[msg]))
        reason = f"{reason}; {check.reason}"
    outcome = promotion.roll_back(cfg, to_version, from_version, reason)
    rolled_from, now = outcome.rolled_back_from, outcome.champion
    name = cfg.mlflow.model_name
    if rolled_from is None:
        msg = f"champion is v{now}; nothing to roll back"
        return Completed(message=msg, data=PromotionResult(model_name=name, decision="unchanged", reasons=[msg], champion=now))
    emit(cfg, MODEL_ROLLED_BACK, {"from_version": rolled_from, "to_version": now, "reason": reason})
    return Completed(
        message=f"champion rolled back from v{rolled_from} to v{now}: {reason}",
        data=PromotionResult(model_name=name, decision="rolled_back", reasons=[reason], champion=now, canary=None),
    )
