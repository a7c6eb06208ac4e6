"""The retrain policy: one chunk's monitoring outcome plus the loop's state -> a decision.

Pure (no Prefect, MLflow or NannyML). The same `decide` serves three callers:

- the monitor flow, to decide which events to emit (`PolicyDecision.events`): the
  configured signals that fired on this batch, held by the hysteresis (K of the last N
  batches); the event payloads keep the contract of `AlertDecision.event_payloads`;
- the backtest, to decide per chunk whether to retrain (`PolicyDecision.retrain`), for the
  default policy and the baselines `never`, `always` and `schedule:K`;
- anything that starts a retrain, through `check_start` (cooldown, new labelled data,
  budget per period, a candidate still under review), and after its snapshot through
  `check_new_data` (a window identical to a registered version's is not trained again).

Time is the data's clock (the newest batch timestamp), never the wall clock: a replay
passes days in seconds and a cooldown still means hours of data.

Rules of the default policy, in order:

1. a batch rejected by validation triggers nothing (it is left out of training anyway);
2. signals: each of `retrain.signals` (estimated_drop, realized_drop, multivariate_drift,
   feature_drift) fires when `monitoring.decide_alerts` raised it on the batch, with the
   thresholds of `monitoring.*` (a feature whose values validation found beyond the
   reference's range or in unseen categories counts as drifted for `feature_drift`);
3. hysteresis: an alert needs a configured signal on at least `hysteresis_k` of the last
   `hysteresis_n` batches (this one included); the alert is what the events announce;
4. an alert retrains unless a start check blocks it: a candidate under review, the
   cooldown (`cooldown_hours` of data, or `cooldown_batches` batches, since the newest
   version was trained), `max_retrains_per_period` retrains already in the last
   `period_days` days, no labelled row newer than that version's training data
   (`no_new_data`) or fewer than `min_new_rows` of them, in that order.

Manual retrains (a person asked) pass the start checks: the person may have changed the
training settings or the reference table, which the loop's state does not see. No retrain,
manual or not, registers a duplicate, though: when the snapshot of its window has the digest
of the newest version's (or the champion's) training data and the training settings are the
same, `check_new_data` skips it (`same_data`) before anything is trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import pandas as pd

from evergreen import events as names
from evergreen.config import RetrainPolicyConfig
from evergreen.decisions.alerts import AlertDecision, AlertSignal
from evergreen.decisions.episodes import (
    Episode,
    EpisodeStep,
    RealizedBatch,
    advance_episode,
    realized_effect,
    with_realized,
)
from evergreen.jsonable import plain
from evergreen.times import utc

SIGNALS = ("estimated_drop", "realized_drop", "multivariate_drift", "feature_drift")
BASELINES = ("never", "always", "schedule")
DEFAULT_SCHEDULE_EVERY = 7
PolicyKind = Literal["default", "never", "always", "schedule"]
Blocker = Literal[
    "invalid", "no_alert", "candidate_pending", "cooldown", "no_new_data", "min_new_rows", "budget", "same_data",
    "deferred", "requested", "attempts",
]


class PolicyError(ValueError):
    """A policy name or setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Policy:
    """A named retrain policy: the configured one (`default`) or a baseline.

    `never`: the first model serves forever. `always`: retrain after every chunk.
    `schedule:K`: retrain every K chunks, whatever the monitor says. Only `default` applies
    the signals, hysteresis and start checks of `config`; every policy alerts the same way.
    """

    name: str
    kind: PolicyKind
    config: RetrainPolicyConfig
    every: int | None = None

    @classmethod
    def named(cls, name: str, config: RetrainPolicyConfig) -> Policy:
        """`default`, `never`, `always`, `schedule` (every 7 chunks) or `schedule:K`."""
        text = name.strip().lower()
        if text in ("default", "never", "always"):
            return cls(name=text, kind=text, config=config)  # type: ignore[arg-type]
        if text == "schedule" or text.startswith("schedule:"):
            raw = text.partition(":")[2] or str(DEFAULT_SCHEDULE_EVERY)
            if not raw.isdigit() or int(raw) < 1:
                raise PolicyError(
                    f"policy {name!r}: schedule needs a whole number of chunks >= 1, e.g. schedule:7"
                )
            return cls(name=f"schedule:{int(raw)}", kind="schedule", config=config, every=int(raw))
        raise PolicyError(
            f"unknown policy {name!r}; use default, never, always, schedule or schedule:K"
        )

    def settings(self) -> dict[str, Any]:
        """What decides for this policy, as plain JSON (for reports)."""
        if self.kind == "schedule":
            return {"kind": "schedule", "every_chunks": self.every}
        if self.kind != "default":
            return {"kind": self.kind}
        c = self.config
        return {
            "kind": "default",
            "signals": list(c.signals),
            "hysteresis": f"{c.hysteresis_k} of {c.hysteresis_n}",
            **({f"cooldown_{unit[0]}": unit[1]} if (unit := c.cooldown_unit) else {"cooldown_hours": 0}),
            "min_new_rows": c.min_new_rows,
            "max_retrains_per_period": c.max_retrains_per_period,
            "period_days": c.period_days,
        }


