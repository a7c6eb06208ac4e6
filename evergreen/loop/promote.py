"""The promotion steps: the gate (challenger vs champion on the same fresh labelled rows),
the canary review (canary vs champion on the traffic each served) and the rollback. The
`promote`, `canary-review` and `rollback` flows run them with Prefect tasks; the backtest
with plain calls on its replay's ports. Every registry write holds the model's lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from evergreen import events
from evergreen.adapters import registry
from evergreen.adapters.ports import Ports
from evergreen.config import ConfigError, GateConfig, ModelConfig
from evergreen.decisions import canary, defaults, gate
from evergreen.decisions.evaluation import target_values
from evergreen.engines import scoring
from evergreen.loop import sources, state
from evergreen.loop.common import MANUAL, Actor, registry_lock
from evergreen.loop.runner import DIRECT, Runner
from evergreen.reports import PromotionResult
from evergreen.times import utc, utc_series


@dataclass(frozen=True)
class Outcome:
    """A step's result and how its run ends: `state` names a state other than plain
    Completed (e.g. `GateFailed`), `failed` marks it Failed."""

    result: PromotionResult
    message: str
    state: str | None = None
    failed: bool = False


# ----------------------------------------------------------------------------- the gate


def promote(
    ports: Ports, config: ModelConfig, version: str | None = None, *, run: Runner = DIRECT, actor: Actor = MANUAL
) -> Outcome:
    """Gate the `challenger` (or the registered `version` an event names) against `champion`:
    pass -> alias `canary` (its share of the traffic), fail -> the version is rejected."""
    name = config.mlflow.model_name
    run.part("check-registered-model", check_registered_model, ports, config, io=True)
    run.part("settle-registry", settle, ports, actor, run, io=True)  # an interrupted earlier run is finished first
    challenger = run.part("load-registered-model", ports.registry.load_alias, registry.CHALLENGER, io=True)
    if challenger is None or (version is not None and challenger.version.version != str(version)):
        msg = f"no challenger to gate (challenger: {challenger and challenger.version.version}, asked: {version})"
        return Outcome(PromotionResult(model_name=name, decision="skipped", reasons=[msg]), msg)
    champion = run.part("load-registered-model", ports.registry.load_alias, registry.CHAMPION, io=True)
    if champion is not None and champion.version.version == challenger.version.version:
        run.part("drop-challenger-alias", drop_challenger, ports, "bootstrap: challenger is already champion", actor, run, io=True)
        msg = f"v{challenger.version.version} is already champion (bootstrap); nothing to gate"
        result = PromotionResult(model_name=name, decision="skipped", reasons=[msg], champion=champion.version.version)
        return Outcome(result, msg)

    after, since = evidence_span([challenger, champion])
    fresh = run.part("load-fresh-labelled-data", fresh_rows, ports, config, after, since, io=True)
    if (msg := sources.gate_evidence_shortfall(len(fresh), config)) is not None:
        return Outcome(PromotionResult(model_name=name, decision="failed", reasons=[msg]), msg, "NotEnoughData", True)
    # Each model as fit without its own evaluation hold-out, or its cross-fit probes
    # (`TrainedModel.cross_fitted`): the fresh rows are ones neither saw (`evidence_span`).
    ch = run.part("measure-model", scoring.measure_model, challenger.model.cross_fitted(), fresh, config, challenger.version.version)
    cp = (
        run.part("measure-model", scoring.measure_model, champion.model.cross_fitted(), fresh, config, champion.version.version)
        if champion is not None
        else None
    )
    settings = gate_settings(config, challenger.version.tags)
    decision = run.part("decide-promotion", decide_promotion, ch, cp, fresh, config, settings)
    applied = run.part(
        "apply-gate-decision", apply_gate_decision, ports, challenger.version.version, decision, actor, run, io=True
    )
    if not applied:
        msg = f"v{challenger.version.version} was decided otherwise by a concurrent run, or replaced; nothing applied"
        return Outcome(PromotionResult(model_name=name, decision="skipped", reasons=[msg]), msg)

    champion_version = champion.version.version if champion else None
    payload = {
        "version": challenger.version.version,
        "champion_version": champion_version,
        "results": decision.to_dict(),
        "rows": len(fresh),
    }
    result = PromotionResult(
        model_name=name,
        decision="passed" if decision.passed else "failed",
        reasons=decision.reasons or [decision.summary()],
        champion=champion_version,
        canary=challenger.version.version if decision.passed else None,
        challenger=challenger.version.version,
        checks=decision.to_dict(),
    )
    if decision.passed:
        run.part("emit-event", ports.events.emit, events.GATE_PASSED, payload, io=True)
        run.part(
            "emit-event", ports.events.emit, events.CANARY_STARTED,
            {"version": challenger.version.version, "traffic_share": config.canary.traffic_share, "champion_version": champion_version},
            io=True,
        )
        msg = f"v{challenger.version.version} passed the gate; canary at {config.canary.traffic_share:.0%} of traffic"
        return Outcome(result, msg)
    run.part("emit-event", ports.events.emit, events.GATE_FAILED, payload, io=True)
    msg = f"v{challenger.version.version} rejected: " + "; ".join(decision.reasons)
    return Outcome(result, msg, "GateFailed", True)


def check_registered_model(ports: Ports, config: ModelConfig) -> None:
    """ConfigError naming `mlflow.model_name` when the registry has no such model (a flow
    that acts on an existing model must not create one or quietly do nothing)."""
    if not ports.registry.exists():
        raise ConfigError(
            f"invalid Evergreen config:\n  mlflow.model_name: no registered model {config.mlflow.model_name!r} "
            "in the registry; fix the name, or run a retrain first to register the model"
        )


def settle(ports: Ports, actor: Actor, run: Runner) -> list[str]:
    """Finish what an interrupted registry operation of this model left."""
    with registry_lock(ports, actor, run) as fixed:
        return fixed


def fresh_rows(ports: Ports, config: ModelConfig, after: str | None, since: str | None = None) -> pd.DataFrame:
    """The gate's evidence: the freshest labelled rows (`sources.select_fresh_rows`)."""
    return sources.select_fresh_rows(
        sources.read_labelled_batches(config), config, pd.Timestamp(after) if after else None,
        pd.Timestamp(since) if since else None,
    )


