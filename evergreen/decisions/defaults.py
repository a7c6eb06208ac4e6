"""Config defaults chosen from a stream's cadence and batch size: a pure decision.

`defaults_for(cadence, rows_per_batch, label_delay, reference_rows)` returns the retrain
window, cooldown and budget, the gate's and the canary's minimums and the monitoring chunk
size, each with a one-line reason (`StreamDefaults`); `evergreen init` writes them into a
config and prints each guess with its reason. `StreamDefaults.as_config()` gives the nested
mapping to merge into a config.

The rules come from what each setting is for, not from one dataset (BENCHMARKS.md,
"Defaults that fit the data"):

- window: as many labelled rows as the reference (so recent data weighs as much in a
  retrain as the data the first model learned from), between 2,000 and 50,000 rows,
  in whole batches; at least 3 batches (one odd batch never makes a model), at most a
  year of batches (older data describes a world that has moved);
- cooldown: the label delay plus a quarter of the window, in batches: a retrain waits
  until a quarter of its window is new labelled data;
- new rows: at least one batch of new labelled rows;
- budget: 4 retrains per 4 cooldowns (at least 30 days): about one per cooldown, whatever
  triggers them (a schedule does not wait for the cooldown);
- gate: two batches of labelled rows, at least 30 (a smaller sample's sampling error
  exceeds any margin worth gating on) and at most 500 (more is used when there is, up to
  `gate.evaluation_rows`); the gate's bootstrap interval widens with fewer rows, so a gate
  on few rows passes only a clearly better challenger;
- canary: one batch of canary traffic (`canary.traffic_share` of a batch) served and
  labelled, at least 30 and at most 500 predictions / 200 labels; its review window the
  batches that take plus the label delay;
- monitoring chunks: a batch is one chunk (thresholds are calibrated on reference chunks of
  a batch's size, or a tenth of the reference when it is smaller).

`gate_min_rows(config)` and `canary_config(config)` resolve the minimums a config leaves
unset (None) from `data.rows_per_batch` with the same rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from evergreen.config import CanaryConfig, ModelConfig

MIN_WINDOW_ROWS = 2_000
MAX_WINDOW_ROWS = 50_000
MIN_WINDOW_BATCHES = 3
MAX_WINDOW_SPAN = timedelta(days=365)
RETRAINS_PER_PERIOD = 4
MIN_PERIOD_DAYS = 30
MIN_SAMPLE_ROWS = 30
"""Below this many rows a metric's sampling error exceeds any margin worth deciding on."""
GATE_BATCHES = 2
MAX_GATE_ROWS = 500
MAX_CANARY_PREDICTIONS = 500
MAX_CANARY_LABELS = 200
DEFAULT_TRAFFIC_SHARE = 0.2


class DefaultsError(ValueError):
    """Stream figures the defaults cannot be chosen from; the message names the figure."""


@dataclass(frozen=True)
class Choice:
    """One chosen setting: its dotted config field, its value and why."""

    field: str
    value: Any
    reason: str


@dataclass(frozen=True)
class StreamDefaults:
    """The settings chosen for a stream (in config order) and the figures they came from."""

    cadence: timedelta
    rows_per_batch: int
    label_delay: timedelta | None
    reference_rows: int
    choices: tuple[Choice, ...]

    def value(self, field: str) -> Any:
        """The value chosen for a dotted field, e.g. `retrain.window_batches`."""
        return self._choice(field).value

    def reason(self, field: str) -> str:
        """Why that value."""
        return self._choice(field).reason

    def as_config(self) -> dict[str, dict[str, Any]]:
        """The choices as a nested config mapping ({"retrain": {"window_batches": 6, ...}})."""
        out: dict[str, dict[str, Any]] = {}
        for choice in self.choices:
            section, _, name = choice.field.partition(".")
            out.setdefault(section, {})[name] = choice.value
        return out

    def lines(self) -> list[str]:
        """One line per choice, `field: value  # reason`, for printing."""
        return [f"{c.field}: {_show(c.value)}  # {c.reason}" for c in self.choices]

    def _choice(self, field: str) -> Choice:
        for choice in self.choices:
            if choice.field == field:
                return choice
        raise KeyError(f"no default chosen for {field!r}; chosen: {[c.field for c in self.choices]}")