@dataclass(frozen=True)
class ChunkObservation:
    """What the monitor found on one chunk (batch).

    `alerts` is `monitoring.decide_alerts` on the chunk's report (None when the chunk was
    rejected and never monitored); `reason` says why a chunk was rejected.
    """

    chunk: str
    valid: bool
    alerts: AlertDecision | None = None
    rows: int = 0
    reason: str = ""
    start: datetime | None = None  # the chunk's first timestamp: an episode opened here changed from it
    # The batch the realized metric was measured on and, when that is an earlier batch (labels
    # arrive late), its first timestamp (None otherwise). See `change_began`.
    realized_on: str | None = None
    realized_start: datetime | None = None


@dataclass(frozen=True)
class LoopState:
    """What the loop knows besides the chunk. A field left None is not known to the caller,
    and the check that needs it is not made here (the caller makes it elsewhere).

    - `history`: configured signals that fired on each previous chunk, oldest first;
    - `now`: data time of this chunk (its newest timestamp);
    - `last_retrain_clock`: data time when the newest registered version was trained;
    - `last_train_end`: end of that version's training data (`evergreen.train_end`);
    - `newest_version` / `seen_until`: that version and the end of its window (the newest
      row it saw, trained on or held out);
    - `new_labelled_rows`: labelled rows newer than `seen_until`, counted up to
      `retrain.min_new_rows` (at least 1): a lower bound once the check passes;
    - `retrains_in_period`: retrains started in the last `period_days` days of data;
    - `chunks_since_retrain`: batches received since the newest version was trained (read
      for a cooldown in batches; `schedule:K` counts its chunks with it);
    - `candidate_pending`: a retrained version is still under review (`pending_reason`
      says which: "challenger v5 awaits its gate", "canary v5 is under review").
    """

    history: tuple[tuple[str, ...], ...] = ()
    now: datetime | None = None
    last_retrain_clock: datetime | None = None
    last_train_end: datetime | None = None
    newest_version: str | None = None
    seen_until: datetime | None = None
    new_labelled_rows: int | None = None
    retrains_in_period: int | None = None
    chunks_since_retrain: int | None = None
    candidate_pending: bool = False
    pending_reason: str = ""
    champion: str | None = None
    episode: Episode | None = None
    post_change_rows: int | None = None
    post_change_needed: int | None = None
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """A version registered for an alert episode: its status, the post-change labelled
    rows it was trained with, and the rows of its training window from production batches
    rather than the reference (None: not recorded)."""

    version: str
    status: str | None
    post_change_rows: int | None = None
    window_batch_rows: int | None = None


@dataclass(frozen=True)
class StartCheck:
    """Whether a retrain may start now; `blocked_by` names the first check that failed."""

    allowed: bool
    reason: str
    blocked_by: Blocker | None = None


@dataclass(frozen=True)
class PolicyDecision:
    """The policy's verdict on one chunk.

    `fired`: configured signals raised on this chunk; `alert`: held by the hysteresis;
    `events`: the events to emit (name -> payload, plain JSON), present when `alert`;
    `retrain`: whether to retrain now; `reason`: one sentence saying why (not).
    """

    chunk: str
    policy: str
    retrain: bool
    reason: str
    fired: list[str]
    alert: bool
    hysteresis: str
    blocked_by: Blocker | None = None
    signals: list[AlertSignal] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    episode: Episode | None = None
    transition: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        return plain(
            {
                "chunk": self.chunk,
                "policy": self.policy,
                "retrain": self.retrain,
                "reason": self.reason,
                "fired": self.fired,
                "alert": self.alert,
                "hysteresis": self.hysteresis,
                "blocked_by": self.blocked_by,
                "events": sorted(self.events),
                "episode": None if self.episode is None else self.episode.to_dict(),
                "transition": self.transition,
            }
        )


