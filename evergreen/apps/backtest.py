"""The backtest: replay a labelled stream chunk by chunk through the loop production runs.

For each policy (the named ones plus the baselines `never`, `always`, `schedule:K`) the
stream is replayed from the same start by `evergreen.simulation.replay`: the very step
functions the flows run (`evergreen.loop`: monitor, retrain, gate, canary review, rollback),
on a fresh in-memory set of ports (`adapters.wiring.memory_ports`: the file code on fsspec's
`memory://`, an in-memory registry, event sink and run log), on the replay's clock. Labels
arrive as their files are dated (`data.label_delay_days` after their batch in a written
stream); the scoring service's routing splits each chunk between `champion` and `canary`;
`prefect.yaml`'s automations start the retrain on an alert event, the gate on a registered
version, the review while a canary serves, a verified rollback on a performance alert within
a day of a promotion. The first model is a manual retrain on the reference.

This module only keeps the score: per chunk what the monitor found and what the steps did,
and the realized metric of what was served (every row's label, once known). Nothing here
decides or implements a step; `tests/flows/test_differential.py` checks that the real flows,
driven the same way, decide alike on every chunk.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evergreen.adapters import io
from evergreen.config import ModelConfig
from evergreen.decisions import policy
from evergreen.decisions.evaluation import (
    lower_is_better,
    metric_value,
    served_scores,
    target_values,
)
from evergreen.jsonable import plain

BASELINES = ("never", "always", "schedule")
ACTOR = "evergreen-backtest"


class BacktestError(ValueError):
    """A stream or setting the backtest cannot replay; the message names it."""


# ----------------------------------------------------------------------------- the stream


@dataclass
class ReplayStream:
    """A labelled stream held in memory: chunks in time order and the label of every row.

    `targets[i]` is aligned with `batches[i]` (NaN where no label ever arrives);
    `reveal[i]` is the index of the first chunk at which chunk i's labels are known.
    """

    days: list[str]
    batches: list[pd.DataFrame]
    targets: list[np.ndarray]
    reveal: list[int]
    reference: pd.DataFrame
    label_files: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.batches)


def load_stream(config: ModelConfig, max_chunks: int | None = None) -> ReplayStream:
    """Read the stream under `data.root`: the training reference, the batch files in day
    order and every labels file (joined on id)."""
    cols = config.columns
    ref_path = config.data.path("training_reference")
    if not io.exists(ref_path):
        raise BacktestError(
            f"training reference {ref_path} not found: write a stream with "
            "`evergreen stream --config FILE --out DIR` and pass --data-root DIR"
        )
    files = io.list_batches(config.data.path("batches"))
    if max_chunks is not None:
        files = files[:max_chunks]
    if not files:
        raise BacktestError(
            f"no batch files under {config.data.path('batches')}; nothing to replay"
        )
    labels = io.read_labels(config.data.path("labels"))
    if labels is None or not len(labels):
        raise BacktestError(
            f"no labels under {config.data.path('labels')}: the backtest measures realized "
            "performance and retrains on labels"
        )
    missing = [c for c in (cols.id, cols.target) if c not in labels.columns]
    if missing:
        raise BacktestError(f"labels lack column(s) {missing}")
    by_id = labels.drop_duplicates(subset=cols.id, keep="last").set_index(cols.id)[cols.target]
    keep = [cols.id, cols.timestamp, *cols.features]
    batches, targets = [], []
    for f in files:
        frame = io.read_table(f.path)
        absent = [c for c in keep if c not in frame.columns]
        if absent:
            raise BacktestError(f"batch {f.path} lacks column(s) {absent}")
        frame = frame[keep].copy()
        frame[cols.timestamp] = pd.to_datetime(frame[cols.timestamp])
        batches.append(frame.reset_index(drop=True))
        targets.append(target_values(frame[cols.id].map(by_id), config, f"labels of batch {f.path}"))
    days = [f.day for f in files]
    info_path = f"{config.data.root.rstrip('/')}/stream.json"
    return ReplayStream(
        days=days,
        batches=batches,
        targets=targets,
        reveal=_reveal_indices(days, config.data.label_delay_days),
        reference=io.read_table(ref_path),
        label_files=[(f.day, io.read_table(f.path)) for f in io.list_batches(config.data.path("labels"))],
        info=io.read_json(info_path, default={}) or {},
    )


def _reveal_indices(days: list[str], delay: int) -> list[int]:
    """Chunk i's labels arrive on day(i) + delay: the first chunk on or after that day
    (len(days) when it is past the end). Non-date names count one chunk per day."""
    try:
        dates = [date.fromisoformat(d) for d in days]
    except ValueError:
        return [i + delay for i in range(len(days))]
    out = []
    for d in dates:
        due = d + timedelta(days=delay)
        out.append(next((k for k, other in enumerate(dates) if other >= due), len(dates)))
    return out


# ----------------------------------------------------------------------------- results


@dataclass
class ChunkRow:
    """One chunk of one policy's replay (the JSON `chunks` entries)."""

    index: int
    chunk: str
    start: str | None
    end: str | None
    rows: int
    serving_version: str
    valid: bool
    validation: str
    drifted_features: list[str]
    drifted_share: float | None
    multivariate: dict[str, Any] | None
    estimated_metric: float | None
    realized_metric: float | None
    realized_signal: dict[str, Any] | None
    fired: list[str]
    alert: bool
    events: list[str]
    decision: str
    reason: str
    actions: list[str] = field(default_factory=list)
    canary_version: str | None = None
    trigger: str | None = None
    gate: str | None = None
    retrained_version: str | None = None
    promoted: bool = False
    rolled_back: bool = False
    seconds: float = 0.0
    episode: str | None = None  # what the chunk did to the alert episode: opened, escalated, quiet, closed...