def evidence_span(models: list[registry.LoadedModel | None]) -> tuple[str | None, str | None]:
    """The rows the gate may judge these models on, as (after, since): those no model's
    cross-fitted view (`TrainedModel.cross_fitted`) trained on. A model that knows from when on
    that holds (`TrainedModel.unseen_since`: an alert episode's cross-fit model, from its
    change point on) bounds them by `since` (inclusive); any other by `after` (exclusive),
    its training rows' end (`evergreen.train_end`). The latest bound of each kind wins."""
    afters, sinces = [], []
    for loaded in models:
        if loaded is None:
            continue
        unseen = loaded.model.unseen_since()
        if unseen is not None:
            sinces.append(utc(unseen))
        elif end := loaded.version.tags.get(state.TRAIN_END_TAG):
            afters.append(utc(end))
    return (
        max(afters).isoformat() if afters else None,
        max(sinces).isoformat() if sinces else None,
    )


def decide_promotion(
    challenger: gate.ModelEvidence,
    champion: gate.ModelEvidence | None,
    frame: pd.DataFrame,
    config: ModelConfig,
    settings: GateConfig | None = None,
) -> gate.GateDecision:
    y = target_values(frame[config.columns.target], config)
    return gate.decide_promotion(challenger, champion, y, settings or config.gate, config.problem_type, config.metric)


def gate_settings(config: ModelConfig, tags: dict[str, str]) -> GateConfig:
    """The gate a challenger meets: `gate.mode_on_alert` (by default an improvement the
    bootstrap interval supports) when it was trained for an alert episode, whose champion is
    being replaced because it degraded, and the refresh of a settling episode as well (it is
    there to learn more of the new world: a slightly worse one must not pass a margin);
    `gate.mode` (non-inferiority) for a scheduled or manual refresh."""
    if tags.get(state.EPISODE_TAG):
        return config.gate.model_copy(update={"mode": config.gate.mode_on_alert})
    return config.gate