def fired_signals(observation: ChunkObservation, config: RetrainPolicyConfig) -> list[AlertSignal]:
    """The alert signals of the chunk that the policy listens to (`retrain.signals`)."""
    if not observation.valid or observation.alerts is None:
        return []
    wanted = set(config.signals)
    return [s for s in observation.alerts.signals if s.kind in wanted]


def decide(observation: ChunkObservation, state: LoopState, policy: Policy) -> PolicyDecision:
    """Apply `policy` to one chunk (see the module docstring for the rules)."""
    cfg = policy.config
    signals = fired_signals(observation, cfg)
    fired: list[str] = list(dict.fromkeys(s.kind for s in signals))
    window = (
        [*state.history[-(cfg.hysteresis_n - 1) :], tuple(fired)]
        if cfg.hysteresis_n > 1
        else [tuple(fired)]
    )
    hits = sum(1 for kinds in window if kinds)
    alert = bool(fired) and hits >= cfg.hysteresis_k
    hysteresis = f"{hits} of the last {len(window)} chunk(s) with a signal ({cfg.hysteresis_k} of {cfg.hysteresis_n} needed)"
    settle_rows, settled = settling_of(state, policy)
    began, change_point = change_began(observation, fired)
    step = (
        advance_episode(
            state.episode, observation.chunk, alert, fired, state.champion, change_point, cfg.episode_quiet_batches,
            settle_rows, settled, began=began,
        )
        if observation.valid
        else EpisodeStep(state.episode, "none")
    )
    if step.episode is not None and observation.valid:
        step = dataclasses.replace(step, episode=record_realized(step.episode, observation, state.champion))
    base = PolicyDecision(
        chunk=observation.chunk,
        policy=policy.name,
        retrain=False,
        reason="",
        fired=fired,
        alert=alert,
        hysteresis=hysteresis,
        signals=signals,
        events=_episode_events(observation, step, signals, hysteresis, policy),
        episode=step.episode,
        transition=step.transition,
    )
    if policy.kind == "never":
        return dataclasses.replace(base, reason="policy never: the first model serves forever")
    if policy.kind == "always":
        return dataclasses.replace(
            base, retrain=True, reason="policy always: retrain after every chunk"
        )
    if policy.kind == "schedule":
        since = state.chunks_since_retrain
        due = since is not None and policy.every is not None and since >= policy.every
        why = f"{since} chunk(s) since the last retrain, schedule every {policy.every}"
        return dataclasses.replace(
            base, retrain=due, reason=f"{'scheduled' if due else 'not due'}: {why}"
        )

    if not observation.valid:
        reason = f"chunk rejected by validation, nothing to judge: {observation.reason}".rstrip(
            ": "
        )
        return dataclasses.replace(base, reason=reason, blocked_by="invalid")
    episode = step.episode
    signal_text = "; ".join(s.reason for s in signals)
    if episode is None or not episode.open:
        if fired and not alert:
            reason = f"waiting for the hysteresis ({hysteresis}): {signal_text}"
        else:
            reason = "; ".join(step.reasons) or "no configured signal fired"
        return dataclasses.replace(base, reason=reason, blocked_by="no_alert")
    # An episode this chunk opens has no labelled rows and no attempts yet (the state's are
    # those of the episode before it).
    opened = step.transition == "opened"
    rows = 0 if opened else state.post_change_rows
    attempts = () if opened else state.attempts
    decision = decide_episode_retrain(
        dataclasses.replace(state, episode=episode, post_change_rows=rows, attempts=attempts), cfg
    )
    head = "; ".join(step.reasons)
    if not decision.allowed:
        reason = f"{decision.reason}" + (f" ({head})" if head else "")
        return dataclasses.replace(base, reason=reason, blocked_by=decision.blocked_by)
    request = _request_payload(observation.chunk, episode, rows, decision.reason, signal_text, observation)
    return dataclasses.replace(
        base, retrain=True, reason=f"retrain: {decision.reason}", events={**base.events, names.RETRAIN_REQUESTED: request}
    )