def defaults_for(
    cadence: timedelta,
    rows_per_batch: int,
    label_delay: timedelta | None,
    reference_rows: int,
    traffic_share: float = DEFAULT_TRAFFIC_SHARE,
) -> StreamDefaults:
    """The config defaults for a stream whose batches arrive every `cadence` with about
    `rows_per_batch` rows, whose labels arrive `label_delay` after their batch (None: not
    known; one batch is assumed), with a labelled reference of `reference_rows` rows.
    `traffic_share` is the canary's share of the traffic."""
    _check(cadence, rows_per_batch, label_delay, reference_rows, traffic_share)
    n, every = rows_per_batch, _describe(cadence)
    choices: list[Choice] = []

    def choose(field: str, value: Any, reason: str) -> None:
        choices.append(Choice(field, value, reason))

    delay_batches, delay_why = _delay_batches(cadence, label_delay)
    choose("data.rows_per_batch", n, f"batches hold about {n:,} rows; the gate and canary minimums scale with it")
    assumed = label_delay if label_delay is not None else cadence * delay_batches
    delay_days = math.ceil(assumed / timedelta(days=1))
    choose("data.label_delay_days", delay_days, delay_why)

    window, window_why = _window_batches(cadence, n, reference_rows)
    choose("retrain.window", "sliding", "retrain on the recent data plus the reference")
    choose("retrain.window_batches", window, window_why)
    cooldown = delay_batches + max(1, math.ceil(window / 4))
    choose(
        "retrain.cooldown_batches",
        cooldown,
        f"{delay_batches} batch(es) of label delay + a quarter of the {window}-batch window: a retrain waits "
        f"until a quarter of its window is new labelled data ({_describe(cadence * cooldown)})",
    )
    choose("retrain.min_new_rows", n, "at least one new labelled batch before a retrain")
    period = max(MIN_PERIOD_DAYS, math.ceil(RETRAINS_PER_PERIOD * cooldown * cadence / timedelta(days=1)))
    choose(
        "retrain.period_days",
        period,
        f"the budget's period: {RETRAINS_PER_PERIOD} cooldowns, at least {MIN_PERIOD_DAYS} days",
    )
    choose(
        "retrain.max_retrains_per_period",
        RETRAINS_PER_PERIOD,
        "about one retrain per cooldown, whatever triggers it (a schedule does not wait for the cooldown)",
    )

    gate_rows = _gate_min_rows(n)
    choose("gate.min_rows", gate_rows, _gate_reason(n, gate_rows))

    predictions, labels = _canary_minimums(n, traffic_share)
    per_batch = max(traffic_share * n, 1.0)
    choose(
        "canary.min_predictions",
        predictions,
        f"one batch of canary traffic ({CANARY_BATCH_SHARE:.0%} of {traffic_share:.0%} of {n:,} rows: the hash split varies), "
        f"at least {MIN_SAMPLE_ROWS}, "
        f"at most {MAX_CANARY_PREDICTIONS}",
    )
    choose(
        "canary.min_labels",
        labels,
        f"that traffic once labelled, at least {MIN_SAMPLE_ROWS}, at most {MAX_CANARY_LABELS}",
    )
    batches_needed = math.ceil(max(predictions, labels) / per_batch) + delay_batches
    hours = max(24.0, batches_needed * cadence / timedelta(hours=1))
    choose(
        "canary.window_hours",
        round(hours, 1),
        f"{batches_needed} batch(es) ({every} each): enough canary traffic for its minimums, plus the label "
        "delay; at least 24 hours",
    )
    choose(
        "monitoring.chunk_size",
        None,
        "each batch is one chunk; drift thresholds come from reference chunks of a batch's size"
        + (
            f" (a tenth of the reference, {reference_rows // 10:,} rows, where the reference holds fewer than 10 batches)"
            if reference_rows // 10 < n
            else ""
        ),
    )
    return StreamDefaults(cadence, n, label_delay, reference_rows, tuple(choices))


def gate_min_rows(config: ModelConfig) -> int:
    """The fewest fresh labelled rows the gate judges on: `gate.min_rows`, or (None) two
    batches of `data.rows_per_batch`, between 30 and 500."""
    given = config.gate.min_rows
    return given if given is not None else _gate_min_rows(config.data.rows_per_batch)


def canary_config(config: ModelConfig) -> CanaryConfig:
    """`canary` with the minimums it leaves unset (None) derived from `data.rows_per_batch`
    and `canary.traffic_share`: one batch of canary traffic."""
    c = config.canary
    predictions, labels = _canary_minimums(config.data.rows_per_batch, c.traffic_share)
    return c.model_copy(
        update={
            "min_predictions": c.min_predictions if c.min_predictions is not None else predictions,
            "min_labels": c.min_labels if c.min_labels is not None else labels,
        }
    )


def gate_shortfall(rows: int, config: ModelConfig) -> str | None:
    """Why the gate cannot judge on `rows` fresh labelled rows, with what the user can change
    or how long to wait (None: it can)."""
    need = gate_min_rows(config)
    if rows >= need:
        return None
    n, delay = config.data.rows_per_batch, config.data.label_delay_days
    origin = (
        "gate.min_rows"
        if config.gate.min_rows is not None
        else f"gate.min_rows, derived from data.rows_per_batch={n:,}"
    )
    more = math.ceil((need - rows) / n)
    wait = (
        f"wait for about {more} more labelled batch(es) (labels arrive data.label_delay_days={delay} "
        "day(s) after their batch)"
    )
    lower = (
        f", or set gate.min_rows: {rows} (fewer rows widen the gate's bootstrap interval: only a clearly "
        "better challenger passes)"
        if rows >= MIN_SAMPLE_ROWS
        else f"; fewer than {MIN_SAMPLE_ROWS} rows cannot show a difference worth gating on"
    )
    return f"only {rows} fresh labelled rows; the gate needs {need} ({origin}): {wait}{lower}"