@dataclass
class PolicyResult:
    """One policy's replay: the summary figures and every chunk."""

    name: str
    settings: dict[str, Any]
    mean_metric: float | None
    worst_metric: float | None
    retrains: int
    promotions: int
    rollbacks: int
    gate_failures: int
    rejected_windows: int
    alerts: int
    wall_seconds: float
    seconds_by_step: dict[str, float]
    chunks: list[ChunkRow]

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))


@dataclass
class BacktestResult:
    """Every policy's replay of one stream, plus what was replayed."""

    model: str
    metric: str
    higher_is_better: bool
    stream: dict[str, Any]
    policies: dict[str, PolicyResult]
    seconds: float
    setup_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "model": self.model,
                "metric": self.metric,
                "higher_is_better": self.higher_is_better,
                "stream": self.stream,
                "seconds": round(self.seconds, 2),
                "setup_seconds": round(self.setup_seconds, 2),
                "policies": {name: r.to_dict() for name, r in self.policies.items()},
            }
        )


# ----------------------------------------------------------------------------- one policy


class TimedRunner:
    """Plain calls (`loop.runner.DirectRunner`), timed per part name."""

    def __init__(self) -> None:
        from evergreen.loop.runner import DirectRunner

        self._direct = DirectRunner()
        self.seconds: dict[str, float] = {}

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return call

    def part(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False, **kwargs: Any) -> Any:
        return self._timed(name, fn)(*args, **kwargs)

    def submit(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False, **kwargs: Any) -> Any:
        return self._direct.submit(name, self._timed(name, fn), *args, **kwargs)

    def log(self, message: str, *args: Any, level: str = "info") -> None:
        pass


def replay_policy(config: ModelConfig, stream: ReplayStream, pol: policy.Policy, log: Callable[[str], None]) -> PolicyResult:
    """One policy's replay on a fresh in-memory set of ports."""
    from evergreen.adapters.wiring import in_memory, memory_ports
    from evergreen.loop.common import Actor
    from evergreen.simulation.replay import Chunk, Replay, StepLoop, copy_references

    began = time.perf_counter()
    cfg = in_memory(config, prefix=f"backtest-{_slug(pol.name)}")
    copy_references(config, cfg)
    clock = {"now": pd.Timestamp(stream.batches[0][cfg.columns.timestamp].min(), tz="UTC")}
    ports = memory_ports(cfg, clock=lambda: clock["now"].to_pydatetime())
    runner = TimedRunner()
    loop = StepLoop(ports, cfg, run=runner, actor=Actor(ACTOR))

    def set_clock(ts: pd.Timestamp) -> None:
        clock["now"] = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    replay = Replay(cfg, ports, loop, stream.label_files, pol, set_clock, now=lambda: clock["now"])
    try:
        replay.bootstrap()
    except RuntimeError as exc:
        raise BacktestError(str(exc)) from None
    rows: list[ChunkRow] = []
    counts = dict.fromkeys(("retrains", "promotions", "rollbacks", "gate_failures", "rejected_windows", "alerts"), 0)
    n = len(stream.days)
    for i, day in enumerate(stream.days):
        t = time.perf_counter()
        outcome = replay.step(i, Chunk(day, stream.batches[i]))
        row = _row(cfg, stream, i, outcome, counts)
        row.seconds = round(time.perf_counter() - t, 3)
        rows.append(row)
        if (i + 1) % 10 == 0 or i == n - 1:
            log(f"  {pol.name}: chunk {i + 1}/{n} ({day}), {counts['retrains']} retrain(s), {time.perf_counter() - began:.0f} s")
    realized = [r.realized_metric for r in rows if r.realized_metric is not None]
    worst = (max if lower_is_better(cfg.metric) else min)(realized) if realized else None
    return PolicyResult(
        name=pol.name,
        settings=pol.settings(),
        mean_metric=float(np.mean(realized)) if realized else None,
        worst_metric=worst,
        wall_seconds=round(time.perf_counter() - began, 2),
        seconds_by_step={k: round(v, 2) for k, v in sorted(runner.seconds.items())},
        chunks=rows,
        **counts,
    )