def change_began(observation: ChunkObservation, fired: list[str]) -> tuple[str, datetime | None]:
    """The batch with which the change began, and its first timestamp, for an episode this
    chunk opens: the chunk itself, unless the realized drop fired on an earlier batch whose
    labels arrived only now. That batch was already served by the degraded model, so the
    episode's post-change evidence (and the retrain's post-change rows) start with it: a
    change only the labels show (a concept change) is otherwise dated the label delay late,
    and its retrain waits that long again for labels that are already there."""
    realized = observation.realized_start
    earlier = realized is not None and (observation.start is None or utc(realized) < utc(observation.start))
    if "realized_drop" in fired and observation.realized_on and earlier:
        return observation.realized_on, realized
    return observation.chunk, observation.start


def record_realized(episode: Episode, observation: ChunkObservation, serving: str | None) -> Episode:
    """The open episode with the realized metric the chunk brought, when it is of a batch from
    after the change point and of the champion the episode opened on (before its retrain
    replaced it): the evidence `decide_episode_retrain` weighs the first retrain on."""
    alerts = observation.alerts
    if (
        alerts is None or alerts.realized_worse_by is None or not math.isfinite(alerts.realized_worse_by)
        or not episode.open or episode.settling or serving != episode.champion or episode.change_point is None
    ):
        return episode
    late = observation.realized_on is not None and observation.realized_on != observation.chunk
    batch = observation.realized_on or observation.chunk
    start = observation.realized_start if late else observation.start
    if start is None or utc(start) < utc(episode.change_point):
        return episode
    rows = alerts.realized_rows if alerts.realized_rows is not None else observation.rows
    error = float(alerts.realized_error) if alerts.realized_error is not None and math.isfinite(alerts.realized_error) else None
    return with_realized(episode, RealizedBatch(batch, int(rows), float(alerts.realized_worse_by), error))


def settling_of(state: LoopState, policy: Policy) -> tuple[int | None, str]:
    """Whether the open episode settles or its settling ends on this chunk (for
    `episodes.advance_episode`): the post-change rows of the episode's own retrain, or of
    its refresh, that just became champion, when a refresh is to follow it (None: it does not
    settle: another policy than `default`, `retrain.settle_growth` unset, a champion from
    elsewhere, or no refresh would fit in its window: `refresh_rows`), and, for a settling
    episode, why its settling ends ("" while it goes on)."""
    episode = state.episode
    if policy.kind != "default" or episode is None or not episode.open:
        return None, ""
    config = policy.config
    if episode.settling:
        done = [a for a in _refreshes(state) if a.status not in ("candidate", "canary")]
        if not done:
            return None, ""
        last = done[-1]
        if last.status == "champion" or last.version == state.champion:
            rows = last.post_change_rows
            if rows is not None and refresh_rows(rows, config.evidence_growth, last.window_batch_rows) is not None:
                return rows, ""
            return None, f"refresh v{last.version} champion"
        needed, why = settle_needed(state, config)
        return None, ("" if needed is not None else f"refresh v{last.version} {last.status}; {why}")
    if config.settle_growth is None or state.champion is None or state.champion == episode.champion:
        return None, ""
    own = [a for a in state.attempts if a.version == state.champion]
    if not own:
        return None, ""
    rows = own[-1].post_change_rows
    rows = rows if rows is not None else (state.post_change_rows or 0)
    first = refresh_rows(rows, config.settle_growth, own[-1].window_batch_rows, first=True)
    return (rows if first is not None else None), ""


def refresh_rows(rows: int, growth: float, window_batch_rows: int | None, first: bool = False) -> int | None:
    """The post-change labelled rows a settling episode's next refresh waits for, after a
    model (or a rejected refresh) trained with `rows` of them: `growth` times as many, while
    the model's window holds that many production rows (`Attempt.window_batch_rows`; past
    that, its window was already the new world's). None: no further refresh. Without the
    window's size (a version registered before it was recorded), only the `first` refresh."""
    needed = max(int(math.ceil(rows * growth)), 1)
    if window_batch_rows is None:
        return needed if first else None
    return needed if needed <= window_batch_rows else None


def _version_after(version: str, than: str | None) -> bool:
    try:
        return than is None or int(version) > int(than)
    except ValueError:
        return version != than