def canary_wait(config: ModelConfig, predictions: int, labels: int) -> str:
    """How long more canary evidence takes at the stream's pace ('' when none is missing)."""
    missing = max(predictions, labels)
    if missing <= 0:
        return ""
    per_batch = max(config.canary.traffic_share * config.data.rows_per_batch, 1.0)
    batches = math.ceil(missing / per_batch)
    return (
        f"at about {per_batch:,.0f} canary predictions per batch (canary.traffic_share "
        f"{config.canary.traffic_share:.0%} of data.rows_per_batch={config.data.rows_per_batch:,}) that is about "
        f"{batches} more batch(es)"
        + (f", plus data.label_delay_days={config.data.label_delay_days} for their labels" if labels > 0 else "")
        + "; or lower canary.min_predictions / canary.min_labels"
    )


# --------------------------------------------------------------------------- the rules


def _gate_min_rows(rows_per_batch: int) -> int:
    return min(max(GATE_BATCHES * rows_per_batch, MIN_SAMPLE_ROWS), MAX_GATE_ROWS)


def _gate_reason(n: int, chosen: int) -> str:
    return (
        f"two batches of labelled rows ({GATE_BATCHES} x {n:,}) kept within {MIN_SAMPLE_ROWS}-{MAX_GATE_ROWS}: "
        f"{chosen:,} rows, about {math.ceil(chosen / n)} batch(es); more are used when there are "
        "(gate.evaluation_rows). Fewer rows widen the gate's bootstrap interval, so only a clearly better "
        "challenger passes"
    )


CANARY_BATCH_SHARE = 0.8
"""The canary's minimums are this share of one batch's canary traffic: ids are hashed to the
canary, so one batch sends it a little more or a little less than `traffic_share` of its rows."""


def _canary_minimums(rows_per_batch: int, traffic_share: float) -> tuple[int, int]:
    per_batch = math.ceil(round(max(CANARY_BATCH_SHARE * traffic_share * rows_per_batch, 1.0), 6))
    predictions = min(max(per_batch, MIN_SAMPLE_ROWS), MAX_CANARY_PREDICTIONS)
    labels = min(max(per_batch, MIN_SAMPLE_ROWS), MAX_CANARY_LABELS)
    return predictions, labels


def _window_batches(cadence: timedelta, n: int, reference_rows: int) -> tuple[int, str]:
    target = min(max(reference_rows, MIN_WINDOW_ROWS), MAX_WINDOW_ROWS)
    wanted = max(math.ceil(target / n), MIN_WINDOW_BATCHES)
    span_cap = max(math.floor(MAX_WINDOW_SPAN / cadence), MIN_WINDOW_BATCHES)
    batches = min(wanted, span_cap)
    why = (
        f"{batches} batches ({_describe(cadence * batches)}, about {batches * n:,} labelled rows): as many as the "
        f"reference ({reference_rows:,} rows, kept within {MIN_WINDOW_ROWS:,}-{MAX_WINDOW_ROWS:,}), at least "
        f"{MIN_WINDOW_BATCHES} batches"
    )
    if wanted > span_cap:
        why += f"; capped at a year of data ({target:,} rows would take {wanted} batches)"
    return batches, why


def _delay_batches(cadence: timedelta, label_delay: timedelta | None) -> tuple[int, str]:
    if label_delay is None:
        return 1, "label delay unknown: one batch is assumed (set data.label_delay_days when you know it)"
    batches = math.ceil(label_delay / cadence) if label_delay > timedelta(0) else 0
    return batches, f"labels arrive about {_describe(label_delay)} after their batch ({batches} batch(es))"


def _check(
    cadence: timedelta, rows: int, delay: timedelta | None, reference_rows: int, share: float
) -> None:
    problems = []
    if cadence <= timedelta(0):
        problems.append(f"cadence must be positive, got {cadence}")
    if rows < 1:
        problems.append(f"rows_per_batch must be at least 1, got {rows}")
    if delay is not None and delay < timedelta(0):
        problems.append(f"label_delay must not be negative, got {delay}")
    if reference_rows < 0:
        problems.append(f"reference_rows must not be negative, got {reference_rows}")
    if not 0 < share <= 1:
        problems.append(f"traffic_share must be within (0, 1], got {share}")
    if problems:
        raise DefaultsError("cannot choose defaults: " + "; ".join(problems))


def _describe(span: timedelta) -> str:
    """'1 day', '7 days', '6 hours', '30 minutes': the largest whole-ish unit."""
    seconds = span.total_seconds()
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            value = seconds / size
            text = f"{value:g}" if value == int(value) else f"{value:.1f}"
            return f"{text} {unit}{'' if value == 1 else 's'}"
    return f"{seconds:g} seconds"


def _show(value: Any) -> str:
    return "null" if value is None else str(value)
