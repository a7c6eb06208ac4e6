"""The loop's state for the retrain policy, read from the ports: one builder for the monitor
(which events to emit), the retrain flow (may it start) and the backtest (the same two, on a
replay clock). `evergreen.decisions.policy` decides on what this returns.

Time is the data's clock: the newest timestamp of the newest production batch, never the
wall clock, so a replay passes days in seconds and a cooldown still means hours of data.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from evergreen.adapters import io
from evergreen.adapters.ports import BatchStore, ModelRegistry
from evergreen.adapters.registry import CANARY, CHAMPION, VersionInfo
from evergreen.config import ModelConfig
from evergreen.decisions import policy
from evergreen.decisions.episodes import Episode
from evergreen.times import utc, utc_series

DATA_CLOCK_TAG = "evergreen.data_clock"
TRAIN_END_TAG = "evergreen.train_end"
WINDOW_END_TAG = "evergreen.window_end"
BOOTSTRAP_TAG = "evergreen.bootstrap"
EPISODE_TAG = "evergreen.episode"
EPISODE_PHASE_TAG = "evergreen.episode_phase"  # "settling": the refresh after the episode's replacement
CHANGE_POINT_TAG = "evergreen.change_point"
POST_CHANGE_ROWS_TAG = "evergreen.post_change_rows"
# An episode version's training window's rows from production batches (not the reference):
# a settling episode's refreshes stop past it (`policy.refresh_rows`)
WINDOW_BATCH_ROWS_TAG = "evergreen.window_batch_rows"


def data_clock(config: ModelConfig, store: BatchStore) -> pd.Timestamp | None:
    """Data time now: the newest timestamp of the newest readable production batch."""
    for batch in reversed(store.list_batches()):
        newest = _newest_stamp(config, store, batch)
        if newest is not None:
            return newest
    return None


def count_batches_after(config: ModelConfig, store: BatchStore, after: pd.Timestamp) -> int:
    """Production batches received since data time `after` (a version's data clock): those
    whose newest row is newer, counted from the newest batch back. Unreadable batches count
    (the monitor received them). Only the files' statistics are read where they have them."""
    cutoff = utc(after)
    count = 0
    for batch in reversed(store.list_batches()):
        if _named_before(batch.day, cutoff):
            break
        newest = _newest_stamp(config, store, batch)
        if newest is not None and newest <= cutoff:
            break  # batches are in day order: every older one is older still
        count += 1
    return count


def _newest_stamp(config: ModelConfig, store: BatchStore, batch: io.BatchFile) -> pd.Timestamp | None:
    ts = config.columns.timestamp
    newest = io.parquet_column_max(batch.path, ts)  # the file's statistics, when it has them
    if newest is not None:
        return utc(newest)
    try:
        stamps = store.read_batch(batch, columns=[ts])[ts]
    except (io.DataReadError, KeyError, ValueError):
        return None
    return utc(utc_series(stamps).max()) if len(stamps) else None


def build_loop_state(
    config: ModelConfig,
    store: BatchStore,
    registry: ModelRegistry,
    now: pd.Timestamp | None,
    day: str | None = None,
) -> policy.LoopState:
    """Everything `policy.decide` / `policy.check_start` need besides the observation.

    - `history`: the signals the ledger recorded for batches before `day` (all when None);
    - the newest registered version (any status) sets the cooldown's start (its data clock;
      with `retrain.cooldown_batches`, the batches received since) and the end of its
      window, after which labelled rows count as new;
    - the budget counts versions trained in the last `retrain.period_days` days of data
      (the first, bootstrap version does not count);
    - a `canary` alias means a candidate is still under review."""
    ledger = store.read_ledger()
    history = ledger.signals_before(day)
    versions = registry.list_versions()
    newest = versions[-1] if versions else None
    last_clock = _tag_time(newest, DATA_CLOCK_TAG)
    last_end = _tag_time(newest, TRAIN_END_TAG)
    # New rows are those the newest version's window did not hold (its evaluation slice
    # was in the window, though not trained on); versions without the tag: its training end.
    seen_until = _tag_time(newest, WINDOW_END_TAG) or last_end
    try:
        enough = max(config.retrain.min_new_rows, 1)
        new_rows = (
            count_labelled_rows_after(config, store, seen_until, enough, rejected=ledger.rejected())
            if seen_until is not None
            else None
        )
    except io.DataReadError:
        new_rows = None  # a labels file cannot be read: the retrain's labels check rejects it, naming it
    in_period = None
    if now is not None:
        since = utc(now) - pd.Timedelta(days=config.retrain.period_days)
        clocks = [_tag_time(v, DATA_CLOCK_TAG) for v in versions if v.tags.get(BOOTSTRAP_TAG) != "true"]
        in_period = sum(1 for c in clocks if c is not None and since < c <= utc(now))
    # Batches since the retrain are counted only for a cooldown in batches: it reads the
    # statistics of each newer batch file, on every monitored batch.
    cooldown = config.retrain.cooldown_unit
    since = (
        count_batches_after(config, store, last_clock)
        if last_clock is not None and cooldown is not None and cooldown[0] == "batches"
        else None
    )
    episode = Episode.from_dict(ledger.episode)
    champion = registry.version_by_alias(CHAMPION)
    post_change = None
    if episode is not None and episode.open and episode.change_point is not None:
        try:
            after = utc(episode.change_point) - pd.Timedelta(microseconds=1)
            post_change = count_labelled_rows_after(config, store, after, rejected=ledger.rejected())
        except io.DataReadError:
            post_change = None
    attempts = tuple(
        policy.Attempt(
            v.version, v.status, _tag_int(v, POST_CHANGE_ROWS_TAG), _tag_int(v, WINDOW_BATCH_ROWS_TAG)
        )
        for v in versions
        if episode is not None and v.tags.get(EPISODE_TAG) == episode.id
    )
    return policy.LoopState(
        champion=champion.version if champion is not None else None,
        episode=episode,
        post_change_rows=post_change,
        post_change_needed=post_change_needed(config),
        attempts=attempts,
        history=policy.history_of(history, config.retrain),
        now=now,
        last_retrain_clock=last_clock,
        last_train_end=last_end,
        newest_version=newest.version if newest is not None else None,
        seen_until=seen_until,
        new_labelled_rows=new_rows,
        chunks_since_retrain=since,
        retrains_in_period=in_period,
        candidate_pending=bool(pending := _pending(registry)),
        pending_reason=pending,
    )


def count_labelled_rows_after(
    config: ModelConfig,
    store: BatchStore,
    after: pd.Timestamp,
    enough: int | None = None,
    rejected: dict[str, str] | None = None,
) -> int:
    """Labelled rows delivered so far whose timestamp is newer than `after`, in batches the
    monitor did not reject, counted from the newest batch back; with `enough`, the count
    stops once it reaches that many (the start rule only asks whether there are enough).

    Only the id and timestamp columns of batches are read, batches named by a day before
    `after` not at all, and a batch's labels are looked up in the labels files delivered on
    or after its day (date-named files; any other name: every file)."""
    cols = config.columns
    rejected = store.read_ledger().rejected() if rejected is None else rejected
    cutoff = utc(after)
    files = store.list_label_files()
    dated = all(_is_day(f.day) for f in files)
    pending = sorted(files, key=lambda f: f.day) if dated else []
    known: set[Any] = set() if dated else _ids(store.read_labels(), cols.id)
    total = 0
    for batch in reversed(store.list_batches()):
        if _named_before(batch.day, cutoff):
            break  # batches are in day order: every older one is older still
        while pending and pending[-1].day >= batch.day:
            known |= _ids(store.read_label_file(pending.pop()), cols.id)
        if batch.day in rejected or not known:
            continue
        try:
            frame = store.read_batch(batch, columns=[cols.id, cols.timestamp])
        except (io.DataReadError, KeyError, ValueError):
            continue
        newer = (utc_series(frame[cols.timestamp]) > cutoff).to_numpy()
        total += int((frame[cols.id].isin(known).to_numpy() & newer).sum())
        if enough is not None and total >= enough:
            break
    return total


def _ids(frame: pd.DataFrame | None, column: str) -> set[Any]:
    return set() if frame is None or column not in frame else set(frame[column].dropna().tolist())


def _is_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _named_before(day: str, cutoff: pd.Timestamp) -> bool:
    """A batch named by its day (YYYY-MM-DD) holds no row newer than a cutoff on a later day."""
    try:
        return date.fromisoformat(day) < cutoff.date()
    except ValueError:
        return False


def _pending(registry: ModelRegistry) -> str:
    """A canary under review holds new retrains (a new challenger would race its review).
    A challenger waiting for its gate does not: the next registered version supersedes it."""
    canary = registry.version_by_alias(CANARY)
    return f"canary v{canary.version} is under review" if canary is not None else ""


def post_change_needed(config: ModelConfig) -> int:
    """Labelled post-change rows an episode's retrain waits for: `retrain.min_post_change_rows`,
    or twice the gate's minimum (half to learn the new world from, half for the gate), and at
    least two batches of `data.rows_per_batch`: the change point is the first alerting batch's
    start, but the change may begin anywhere inside that batch, so one batch can hold as much
    of the old world as of the new; two hold at least one whole batch of the new."""
    from evergreen.decisions.defaults import gate_min_rows

    given = config.retrain.min_post_change_rows
    return given if given is not None else max(2 * gate_min_rows(config), 2 * config.data.rows_per_batch)


def _tag_int(version: VersionInfo, tag: str) -> int | None:
    raw = version.tags.get(tag)
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def _tag_time(version: VersionInfo | None, tag: str) -> pd.Timestamp | None:
    raw = version.tags.get(tag) if version is not None else None
    if not raw:
        return None
    try:
        return utc(raw)
    except (ValueError, TypeError):
        return None