def decide_episode_retrain(state: LoopState, config: RetrainPolicyConfig, requested_counts: bool = True) -> StartCheck:
    """May the open alert episode of `state` have its retrain now? The episode's own rules,
    then the loop's start rule (`check_start`):

    - its evidence: at least `state.post_change_needed` labelled rows from after the change
      point (`deferred` until then: labels arrive after their batch) and, for its first
      retrain, the change's effect they show (`_no_effect_yet`: the champion's realized
      metric on the post-change batches, `Episode.realized`, away from its reference by more
      than `retrain.effect_sampling_errors` sampling errors, either way);
    - what was tried: a version registered for the episode and still under review holds it
      (`candidate_pending`); one the gate rejected or the canary review rolled back is
      tried again only on `retrain.evidence_growth` times its post-change rows
      (`deferred`), at most `retrain.max_attempts_per_episode` times (`attempts`); a retrain
      already requested on this evidence is not requested again (`requested`; the retrain
      flow passes `requested_counts=False`: the request is what started it);
    - the start rule: the cooldown applies to an episode's first retrain only (its retries
      are paced by the evidence), then the budget and new data."""
    episode = state.episode
    if episode is None or not episode.open:
        return StartCheck(False, "no open alert episode", "no_alert")
    rows = state.post_change_rows
    needed = state.post_change_needed or 1
    since = f"episode {episode.id} (change from {episode.change_point})"
    attempts = list(state.attempts)
    pending = [a for a in attempts if a.status in ("candidate", "canary") and a.version != state.champion]
    if pending:
        last = pending[-1]
        return StartCheck(
            False, f"candidate_pending: v{last.version}, retrained for {since}, is still under review", "candidate_pending"
        )
    if episode.settling:
        return _settling_retrain(state, config, since, requested_counts)
    failed = [a for a in attempts if a.status in ("rejected",)]
    if config.max_attempts_per_episode is not None and len(attempts) >= config.max_attempts_per_episode:
        tried = ", ".join(f"v{a.version} {a.status}" for a in attempts)
        return StartCheck(
            False,
            f"attempts: {len(attempts)} retrain(s) already registered for {since} ({tried}; "
            f"retrain.max_attempts_per_episode={config.max_attempts_per_episode})",
            "attempts",
        )
    # A rejected attempt's retry waits for `evidence_growth` times its post-change rows: the
    # gate's interval narrows, and the cross-fit probes learn from more of the new world.
    basis = [a.post_change_rows for a in failed if a.post_change_rows is not None]
    grown = [a.post_change_rows * config.evidence_growth for a in failed if a.post_change_rows is not None]
    if requested_counts and episode.requested is not None:
        basis.append(episode.requested)
        grown.append(episode.requested * config.evidence_growth)
    if grown:
        needed = max(needed, int(math.ceil(max(grown))))
    if rows is None:
        return StartCheck(False, f"deferred: the post-change labelled rows of {since} are not known", "deferred")
    if rows < needed:
        what = (
            f"the last attempt ran on {max(basis):,} rows; another needs {needed:,} "
            f"(retrain.evidence_growth={config.evidence_growth:g})"
            if basis
            else f"its retrain waits for {needed:,} (retrain.min_post_change_rows; labels arrive after their batch)"
        )
        if requested_counts and episode.requested is not None and not failed and rows < needed:
            return StartCheck(
                False,
                f"requested: a retrain was requested for {since} at {episode.requested_at} on "
                f"{episode.requested:,} post-change rows; waiting for it",
                "requested",
            )
        return StartCheck(False, f"deferred: {since} has {rows:,} labelled post-change rows; {what}", "deferred")
    first = not attempts
    if first:
        unseen = _no_effect_yet(episode, config, since)
        if unseen is not None:
            return unseen
    start = check_start(state if first else dataclasses.replace(state, last_retrain_clock=None), config, "event")
    if not start.allowed:
        return start
    return StartCheck(True, f"{since}: {rows:,} labelled post-change rows (>= {needed:,}); {start.reason}")


def _no_effect_yet(episode: Episode, config: RetrainPolicyConfig, since: str) -> StartCheck | None:
    """Why the episode's first retrain waits although its rows are there: the champion's
    realized metric on the post-change batches is within `retrain.effect_sampling_errors`
    sampling errors of its reference, so the labels show no effect of the change a challenger
    could learn (a drift the model absorbs). Away from it either way, the retrain goes: worse,
    the change cost accuracy; better, the world became easier and a model trained on it may
    gain more. None: the effect is shown, not checked, or not measurable yet."""
    sigmas = config.effect_sampling_errors
    effect = realized_effect(episode)
    if sigmas is None or effect is None or effect.shown(sigmas):
        return None
    error = f", sampling error {effect.error:.4f}" if effect.error is not None else ""
    side = "worse" if effect.worse_by > 0 else "better"
    return StartCheck(
        False,
        f"deferred: {since}: the champion's realized metric on {effect.batches} post-change batch(es) "
        f"({effect.rows:,} labelled rows) is {abs(effect.worse_by):.4f} {side} than its reference{error}; its "
        f"retrain waits until the labels show the change's effect: a difference of more than {sigmas:g} sampling "
        "errors either way (retrain.effect_sampling_errors)",
        "deferred",
    )