def _row(cfg: ModelConfig, stream: ReplayStream, i: int, outcome: Any, counts: dict[str, int]) -> ChunkRow:
    """The chunk's row: the monitor's findings, what the steps did, the served metric."""
    cols, m = cfg.columns, outcome.monitor
    served = outcome.served
    y = stream.targets[i]
    labelled = ~np.isnan(y)
    realized = _metric(y[labelled], served_scores(served, cfg)[labelled], cfg) if labelled.any() else None
    drifted = [name for name, f in m.features.items() if f.get("alert")]
    actions: list[str] = []
    row = ChunkRow(
        index=i,
        chunk=outcome.day,
        start=_iso(stream.batches[i][cols.timestamp].min()),
        end=_iso(stream.batches[i][cols.timestamp].max()),
        rows=len(stream.batches[i]),
        serving_version=outcome.champion,
        canary_version=outcome.canary,
        valid=m.valid,
        validation="" if m.valid else m.message,
        drifted_features=drifted,
        drifted_share=(len(drifted) / max(len(m.features), 1)) if m.valid else None,
        multivariate=(
            {k: m.multivariate.get(k) for k in ("value", "upper", "alert")} if m.multivariate else None
        ),
        estimated_metric=m.estimated_metric,
        realized_metric=realized,
        realized_signal={"value": m.realized_metric, "chunk": m.realized_on} if m.realized_metric is not None else None,
        fired=list(m.signals),
        alert=m.alert,
        events=sorted(m.events),
        decision=m.decision,
        reason=m.policy or m.message,
        actions=actions,
        episode=(m.episode or {}).get("transition"),
    )
    counts["alerts"] += int(m.alert)
    if outcome.review is not None and outcome.review.decision in ("promoted", "rolled_back"):
        if outcome.review.decision == "promoted":
            counts["promotions"] += 1
            row.promoted = True
            actions.append(f"review promoted v{outcome.review.champion}: {outcome.review.reasons[0]}")
        else:
            counts["rollbacks"] += 1
            row.rolled_back = True
            actions.append(f"review rolled v{outcome.canary or '?'} back: {outcome.review.reasons[0]}")
    r = outcome.retrain
    if r is not None:
        row.trigger = outcome.trigger
        row.decision = "retrain" if r.status != "skipped" else (r.blocked_by or "skipped")
        row.reason = r.message
        if r.status == "registered":
            counts["retrains"] += 1
            row.retrained_version = r.version
            actions.append(f"retrained v{r.version} on {r.rows:,} rows")
        elif r.status == "rejected":
            counts["rejected_windows"] += 1
            actions.append(f"training window rejected: {r.message}")
    g = outcome.gate
    if g is not None:
        row.gate = g.decision
        if g.decision == "passed":
            actions.append(f"gate passed: v{g.canary} serves {cfg.canary.traffic_share:.0%} as canary")
        elif g.decision == "failed":
            counts["gate_failures"] += 1
            actions.append(f"gate failed: {'; '.join(g.reasons)}")
    if outcome.rollback is not None and outcome.rollback.decision == "rolled_back":
        counts["rollbacks"] += 1
        row.rolled_back = True
        actions.append(f"rollback to v{outcome.rollback.champion}: {outcome.rollback.reasons[0]}")
    return row


# ----------------------------------------------------------------------------- running