def apply_gate_decision(ports: Ports, version: str, decision: gate.GateDecision, actor: Actor, run: Runner) -> bool:
    """Pass: challenger -> canary. Fail: version rejected, challenger alias removed.

    When `challenger` no longer points at `version`, nothing is written: returns True if the
    registry already holds this decision (a retry after the writes went through, or a
    concurrent run that decided the same), False if it holds another one or a newer
    candidate replaced the version while it was gated."""
    reg, results = ports.registry, decision.to_dict()
    if not decision.passed:
        results["evidence_factor"] = gate.evidence_factor(results)
    with registry_lock(ports, actor, run):
        current = reg.version_by_alias(registry.CHALLENGER)
        if current is None or current.version != version:
            if decision.passed:
                canary_now = reg.version_by_alias(registry.CANARY)
                return canary_now is not None and canary_now.version == version
            return reg.get_version(version).status == "rejected"
        if decision.passed:
            reg.start_canary(version, results, actor.name, actor.flow_run_id)
        else:
            reg.reject_challenger(version, results, decision.reasons, actor.name, actor.flow_run_id)
    return True


def drop_challenger(ports: Ports, reason: str, actor: Actor, run: Runner) -> None:
    with registry_lock(ports, actor, run):
        ports.registry.move_alias(registry.CHALLENGER, None, reason, actor.name, actor.flow_run_id)


# ----------------------------------------------------------------------------- the canary review


@dataclass(frozen=True)
class ArmsEvidence:
    canary: canary.ArmEvidence
    champion: canary.ArmEvidence
    # How long the canary has run: hours between the first and the last row it served, by
    # the rows' timestamps (request time unless the client sent one), so a replay measures
    # its own clock, like the retrain cooldown.
    canary_hours: float = 0.0
    paired: canary.PairedEvidence | None = None


def review_canary(ports: Ports, config: ModelConfig, *, run: Runner = DIRECT, actor: Actor = MANUAL) -> Outcome:
    """Canary vs champion on the traffic each served since the canary started: promote,
    roll back, or wait for more evidence."""
    name = config.mlflow.model_name
    run.part("settle-registry", settle, ports, actor, run, io=True)
    canary_v = run.part("resolve-alias", ports.registry.version_by_alias, registry.CANARY, io=True)
    if canary_v is None:
        return Outcome(PromotionResult(model_name=name, decision="skipped", reasons=["no canary"]), "no canary to review")
    champion = run.part("resolve-alias", ports.registry.version_by_alias, registry.CHAMPION, io=True)
    started = run.part("canary-started-at", canary_started_at, ports, canary_v.version, io=True)
    arms = run.part(
        "collect-canary-evidence", collect_evidence, ports, config, canary_v.version,
        champion.version if champion else "", started, io=True,
    )
    decision = run.part("decide-canary", decide_canary, config, arms)
    base = {"canary": canary_v.version, "champion": champion.version if champion else None}
    evidence = decision.to_dict()
    if decision.outcome == canary.PENDING:
        needed = decision.needed
        wait = defaults.canary_wait(config, needed.predictions, max(needed.labels, needed.champion_labels)) if needed else ""
        msg = "not enough evidence yet: " + "; ".join([*decision.reasons, *([wait] if wait else [])])
        result = PromotionResult(model_name=name, decision="pending", reasons=decision.reasons, **base, checks=evidence)
        return Outcome(result, msg, "AwaitingEvidence")
    previous = run.part("apply-canary-decision", apply_canary_decision, ports, canary_v.version, decision, actor, run, io=True)
    reasons = "; ".join(decision.reasons)
    if decision.outcome == canary.PROMOTED:
        run.part(
            "emit-event", ports.events.emit, events.MODEL_PROMOTED,
            {"version": canary_v.version, "previous_champion": previous, "evidence": evidence}, io=True,
        )
        result = PromotionResult(
            model_name=name, decision="promoted", reasons=decision.reasons, champion=canary_v.version, canary=None, checks=evidence
        )
        return Outcome(result, f"v{canary_v.version} promoted to champion (was v{previous}): {reasons}")
    run.part(
        "emit-event", ports.events.emit, events.MODEL_ROLLED_BACK,
        {"from_version": canary_v.version, "to_version": base["champion"], "reason": reasons, "evidence": evidence},
        io=True,
    )
    result = PromotionResult(
        model_name=name, decision="rolled_back", reasons=decision.reasons, champion=base["champion"], canary=None, checks=evidence
    )
    return Outcome(result, f"canary v{canary_v.version} rolled back; champion stays v{base['champion']}: {reasons}")