def _refreshes(state: LoopState) -> list[Attempt]:
    """The refreshes of a settling episode: its versions newer than its replacement."""
    episode = state.episode
    assert episode is not None
    return [a for a in state.attempts if _version_after(a.version, episode.champion)]


def settle_needed(state: LoopState, config: RetrainPolicyConfig) -> tuple[int | None, str]:
    """The post-change labelled rows the next refresh of a settling episode waits for
    (`refresh_rows`), with the rule that set them: after the episode's replacement,
    `retrain.settle_growth` times its rows; after a refresh that became champion (the
    episode settles on it) or that the gate rejected or the canary rolled back,
    `retrain.evidence_growth` times that refresh's, as an episode's retries. None when the
    window holds fewer production rows than that, with why the settling ends."""
    episode = state.episode
    assert episode is not None and episode.settling_from is not None
    model = next((a for a in state.attempts if a.version == episode.champion), None)
    cap = model.window_batch_rows if model is not None else None
    failed = [a for a in _refreshes(state) if a.status in ("rejected", "retired") and a.post_change_rows is not None]
    if failed:
        last = failed[-1]
        assert last.post_change_rows is not None
        rows, growth, rule = last.post_change_rows, config.evidence_growth, f"v{last.version} {last.status}; retrain.evidence_growth"
    elif episode.refreshed:
        rows, growth, rule = episode.settling_from, config.evidence_growth, "retrain.evidence_growth"
    else:
        rows, growth, rule = episode.settling_from, config.settle_growth or 1.0, "retrain.settle_growth"
    rule = f"{rule}={growth:g}"
    needed = refresh_rows(rows, growth, cap, first=not failed and not episode.refreshed)
    if needed is not None:
        return needed, rule
    if cap is None:
        return None, "the window's size of its model is not recorded, so no further refresh"
    return None, (
        f"another would need {int(math.ceil(rows * growth)):,} post-change rows ({rule}), "
        f"more than the {cap:,} production rows of the window"
    )


def _settling_retrain(state: LoopState, config: RetrainPolicyConfig, since: str, requested_counts: bool) -> StartCheck:
    """The next refresh of a settling episode, once its post-change labelled rows reach
    `settle_needed`. No cooldown (the evidence paces it); the budget and new data apply."""
    episode = state.episode
    assert episode is not None and episode.settling_from is not None
    needed, rule = settle_needed(state, config)
    if needed is None:
        return StartCheck(False, f"deferred: {since} is settling: {rule}", "deferred")
    rows = state.post_change_rows
    head = (
        f"{since} is settling: v{episode.champion} replaced its champion with {episode.settling_from:,} post-change rows; "
        f"its refresh waits for {needed:,} ({rule})"
    )
    if rows is None:
        return StartCheck(False, f"deferred: {head}; the post-change labelled rows are not known", "deferred")
    if requested_counts and episode.requested is not None and episode.requested >= needed:
        return StartCheck(
            False, f"requested: the refresh of {since} was requested at {episode.requested_at}; waiting for it", "requested"
        )
    if rows < needed:
        return StartCheck(False, f"deferred: {head}; {rows:,} so far", "deferred")
    start = check_start(dataclasses.replace(state, last_retrain_clock=None), config, "event")
    if not start.allowed:
        return start
    return StartCheck(True, f"refresh of settling {since}: {rows:,} labelled post-change rows (>= {needed:,}); {start.reason}")