def run_backtest(
    config: ModelConfig,
    policies: Sequence[str] = ("default",),
    *,
    baselines: bool = True,
    max_chunks: int | None = None,
    check_latency: bool = False,
    log: Callable[[str], None] = print,
) -> BacktestResult:
    """Replay the stream under `config.data.root` for each policy (plus the baselines
    `never`, `always` and `schedule` unless `baselines` is False), each on its own
    in-memory ports: nothing is written to disk or to a server.

    The gate's latency check is off unless `check_latency`: latency belongs to the serving
    machine, and a replay that shares its machine with other work would measure that work
    (every other gate check applies as configured)."""
    began = time.perf_counter()
    if not check_latency:
        config = config.model_copy(
            update={"gate": config.gate.model_copy(update={"max_latency_ms": math.inf})}
        )
    names = list(dict.fromkeys([*policies, *(BASELINES if baselines else ())]))
    chosen = list({p.name: p for p in (policy.Policy.named(n, config.retrain) for n in names)}.values())
    stream = load_stream(config, max_chunks)
    log(
        f"backtest of {config.name}: {len(stream.days)} chunks ({stream.days[0]}..{stream.days[-1]}), "
        f"{stream.rows:,} rows, labels after {config.data.label_delay_days} day(s); "
        f"policies {[p.name for p in chosen]}"
    )
    if len(stream.reference) < 20:
        raise BacktestError(
            f"the training reference has {len(stream.reference)} rows; the first model needs more"
        )
    setup = time.perf_counter() - began
    results: dict[str, PolicyResult] = {}
    for p in chosen:
        log(f"replaying policy {p.name} ...")
        results[p.name] = replay_policy(config, stream, p, log)
    return BacktestResult(
        model=config.name,
        metric=config.metric,
        higher_is_better=config.higher_is_better,
        stream={
            "root": config.data.root,
            "chunks": len(stream.days),
            "first": stream.days[0],
            "last": stream.days[-1],
            "rows": stream.rows,
            "label_delay_days": config.data.label_delay_days,
            "label_delay_chunks": int(np.median([r - i for i, r in enumerate(stream.reveal) if r < len(stream.days)] or [0])),
            "reference_rows": len(stream.reference),
            "drift": stream.info.get("drift"),
            "drift_start": stream.info.get("drift_start_date"),
            "drift_start_index": stream.info.get("drift_start_index"),
            "gate_latency_checked": check_latency,
        },
        policies=results,
        seconds=time.perf_counter() - began,
        setup_seconds=setup,
    )


# ----------------------------------------------------------------------------- reporting


def format_table(result: BacktestResult) -> str:
    """The per-policy summary as a text table, read against the `always` baseline."""
    always = result.policies.get("always")
    head = f"{'policy':14} {'mean':>7} {'worst':>7} {'/always':>8} {'retrains':>8} {'/always':>8} {'promo':>5} {'rollbk':>6} {'alerts':>6} {'wall s':>7}"
    lines = [
        f"{result.model}: {result.metric} per chunk, {result.stream['chunks']} chunks",
        head,
        "-" * len(head),
    ]
    for r in result.policies.values():
        mean_ratio = _ratio(
            r.mean_metric, always.mean_metric if always else None, result.higher_is_better
        )
        retrain_ratio = (r.retrains / always.retrains) if always and always.retrains else None
        lines.append(
            f"{r.name:14} {_f(r.mean_metric):>7} {_f(r.worst_metric):>7} {_f(mean_ratio):>8} {r.retrains:>8} "
            f"{_f(retrain_ratio, 2):>8} {r.promotions:>5} {r.rollbacks:>6} {r.alerts:>6} {r.wall_seconds:>7.1f}"
        )
    return "\n".join(lines)


def plot(result: BacktestResult, path: str) -> None:
    """Realized (solid) and estimated (dashed) metric per chunk, one panel per policy;
    retrains as grey lines, promotions (a canary kept by its review) green, rollbacks as
    red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.policies)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.2 * n + 0.6), sharex=True, squeeze=False)
    start = result.stream.get("drift_start_index")
    for ax, r in zip(axes[:, 0], result.policies.values(), strict=True):
        x = [c.index for c in r.chunks]
        ax.plot(
            x,
            [c.realized_metric for c in r.chunks],
            color="tab:blue",
            lw=1.4,
            label=f"realized {result.metric}",
        )
        ax.plot(
            x,
            [c.estimated_metric for c in r.chunks],
            color="tab:orange",
            lw=1.0,
            ls="--",
            label=f"estimated {result.metric}",
        )
        for c in r.chunks:
            if c.retrained_version is not None:
                ax.axvline(c.index, color="0.6", lw=0.8, alpha=0.8)
            if c.promoted:
                ax.axvline(c.index, color="tab:green", lw=1.2, alpha=0.9)
            if c.rolled_back:
                ax.plot([c.index], [c.realized_metric], "x", color="tab:red", ms=8)
        if start is not None:
            ax.axvline(start, color="tab:red", ls=":", lw=1.0)
        ax.set_title(
            f"{r.name}: mean {_f(r.mean_metric)}, worst {_f(r.worst_metric)}, {r.retrains} retrains, "
            f"{r.promotions} promotions, {r.rollbacks} rollbacks",
            fontsize=9,
            loc="left",
        )
        ax.set_ylabel(result.metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower left", fontsize=8)
    axes[-1, 0].set_xlabel(
        "chunk (grey: retrains, green: promotions; dotted red: injected drift)"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- helpers


def _metric(y: np.ndarray, score: np.ndarray, config: ModelConfig) -> float | None:
    value = metric_value(y, score, config.problem_type, config.metric)
    return float(value) if value is not None and math.isfinite(value) else None


def _iso(value: Any) -> str:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _ratio(value: float | None, base: float | None, higher_is_better: bool) -> float | None:
    if value is None or not base:
        return None
    return value / base if higher_is_better else base / value


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