def canary_started_at(ports: Ports, version: str) -> str | None:
    """When `canary` last moved to `version` (from the alias history)."""
    for move in reversed(ports.registry.alias_history()):
        if move.alias == registry.CANARY and move.to_version == version:
            return move.time
    return None


def collect_evidence(
    ports: Ports, config: ModelConfig, canary_version: str, champion_version: str, since: str | None
) -> ArmsEvidence:
    """What each arm actually served since the canary started, with the labels that arrived."""
    from evergreen.columns import ALIAS_COLUMN

    log = ports.predictions.read(since)
    if log.empty:  # nothing served since the canary started
        return ArmsEvidence(
            canary.ArmEvidence(registry.CANARY, canary_version, 0, 0, None),
            canary.ArmEvidence(registry.CHAMPION, champion_version, 0, 0, None),
        )
    labels = ports.store.read_labels()
    by_canary = (log[ALIAS_COLUMN].astype(str) == registry.CANARY) & (
        log[config.columns.model_version].astype(str) == str(canary_version)
    )
    stamps = pd.to_datetime(log.loc[by_canary, config.columns.timestamp], utc=True)
    return ArmsEvidence(
        canary.collect_arm_evidence(log, labels, config, canary_version, registry.CANARY),
        canary.collect_arm_evidence(log, labels, config, champion_version, registry.CHAMPION),
        canary_hours=float((stamps.max() - stamps.min()) / pd.Timedelta(hours=1)) if stamps.notna().any() else 0.0,
        paired=paired_evidence(ports, config, canary_version, champion_version),
    )


def paired_evidence(
    ports: Ports, config: ModelConfig, canary_version: str, champion_version: str
) -> canary.PairedEvidence | None:
    """Both models on the labelled production rows newer than the canary's whole window
    (`evergreen.window_end`: nothing it trained or was gated on), the newest
    `gate.evaluation_rows` of them; None when there are none or no champion."""
    if not champion_version:
        return None
    info = ports.registry.get_version(canary_version)
    after = info.tags.get(state.WINDOW_END_TAG) or info.tags.get(state.TRAIN_END_TAG)
    if not after:
        return None
    ts = config.columns.timestamp
    frames = [b.frame for b in sources.read_labelled_batches(config) if b.valid and len(b.frame)]
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[utc_series(rows[ts]) > utc(after)].tail(config.gate.evaluation_rows)
    if rows.empty:
        return None
    new = ports.registry.load_version(canary_version).model.predict(rows).scores
    old = ports.registry.load_version(champion_version).model.predict(rows).scores
    return canary.PairedEvidence(target_values(rows[config.columns.target], config), new, old)


def decide_canary(config: ModelConfig, arms: ArmsEvidence) -> canary.CanaryDecision:
    """Before the canary has run `canary.window_hours`, only a conclusive comparison decides."""
    elapsed = arms.canary_hours >= config.canary.window_hours
    return canary.decide_canary(
        arms.canary, arms.champion, defaults.canary_config(config), config.problem_type, config.metric,
        window_elapsed=elapsed, paired=arms.paired,
    )


def apply_canary_decision(
    ports: Ports, version: str, decision: canary.CanaryDecision, actor: Actor, run: Runner
) -> str | None:
    """Promote (returns the previous champion) or reject the canary."""
    reg, reason = ports.registry, "; ".join(decision.reasons)
    with registry_lock(ports, actor, run):
        current = reg.version_by_alias(registry.CANARY)
        if current is None or current.version != version:
            raise RuntimeError(
                f"canary moved while it was reviewed (expected v{version}, now {current and current.version}); rerun the review"
            )
        if decision.outcome == canary.PROMOTED:
            return reg.promote_canary(version, f"canary review: {reason}", actor.name, actor.flow_run_id)
        reg.reject_canary(version, f"canary review: {reason}", actor.name, actor.flow_run_id)
        return None