def check_start(state: LoopState, config: RetrainPolicyConfig, trigger: str = "event") -> StartCheck:
    """May a retrain started by `trigger` go now? The one start rule of the loop: the monitor
    applies it to an alert, the retrain flow to its run, the backtest to both.

    - `manual`: always (a person asked; `check_new_data` still refuses a duplicate);
    - `event` (an alert): a candidate under review, the cooldown, the budget per period and
      new labelled data (`no_new_data`, then `min_new_rows`), in that order;
    - `schedule`: the same without the cooldown (the schedule is its own cadence).

    Checks whose inputs are None in `state` are not known to apply (no version yet)."""
    if trigger == "manual":
        return StartCheck(True, "manual retrain: no start check applies")
    if state.candidate_pending:
        what = state.pending_reason or "a retrained version is still under review"
        return StartCheck(False, f"candidate_pending: {what}; retrain after its review", "candidate_pending")
    done: list[str] = []
    if trigger == "event":
        cooling = _check_cooldown(state, config, done)
        if cooling is not None:
            return cooling
    if state.retrains_in_period is not None:
        if state.retrains_in_period >= config.max_retrains_per_period:
            return StartCheck(
                False,
                f"budget: {state.retrains_in_period} retrains in the last {config.period_days} days of data "
                f"(retrain.max_retrains_per_period={config.max_retrains_per_period})",
                "budget",
            )
        done.append(
            f"{state.retrains_in_period} of {config.max_retrains_per_period} retrains used in {config.period_days} days"
        )
    if state.new_labelled_rows is not None:
        if state.new_labelled_rows == 0:
            return StartCheck(False, _no_new_data_reason(state), "no_new_data")
        if state.new_labelled_rows < config.min_new_rows:
            return StartCheck(
                False,
                f"min_new_rows: only {state.new_labelled_rows} labelled rows newer than the newest version's "
                f"training data (retrain.min_new_rows={config.min_new_rows})",
                "min_new_rows",
            )
        done.append(f"{state.new_labelled_rows}+ new labelled rows")
    return StartCheck(True, f"{trigger} retrain: " + (", ".join(done) or "no start check applies"))


def _check_cooldown(state: LoopState, config: RetrainPolicyConfig, done: list[str]) -> StartCheck | None:
    """The cooldown in the configured unit: hours of data or batches received since the
    newest version was trained. None when it has passed (or is not known to apply)."""
    unit = config.cooldown_unit
    if unit is None or state.last_retrain_clock is None:
        return None
    kind, size = unit
    if kind == "batches":
        since = state.chunks_since_retrain
        if since is None:
            return None
        if since < size:
            return StartCheck(
                False,
                f"cooldown: {since} batch(es) received since the newest version was trained "
                f"(< retrain.cooldown_batches={size:g}); next retrain after {int(size) - since} more batch(es)",
                "cooldown",
            )
        done.append(f"{since} batch(es) since the last retrain")
        return None
    if state.now is None:
        return None
    hours = (utc(state.now) - utc(state.last_retrain_clock)) / pd.Timedelta(hours=1)
    if hours < size:
        resume = utc(state.last_retrain_clock) + pd.Timedelta(hours=size)
        return StartCheck(
            False,
            f"cooldown: {hours:.0f} h of data since the newest version was trained "
            f"(< retrain.cooldown_hours={size:g}); next retrain from data time {resume}",
            "cooldown",
        )
    done.append(f"{hours:.0f} h of data since the last retrain")
    return None


def _no_new_data_reason(state: LoopState) -> str:
    who = f"v{state.newest_version}" if state.newest_version else "the newest version"
    until = f" (its window ends at {utc(state.seen_until)})" if state.seen_until is not None else ""
    return (
        f"no_new_data: no labelled production row is newer than the training data of {who}{until}; "
        "a retrain now would learn from the same rows. It can start once labels of newer batches "
        "arrive (data.label_delay_days after their batch); a manual retrain still runs (for changed "
        "training settings) but registers nothing on identical data"
    )


@dataclass(frozen=True)
class TrainedVersion:
    """What a registered version was trained on: its dataset digest and (when recorded) the
    digest of its training settings."""

    version: str
    dataset_digest: str | None
    settings_digest: str | None = None
    role: str = "newest version"


def check_new_data(dataset_digest: str, settings_digest: str, versions: Sequence[TrainedVersion]) -> StartCheck:
    """After the snapshot: is this window worth training? Not when a registered version
    (the newest, the champion) was trained on the same data with the same settings: the
    retrain would register a duplicate of it (`same_data`). A version without recorded
    settings is a duplicate on the data alone."""
    for known in versions:
        if known.dataset_digest != dataset_digest:
            continue
        if known.settings_digest is not None and known.settings_digest != settings_digest:
            continue
        return StartCheck(
            False,
            f"same_data: the training window is the data v{known.version} ({known.role}) was trained on "
            f"(dataset digest {dataset_digest[:12]}), with the same training settings; a retrain would "
            f"register a duplicate of v{known.version}. Nothing is registered; the next retrain differs "
            "once newer labelled batches arrive or the training settings change",
            "same_data",
        )
    return StartCheck(True, "the training window differs from every registered version's data")


