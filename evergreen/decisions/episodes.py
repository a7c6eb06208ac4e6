"""Alert episodes: one condition, one alert. A pure decision.

An episode opens on the first batch whose configured signals pass the hysteresis (the
policy's alert): that batch marks when the change began (its first timestamp is the
episode's change point, from which labelled rows count as post-change evidence), or the
earlier batch whose late labels showed the realized drop that fired (`policy.change_began`). While it
is open, further alerting batches only escalate it when a new kind shows (drift, then
performance, or the reverse); quiet batches count towards its end, and
`retrain.episode_quiet_batches` quiet batches in a row close it. A new champion closes it
too (alerts afterwards are about another model): a later alert opens a new episode,
unless the new champion is the episode's own retrain and `retrain.settle_growth` is set. Then
the episode *settles*: the replacement learned the new world from its first labelled days,
and a refresh follows once the post-change labelled rows have grown `settle_growth` times;
after a refresh (promoted: the episode settles on it; or rejected), the next waits for
`retrain.evidence_growth` times its rows (`policy.settle_needed`). The episode ends when the
next refresh would need more post-change rows than the window of its model holds from
production batches: that window was the new world's already (`policy.refresh_rows`). Quiet
batches do not end a settling episode: the new champion's reference is the new world, so
quiet is what it should see.

While it waits for its retrain, the episode keeps the realized metric of its champion on each
post-change batch whose labels arrive (`Episode.realized`, pooled by `realized_effect`): its
first retrain waits until they show the change's effect (`policy.decide_episode_retrain`).

The monitor emits one event when an episode opens (per kind: `evergreen.drift.detected`,
`evergreen.performance.degraded`), one when it escalates (the new kind's event) and
`evergreen.episode.closed` when it ends, never one per batch. The episode is kept in the
batch ledger (`adapters.ledger.BatchLedger.episode`), so the monitor, the retrain's start
check and the backtest read the same one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, NamedTuple

DRIFT, PERFORMANCE = "drift", "performance"
Transition = Literal["opened", "escalated", "continued", "quiet", "settling", "closed", "none"]


class RealizedBatch(NamedTuple):
    """One post-change batch's realized metric of the episode's champion: how much worse than
    its reference (metric units, worse-positive), its sampling error and the labelled rows."""

    batch: str
    rows: int
    worse_by: float
    error: float | None


@dataclass(frozen=True)
class RealizedEffect:
    """The change's effect on the champion over an episode's post-change batches: the
    row-weighted mean of how much worse than its reference its realized metric is (negative:
    better), and the sampling error of that mean (the batches' errors pooled as independent;
    None when no batch had one)."""

    batches: int
    rows: int
    worse_by: float
    error: float | None

    def shown(self, sigmas: float) -> bool:
        """Away from the reference, either way, by more than `sigmas` sampling errors (by
        anything, when the error is not known or `sigmas` is 0)."""
        return abs(self.worse_by) > sigmas * (self.error or 0.0)


@dataclass(frozen=True)
class Episode:
    """One alert episode of a model.

    `id`: the day (batch id) it opened; `change_point`: the first timestamp of that batch;
    `champion`: the version serving when it opened; `kinds`: drift and/or performance;
    `quiet`: quiet batches in a row since the last alerting one; `requested`: post-change
    labelled rows when a retrain was last requested for it (None: never); `settling_from`:
    once its own retrain replaced the champion, the post-change rows that retrain had (None:
    not settling); `refreshed`: its refreshes that became champion (it settles on each);
    `realized`: the realized metric of its champion on post-change batches, as their labels
    arrived (`RealizedBatch`; `realized_effect` pools them)."""

    id: str
    change_point: datetime | None
    champion: str | None
    kinds: tuple[str, ...]
    last_alert: str
    quiet: int = 0
    open: bool = True
    closed_reason: str = ""
    requested: int | None = None
    requested_at: str | None = None
    settling_from: int | None = None
    refreshed: int = 0
    realized: tuple[RealizedBatch, ...] = ()

    @property
    def settling(self) -> bool:
        return self.settling_from is not None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "change_point": None if self.change_point is None else self.change_point.isoformat(),
            "champion": self.champion,
            "kinds": list(self.kinds),
            "last_alert": self.last_alert,
            "quiet": self.quiet,
            "open": self.open,
            "closed_reason": self.closed_reason,
            "requested": self.requested,
            "requested_at": self.requested_at,
            "settling_from": self.settling_from,
            "refreshed": self.refreshed,
            "realized": [list(r) for r in self.realized],
        }

    @classmethod
    def from_dict(cls, raw: dict | None) -> Episode | None:
        if not raw:
            return None
        from evergreen.times import utc

        point = raw.get("change_point")
        return cls(
            id=str(raw["id"]),
            change_point=None if point is None else utc(point).to_pydatetime(),
            champion=raw.get("champion"),
            kinds=tuple(raw.get("kinds") or ()),
            last_alert=str(raw.get("last_alert") or raw["id"]),
            quiet=int(raw.get("quiet") or 0),
            open=bool(raw.get("open", True)),
            closed_reason=str(raw.get("closed_reason") or ""),
            requested=raw.get("requested"),
            requested_at=raw.get("requested_at"),
            settling_from=raw.get("settling_from"),
            refreshed=int(raw.get("refreshed") or 0),
            realized=tuple(RealizedBatch(*r) for r in raw.get("realized") or ()),
        )


@dataclass(frozen=True)
class EpisodeStep:
    """What one batch did to the episode: the episode after it (None: none ever opened),
    the transition, the kinds it newly announced and, when it closed one, the closed one."""

    episode: Episode | None
    transition: Transition
    announce: tuple[str, ...] = ()
    closed: Episode | None = None
    reasons: list[str] = field(default_factory=list)


def kinds_of(signals: list[str]) -> tuple[str, ...]:
    """The episode kinds of the policy signals that fired (drift before performance)."""
    kinds = []
    if any(s in ("feature_drift", "multivariate_drift") for s in signals):
        kinds.append(DRIFT)
    if any(s in ("estimated_drop", "realized_drop") for s in signals):
        kinds.append(PERFORMANCE)
    return tuple(kinds)


def advance_episode(
    episode: Episode | None,
    day: str,
    alert: bool,
    signals: list[str],
    champion: str | None,
    change_point: datetime | None,
    quiet_to_close: int,
    settle_rows: int | None = None,
    settled: str = "",
    began: str | None = None,
) -> EpisodeStep:
    """The episode after one valid, monitored batch `day` (`alert`: the policy's signals
    held by the hysteresis; `signals`: those that fired; `champion`: the version serving;
    `change_point`: when the change began, the first timestamp of batch `began` (default
    `day`; `policy.change_began`)). `settle_rows`: the new champion is the
    episode's own retrain (or its refresh), trained with that many post-change rows, and the
    episode settles (on it; None: a new champion ends it); `settled`: why a settling episode's
    settling ends ("" while it goes on)."""
    closed: Episode | None = None
    reasons: list[str] = []
    if episode is not None and episode.open and episode.settling and settled:
        closed = replace(episode, open=False, closed_reason=f"settled: {settled}")
        reasons.append(f"episode {episode.id} closed: {closed.closed_reason}")
        episode = closed
    elif episode is not None and episode.open and episode.champion != champion:
        if settle_rows is not None:
            refreshed = episode.refreshed + (1 if episode.settling else 0)
            after = replace(episode, champion=champion, settling_from=settle_rows, refreshed=refreshed, quiet=0)
            what = "refresh" if episode.settling else "retrain"
            reasons.append(
                f"episode {episode.id} settling: its {what} v{champion} replaced v{episode.champion} "
                f"(trained with {settle_rows:,} post-change rows); a refresh follows as the new world's labels grow"
            )
            return EpisodeStep(after, "settling", reasons=reasons)
        closed = replace(episode, open=False, closed_reason=f"champion replaced: v{episode.champion} -> v{champion}")
        reasons.append(f"episode {episode.id} closed: {closed.closed_reason}")
        episode = closed
    kinds = kinds_of(signals) if alert else ()
    if episode is None or not episode.open:
        if not alert:
            return EpisodeStep(episode, "closed" if closed else "none", closed=closed, reasons=reasons)
        opened = Episode(id=day, change_point=change_point, champion=champion, kinds=kinds, last_alert=day)
        reasons.append(f"episode {day} opened ({', '.join(kinds)}): the change began with batch {began or day}")
        return EpisodeStep(opened, "opened", announce=kinds, closed=closed, reasons=reasons)
    if alert:
        new = tuple(k for k in kinds if k not in episode.kinds)
        after = replace(episode, kinds=episode.kinds + new, last_alert=day, quiet=0)
        if new:
            reasons.append(f"episode {episode.id} escalated: {', '.join(new)} too")
            return EpisodeStep(after, "escalated", announce=new, reasons=reasons)
        return EpisodeStep(after, "continued", reasons=reasons)
    quiet = episode.quiet + 1
    if quiet >= quiet_to_close and not episode.settling:
        ended = replace(episode, quiet=quiet, open=False, closed_reason=f"{quiet} quiet batch(es) in a row")
        reasons.append(f"episode {episode.id} closed: {ended.closed_reason}")
        return EpisodeStep(ended, "closed", closed=ended, reasons=reasons)
    return EpisodeStep(replace(episode, quiet=quiet), "quiet", reasons=reasons)


def with_realized(episode: Episode, batch: RealizedBatch) -> Episode:
    """The episode with one more post-change batch's realized metric of its champion (a batch
    already counted is replaced: its labels may have grown)."""
    kept = tuple(r for r in episode.realized if r.batch != batch.batch)
    return replace(episode, realized=(*kept, batch))


def realized_effect(episode: Episode) -> RealizedEffect | None:
    """The change's effect on the champion's realized metric, pooled over the episode's
    post-change batches (None: no batch's labels have arrived, or none could be scored)."""
    batches = [r for r in episode.realized if r.rows > 0]
    if not batches:
        return None
    rows = sum(r.rows for r in batches)
    worse_by = sum(r.rows * r.worse_by for r in batches) / rows
    errors = [r.rows * r.error for r in batches if r.error is not None]
    error = (sum(e * e for e in errors) ** 0.5 / sum(r.rows for r in batches if r.error is not None)) if errors else None
    return RealizedEffect(len(batches), rows, worse_by, error)


def with_request(episode: Episode, post_change_rows: int, when: str) -> Episode:
    """The episode once a retrain was requested for it on `post_change_rows` rows."""
    return replace(episode, requested=post_change_rows, requested_at=when)