# ----------------------------------------------------------------------------- the rollback


@dataclass(frozen=True)
class RollbackOutcome:
    rolled_back_from: str | None  # None: nothing changed (already rolled back)
    champion: str


def rollback(
    ports: Ports,
    config: ModelConfig,
    to_version: str | None = None,
    from_version: str | None = None,
    reason: str = "manual rollback",
    verify: bool = False,
    *,
    run: Runner = DIRECT,
    actor: Actor = MANUAL,
) -> Outcome:
    """`champion` back to the previous champion (or `to_version`). Idempotent: with
    `from_version`, nothing happens once the champion is no longer it. With `verify` (the
    automation sets it), roll back only when the previous champion does better than the
    champion on the freshest labelled rows."""
    name = config.mlflow.model_name
    run.part("check-registered-model", check_registered_model, ports, config, io=True)
    run.part("settle-registry", settle, ports, actor, run, io=True)
    if verify and to_version is None:
        check = run.part("check-rollback", check_rollback, ports, config, io=True)
        if check is None or not check.worth_it:
            msg = check.reason if check else "no previous champion or too few fresh labelled rows to judge; keeping the champion"
            return Outcome(PromotionResult(model_name=name, decision="unchanged", reasons=[msg]), msg, "Kept")
        reason = f"{reason}; {check.reason}"
    outcome = run.part("roll-back-champion", roll_back, ports, to_version, from_version, reason, actor, run, io=True)
    rolled_from, now = outcome.rolled_back_from, outcome.champion
    if rolled_from is None:
        msg = f"champion is v{now}; nothing to roll back"
        return Outcome(PromotionResult(model_name=name, decision="unchanged", reasons=[msg], champion=now), msg)
    run.part(
        "emit-event", ports.events.emit, events.MODEL_ROLLED_BACK,
        {"from_version": rolled_from, "to_version": now, "reason": reason}, io=True,
    )
    result = PromotionResult(model_name=name, decision="rolled_back", reasons=[reason], champion=now, canary=None)
    return Outcome(result, f"champion rolled back from v{rolled_from} to v{now}: {reason}")


def roll_back(
    ports: Ports, to_version: str | None, from_version: str | None, reason: str, actor: Actor, run: Runner
) -> RollbackOutcome:
    """Champion back to `to_version` (default: the previous champion). Idempotent: when the
    champion is no longer `from_version` (the run already happened), nothing changes."""
    reg = ports.registry
    with registry_lock(ports, actor, run):
        current = reg.version_by_alias(registry.CHAMPION)
        if current is None:
            raise RuntimeError(f"model {reg.name} has no champion to roll back")
        if from_version is not None and current.version != from_version:
            return RollbackOutcome(None, current.version)
        target = to_version or reg.previous_champion()
        if target is None:
            raise RuntimeError(
                f"model {reg.name}: champion v{current.version} has no previous champion; pass a version to roll back to"
            )
        reg.get_version(target)  # raises with the name when the version does not exist
        rolled_from = reg.roll_back_champion(target, reason, actor.name, actor.flow_run_id)
        return RollbackOutcome(rolled_from, target)


def check_rollback(ports: Ports, config: ModelConfig) -> gate.RollbackCheck | None:
    """Champion and previous champion measured on the same freshest labelled rows, newer
    than the champion's whole window (it may have been refit on its hold-out); None when
    there is no previous champion or too few rows to judge."""
    reg = ports.registry
    previous = reg.previous_champion()
    current = reg.load_alias(registry.CHAMPION)
    if previous is None or current is None:
        return None
    tags = current.version.tags
    fresh = fresh_rows(ports, config, tags.get(state.WINDOW_END_TAG) or tags.get(state.TRAIN_END_TAG))
    if len(fresh) < defaults.gate_min_rows(config):
        return None
    old = reg.load_version(previous)
    cur_ev = scoring.measure_model(current.model, fresh, config, current.version.version)
    old_ev = scoring.measure_model(old.model, fresh, config, previous)
    return gate.decide_rollback(cur_ev, old_ev, config.metric, config.canary.margin, len(fresh))