def decide_start(state: LoopState, policy: Policy, trigger: str) -> StartCheck:
    """The retrain flow's start check for `policy`: the configured policy applies
    `check_start`; the backtest's baselines (`always`, `schedule:K`) retrain whenever they
    are triggered, and `never` never does."""
    if policy.kind == "never" and trigger != "manual":
        return StartCheck(False, "policy never: the first model serves forever", "no_alert")
    if policy.kind in ("always", "schedule"):
        # As often as the loop allows: not over a canary under review (a new challenger
        # would replace it before its review could decide, and no model would ever serve).
        if state.candidate_pending:
            what = state.pending_reason or "a retrained version is still under review"
            return StartCheck(False, f"candidate_pending: {what}; retrain after its review", "candidate_pending")
        return StartCheck(True, f"policy {policy.name}: retrain when triggered")
    if trigger == "event" and state.episode is not None and state.episode.open:
        # Started by the episode's request: its own rules, without counting the request.
        return decide_episode_retrain(state, policy.config, requested_counts=False)
    return check_start(state, policy.config, trigger)


def history_of(
    decisions: Sequence[PolicyDecision | Sequence[str]], config: RetrainPolicyConfig
) -> tuple[tuple[str, ...], ...]:
    """The hysteresis history (the last N - 1 entries) from earlier decisions or fired lists."""
    keep = max(config.hysteresis_n - 1, 0)
    if keep == 0:
        return ()
    items = [tuple(d.fired) if isinstance(d, PolicyDecision) else tuple(d) for d in decisions]
    return tuple(items[-keep:])


def _episode_events(
    observation: ChunkObservation, step: EpisodeStep, signals: list[AlertSignal], hysteresis: str, policy: Policy
) -> dict[str, dict[str, Any]]:
    """The events one chunk calls for: an alert event per kind the episode announces (when
    it opens or escalates; the payloads of `AlertDecision.event_payloads`) and
    `evergreen.episode.closed` when it ends. Nothing while it merely continues."""
    out: dict[str, dict[str, Any]] = {}
    alerts = observation.alerts
    if step.announce and alerts is not None and step.episode is not None:
        kept = dataclasses.replace(
            alerts,
            signals=signals,
            reasons=[s.reason for s in signals],
            drift_detected=any(s.kind in ("feature_drift", "multivariate_drift") for s in signals),
            performance_degraded=any(s.kind in ("estimated_drop", "realized_drop") for s in signals),
        )
        wanted = {"drift": names.DRIFT_DETECTED, "performance": names.PERFORMANCE_DEGRADED}
        keep = {wanted[k] for k in step.announce}
        episode = _episode_info(step.episode, step.transition)
        for name, payload in kept.event_payloads().items():
            if name in keep:
                out[name] = {**payload, "hysteresis": hysteresis, "policy": policy.name, "episode": episode}
    if step.closed is not None:
        closed = step.closed
        out[names.EPISODE_CLOSED] = plain(
            {
                "episode": _episode_info(closed, "closed"),
                "reason": f"episode {closed.id} closed: {closed.closed_reason}",
                "kinds": list(closed.kinds),
                "last_alert": closed.last_alert,
            }
        )
    return out


def _episode_info(episode: Episode, transition: str) -> dict[str, Any]:
    return plain(
        {
            "id": episode.id,
            "transition": transition,
            "change_point": None if episode.change_point is None else episode.change_point.isoformat(),
            "kinds": list(episode.kinds),
            "champion": episode.champion,
        }
    )


def _request_payload(
    chunk: str, episode: Episode, rows: int | None, why: str, signals: str, observation: ChunkObservation
) -> dict[str, Any]:
    """`evergreen.retrain.requested`: what the retrain automation passes on."""
    metric = observation.alerts.metric if observation.alerts is not None else None
    return plain(
        {
            "chunk": chunk,
            "episode": _episode_info(episode, "retrain"),
            "post_change_rows": rows,
            "reason": f"{why}" + (f"; signals: {signals}" if signals else ""),
            "metric": metric,
        }
    )
