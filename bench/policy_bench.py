"""The retrain-policy acceptance: backtests of the default policy against the baselines.

`uv run python -m bench policy [--chunks N] [--rows R] [--streams demo,abrupt,...]
[--out DIR] [--markdown BENCHMARKS.md]` writes each stream under DIR, runs
`evergreen.apps.backtest.run_backtest` on it (default policy + never, always, schedule:7) and
reports, for the default policy: mean realized metric / `always`, retrains / `always`,
detection delay after the injected change, false alarms on the no-drift stream, and the
cost of the injected shift (the first model's metric after vs before the change).

`uv run python -m bench policy --speed [--chunks 365 --rows 5000]` times the default
policy alone on a long stream (the speed target: 365 x 5,000 rows in under 10 minutes).

Streams: the car-loan demo stream (covariate drift from day 10, as `evergreen demo`), and
synthetic streams from `bench.common.synthetic_frame` (16 numeric + 4 categorical
features, a binary target from a known logit, i.i.d. over time) with the drift generator
(`evergreen.simulation.inject`): abrupt covariate shift, gradual covariate shift, concept drift and
none. Every stream is replayed with the same default policy (`retrain` and `monitoring`
sections at their defaults, as in configs/demo.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, machine_info, synthetic_config_base, synthetic_frame

SYNTHETIC_START = "2024-01-01"
# Generated blocks of BENCHMARKS.md: the acceptance figures and the speed run.
MARKS = {"acceptance": "bench:policy", "speed": "bench:policy-speed"}

# name -> (drift kind, generator parameters). The covariate shifts are "additive": the
# features move while the outcome keeps following the old values (a unit change or a
# re-coded source upstream), so the serving model's metric falls and only retraining on
# new labels recovers it. A resampling shift keeps P(y|x) and costs the metric little.
SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "abrupt": ("covariate", {"method": "additive", "strength": 2.0}),
    "gradual": ("gradual_covariate", {"method": "additive", "strength": 2.0, "ramp_days": 10}),
    "concept": ("concept", {}),
    "none": ("none", {}),
}
# Streams on which retraining pays (recovery target) and on which it cannot (never lose).
HELPS = ("abrupt", "gradual", "concept", "demo", "seasonal")
DOES_NOT_HELP = ("demo_covariate", "small_noisy")
ALL_STREAMS = ("demo", *SCENARIOS, "seasonal", "demo_covariate", "small_noisy")
SEASON_CHUNKS = 8  # the recurring stream: the shift is on for 8 chunks, off for 8, and so on


def synthetic_config(root: str, rows_per_batch: int, name: str = "synthetic"):  # noqa: ANN201 - ModelConfig
    """A model config for the synthetic stream: the default `retrain` and `monitoring`
    sections (the default policy), labels after 3 days like the demo, a modest boosting
    budget so that the `always` baseline stays affordable."""
    from evergreen.config import parse_config

    base = Path(root)
    return parse_config(
        {
            **synthetic_config_base(name, base),
            "data": {
                "root": str(base),
                "rows_per_batch": rows_per_batch,
                "label_delay_days": 3,
                "start_date": SYNTHETIC_START,
            },
            "training": {
                "seed": 42,
                "num_boost_round": 150,
                "early_stopping_rounds": 10,
                "nthread": 2,
                "params": {"max_depth": 5, "eta": 0.2, "subsample": 0.9, "colsample_bytree": 0.9},
            },
        }
    )


def write_synthetic_stream(
    root: str,
    chunks: int,
    rows: int,
    drift: str,
    drift_start: int | None,
    params: dict[str, Any] | None = None,
    seed: int = 11,
    reference_rows: int = 30_000,
):  # noqa: ANN201 - (ModelConfig, StreamInfo)
    """Write a synthetic stream of `chunks` daily batches of `rows` rows under `root`."""
    from evergreen.simulation.stream import write_stream_from_frames

    cfg = synthetic_config(root, rows)
    reference = synthetic_frame(reference_rows, seed, "2023-11-01", days=60)
    analysis = synthetic_frame(
        chunks * rows, seed + 1, SYNTHETIC_START, days=chunks, id_start=10_000_000
    )
    info = write_stream_from_frames(
        cfg,
        reference,
        analysis,
        root,
        drift=drift,
        drift_start=drift_start,
        seed=seed,
        drift_params=params or {},
    )
    return cfg, info


def write_demo(root: str, drift: str = "unit", drift_start: int = 8):  # noqa: ANN201 - (ModelConfig, StreamInfo)
    """The car-loan stream of `evergreen demo`: an upstream unit change from day 8 (`demo`),
    or the old demo's covariate resampling from day 10, which no retrain can fix
    (`demo_covariate`: the outcome keeps following the features)."""
    from evergreen.config import load_config
    from evergreen.simulation.stream import write_demo_stream

    cfg = load_config(REPO_ROOT / "configs" / "demo.yaml")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": root})})
    info = write_demo_stream(cfg, root, drift=drift, drift_start=drift_start)
    return cfg, info


def write_seasonal_stream(root: str, chunks: int, rows: int, drift_start: int, seed: int = 11):  # noqa: ANN201
    """A recurring change: from `drift_start` on, the top two features move by 2 standard
    deviations for SEASON_CHUNKS chunks, back for as many, and so on (the outcome keeps the
    unshifted values, as in `abrupt`): a world that alternates between two states."""
    import numpy as np

    from evergreen.simulation.stream import write_stream_from_frames

    cfg = synthetic_config(root, rows)
    reference = synthetic_frame(30_000, seed, "2023-11-01", days=60)
    analysis = synthetic_frame(chunks * rows, seed + 1, SYNTHETIC_START, days=chunks, id_start=10_000_000)
    chunk = np.arange(len(analysis)) // rows
    on = (chunk >= drift_start) & (((chunk - drift_start) // SEASON_CHUNKS) % 2 == 0)
    for name in ("num_00", "num_04"):
        analysis.loc[on, name] = analysis.loc[on, name] + 2.0 * reference[name].std()
    info = write_stream_from_frames(cfg, reference, analysis, root, drift="none", seed=seed)
    return cfg, _with_change(info, drift_start, "seasonal")


def write_small_noisy_stream(root: str, batches: int = 50, seed: int = 13):  # noqa: ANN201
    """Small noisy batches: 50 weekly batches of 25-200 rows (seeded), labels a week later,
    a 2,000-row reference and no change at all: any retrain chases noise."""
    import numpy as np
    import pandas as pd

    from evergreen.adapters import io
    from evergreen.config import parse_config

    rng = np.random.default_rng(seed)
    sizes = rng.integers(25, 201, batches)
    base = Path(root)
    reference = synthetic_frame(2_000, seed, "2023-06-01", days=180)
    analysis = synthetic_frame(int(sizes.sum()), seed + 1, SYNTHETIC_START, days=7 * batches, id_start=10_000_000)
    cfg = parse_config(
        {
            **synthetic_config_base("small-noisy", base),
            "data": {"root": str(base), "rows_per_batch": int(np.median(sizes)), "label_delay_days": 7,
                     "start_date": SYNTHETIC_START},
            "training": synthetic_config(root, 100).training.model_dump(),
        }
    )
    io.write_table(reference, cfg.data.path("training_reference"))
    cols = cfg.columns
    begin = 0
    days = []
    for i, n in enumerate(sizes):
        day = (pd.Timestamp(SYNTHETIC_START) + pd.Timedelta(weeks=i)).strftime("%Y-%m-%d")
        rows = analysis.iloc[begin : begin + int(n)].copy()
        begin += int(n)
        rows[cols.timestamp] = pd.Timestamp(day) + pd.to_timedelta(np.linspace(0, 6.9, len(rows)), unit="D")
        io.write_table(rows[[cols.id, cols.timestamp, *cols.features]], f"{cfg.data.path('batches')}/{day}.parquet")
        delivered = (pd.Timestamp(day) + pd.Timedelta(weeks=1)).strftime("%Y-%m-%d")
        io.write_table(rows[[cols.id, cols.target]], f"{cfg.data.path('labels')}/{delivered}.parquet")
        days.append(day)
    return cfg, _StreamInfo(drift="none", drift_start_index=None, rows_per_batch=int(np.median(sizes)), days=days)


@dataclass
class _StreamInfo:
    """What `figures` reads of a stream written here rather than by `evergreen.simulation.stream`."""

    drift: str
    drift_start_index: int | None
    rows_per_batch: int
    days: list[str]


def _with_change(info: Any, start: int, drift: str) -> _StreamInfo:
    return _StreamInfo(drift=drift, drift_start_index=start, rows_per_batch=info.rows_per_batch, days=list(info.days))


@dataclass
class StreamFigures:
    """The acceptance figures of the default policy on one stream."""

    stream: str
    drift: str
    chunks: int
    rows_per_chunk: int
    drift_start_index: int | None
    shift_cost: float | None  # first model (never): mean metric before - after the change
    default_mean: float | None
    always_mean: float | None
    never_mean: float | None
    schedule_mean: float | None
    mean_vs_always: float | None
    default_retrains: int
    always_retrains: int
    schedule_retrains: int
    retrains_vs_always: float | None
    detection_delay: int | None  # chunks from the change to the first retrain decision
    alert_delay: int | None  # chunks from the change to the first alert
    false_alarms: int | None  # no-drift stream: retrains of the default policy
    promotions: int
    rollbacks: int
    default_seconds: float
    backtest_seconds: float
    recovery: float | None = None  # (default - never) / (always - never) of the mean realized metric
    replaced_delay: int | None = None  # chunks from the change to the first promotion
    episodes: int = 0  # alert episodes the default policy's monitor opened
    label_delay: int | None = None  # chunks
    # Share of always's gain over never made before the change point: its retrains on larger
    # windows than the first model's training rows, which no policy that stays still without
    # an alert can have (a ceiling on `recovery` with `none`'s zero retrains).
    always_before_change: float | None = None


def figures(name: str, result: Any, info: Any) -> StreamFigures:
    """Read the acceptance figures off a backtest result."""
    pols = result.policies
    default, always, never = pols["default"], pols["always"], pols["never"]
    schedule = next(r for n, r in pols.items() if n.startswith("schedule"))
    start = info.drift_start_index
    cost = None
    if start is not None:
        before = [c.realized_metric for c in never.chunks[:start] if c.realized_metric is not None]
        after = [c.realized_metric for c in never.chunks[start:] if c.realized_metric is not None]
        if before and after:
            cost = sum(before) / len(before) - sum(after) / len(after)

    first_retrain = next(
        (c.index for c in default.chunks[start or 0 :] if c.decision == "retrain"), None
    )
    first_alert = next((c.index for c in default.chunks[start or 0 :] if c.alert), None)
    promoted = next((c.index for c in default.chunks[start or 0 :] if c.promoted), None)
    gap = (always.mean_metric or 0) - (never.mean_metric or 0)
    recovery = (
        ((default.mean_metric or 0) - (never.mean_metric or 0)) / gap if default.mean_metric and abs(gap) > 1e-9 else None
    )
    before_change = None
    if start is not None and abs(gap) > 1e-9:
        pairs = [
            (a.realized_metric, n.realized_metric)
            for a, n in zip(always.chunks, never.chunks, strict=True)
            if a.realized_metric is not None and n.realized_metric is not None
        ]
        whole = sum(a - n for a, n in pairs)
        early = sum(a - n for a, n in pairs[:start])
        before_change = early / whole if abs(whole) > 1e-9 else None
    return StreamFigures(
        recovery=recovery,
        always_before_change=before_change,
        replaced_delay=(promoted - start) if start is not None and promoted is not None else None,
        episodes=sum(1 for c in default.chunks if c.episode == "opened"),
        label_delay=result.stream.get("label_delay_chunks"),
        stream=name,
        drift=info.drift,
        chunks=len(default.chunks),
        rows_per_chunk=info.rows_per_batch,
        drift_start_index=start,
        shift_cost=cost,
        default_mean=default.mean_metric,
        always_mean=always.mean_metric,
        never_mean=never.mean_metric,
        schedule_mean=schedule.mean_metric,
        mean_vs_always=(default.mean_metric / always.mean_metric)
        if default.mean_metric and always.mean_metric
        else None,
        default_retrains=default.retrains,
        always_retrains=always.retrains,
        schedule_retrains=schedule.retrains,
        retrains_vs_always=(default.retrains / always.retrains) if always.retrains else None,
        detection_delay=(first_retrain - start)
        if start is not None and first_retrain is not None
        else None,
        alert_delay=(first_alert - start)
        if start is not None and first_alert is not None
        else None,
        false_alarms=default.retrains if info.drift == "none" else None,
        promotions=default.promotions,
        rollbacks=default.rollbacks,
        default_seconds=default.wall_seconds,
        backtest_seconds=round(result.seconds, 1),
    )


# ----------------------------------------------------------------------------- running


def write_stream(name: str, root: str, chunks: int, rows: int, drift_start: int):  # noqa: ANN201
    """Write one acceptance stream (see SCENARIOS) under `root`."""
    if name == "demo":
        return write_demo(root)
    if name == "demo_covariate":
        return write_demo(root, "covariate", 10)
    if name == "seasonal":
        return write_seasonal_stream(root, chunks, rows, drift_start)
    if name == "small_noisy":
        return write_small_noisy_stream(root)
    kind, params = SCENARIOS[name]
    return write_synthetic_stream(
        root, chunks, rows, kind, None if kind == "none" else drift_start, params
    )


def run_acceptance(
    streams: list[str],
    out_dir: Path,
    chunks: int,
    rows: int,
    drift_start: int,
    log=print,  # noqa: ANN001
) -> dict[str, Any]:
    """Write and replay each stream; returns the figures, the summaries and the machine."""
    from evergreen.apps.backtest import format_table, run_backtest

    machine = machine_info()
    began = time.perf_counter()
    rows_out: list[StreamFigures] = []
    tables: dict[str, str] = {}
    for name in streams:
        root = str(out_dir / name)
        log(f"== stream {name}: writing under {root}")
        cfg, info = write_stream(name, root, chunks, rows, drift_start)
        result = run_backtest(cfg, ["default"], log=log)
        (out_dir / f"{name}.backtest.json").write_text(
            json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8"
        )
        tables[name] = format_table(result)
        log(tables[name])
        fig = figures(name, result, info)
        log(json.dumps(asdict(fig)))
        rows_out.append(fig)
    machine = dataclass_replace_load_after(machine)
    return {
        "figures": [asdict(f) for f in rows_out],
        "tables": tables,
        "machine": asdict(machine),
        "seconds": round(time.perf_counter() - began, 1),
        "settings": {"chunks": chunks, "rows": rows, "drift_start": drift_start},
    }


def run_speed(out_dir: Path, chunks: int, rows: int, log=print) -> dict[str, Any]:  # noqa: ANN001
    """The default policy alone on a long synthetic stream (gradual covariate drift from the
    middle, so that the replay includes retrains): wall time of the whole backtest."""
    from evergreen.apps.backtest import run_backtest

    root = str(out_dir / "speed")
    started = time.perf_counter()
    cfg, info = write_synthetic_stream(
        root,
        chunks,
        rows,
        "gradual_covariate",
        chunks // 2,
        {"method": "additive", "strength": 2.0, "ramp_days": 10},
    )
    written = time.perf_counter() - started
    machine = machine_info()
    log(
        f"stream of {chunks} x {rows:,} rows written in {written:.0f} s; load {machine.load_before}"
    )
    began = time.perf_counter()
    cpu = os.times()
    result = run_backtest(cfg, ["default"], baselines=False, log=log)
    seconds = time.perf_counter() - began
    after = os.times()
    machine = dataclass_replace_load_after(machine)
    default = result.policies["default"]
    return {
        "chunks": chunks,
        "rows": rows,
        "seconds": round(seconds, 1),
        "setup_seconds": round(result.setup_seconds, 1),
        "replay_seconds": default.wall_seconds,
        "cpu_seconds_main": round((after.user - cpu.user) + (after.system - cpu.system), 1),
        "cpu_seconds_children": round(
            (after.children_user - cpu.children_user)
            + (after.children_system - cpu.children_system),
            1,
        ),
        "retrains": default.retrains,
        "promotions": default.promotions,
        "alerts": default.alerts,
        "mean_metric": default.mean_metric,
        "seconds_by_step": default.seconds_by_step,
        "stream_seconds": round(written, 1),
        "machine": asdict(machine),
    }


def dataclass_replace_load_after(machine: Any) -> Any:
    from bench.common import _with_load_after

    return _with_load_after(machine)


# ----------------------------------------------------------------------------- reporting

TARGETS = {
    "recovery": 0.90,  # streams where retraining helps
    "retrains_vs_always": 0.15,
    "never_margin": 0.001,  # streams where it does not: default >= never - 0.001
    "alert_delay": 1,  # abrupt change costing >= 2 points: first alert <= 1 chunk after it
    "replaced_after_delay": 3,  # ... champion replaced <= label delay + 3 chunks after it
    "shift_cost": 0.02,
}


def render_markdown(
    acceptance: dict[str, Any] | None,
    speed: dict[str, Any] | None,
    command: str,
    measured_at: str | None = None,
) -> str:
    """The generated part of BENCHMARKS.md's policy section."""
    when = measured_at or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    shown = command if "`" in command else f"`{command}`"
    lines = [f"Measured {when} with {shown}."]
    if acceptance:
        m = acceptance["machine"]
        s = acceptance["settings"]
        lines += [
            "",
            f"Synthetic streams: {s['chunks']} daily chunks x {s['rows']:,} rows, change at chunk {s['drift_start']}, "
            f"labels 3 days late; demo: `evergreen demo`'s unit change (day 8); demo_covariate: the old demo's "
            f"resampling drift (day 10); small_noisy: 50 weekly batches of 25-200 rows, no change. "
            f"{m['nproc']} CPUs, load {m['load_before']} before / {m.get('load_after')} after; "
            f"{acceptance['seconds'] / 60:.0f} min.",
            "",
            "| stream | shift cost | default / never / always / schedule:7 mean | recovery | always's gain before the change | "
            "retrains default / always | first alert | champion replaced | episodes | promotions / rollbacks |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for f in acceptance["figures"]:
            lines.append(
                f"| {f['stream']} | {_pts(f['shift_cost'])} | {_f(f['default_mean'])} / {_f(f['never_mean'])} / "
                f"{_f(f['always_mean'])} / {_f(f['schedule_mean'])} | **{_f(f.get('recovery'), 2)}** | "
                f"{_share(f.get('always_before_change'))} | {f['default_retrains']} / {f['always_retrains']} | {_chunks(f['alert_delay'])} | "
                f"{_chunks(f.get('replaced_delay'))} | {f.get('episodes', '—')} | {f['promotions']} / {f['rollbacks']} |"
            )
        lines += ["", *verdicts(acceptance["figures"])]
    if speed:
        m = speed["machine"]
        steps = ", ".join(
            f"{k} {v:.0f}"
            for k, v in sorted(speed["seconds_by_step"].items(), key=lambda kv: -kv[1])
            if v >= 5
        )
        lines += [
            "",
            f"**Speed**: the default policy alone on {speed['chunks']} chunks x {speed['rows']:,} rows "
            f"(synthetic, gradual covariate drift from the middle): **{speed['seconds'] / 60:.1f} min** for the whole "
            f"backtest ({speed['setup_seconds']:.0f} s start-up and bootstrap model, {speed['replay_seconds']:.0f} s replay; "
            f"{speed['retrains']} retrains, {speed['promotions']} promotions); target < 10 min: "
            f"**{'pass' if speed['seconds'] < 600 else 'fail'}**. CPU {speed['cpu_seconds_main']:.0f} s; load average "
            f"{m['load_before'][0]} before / {m.get('load_after', [None])[0]} after. Seconds by step part (>= 5 s): {steps}.",
        ]
    return "\n".join(lines)


def verdicts(figs: list[dict[str, Any]]) -> list[str]:
    """One line per acceptance target: pass/fail with the figures behind it."""
    out = []
    helps = [f for f in figs if f["stream"] in HELPS]
    if helps:
        low = [(f["stream"], f.get("recovery")) for f in helps]
        ok = all(r is not None and r >= TARGETS["recovery"] for _, r in low)
        shown = ", ".join(f"{n} {_f(r, 2)}" for n, r in low)
        out.append(f"- recovery >= {TARGETS['recovery']} where retraining helps: **{'pass' if ok else 'fail'}** ({shown})")
        ratios = [(f["stream"], f["retrains_vs_always"]) for f in helps if f["retrains_vs_always"] is not None]
        ok = all(v <= TARGETS["retrains_vs_always"] for _, v in ratios)
        top = max(ratios, key=lambda x: x[1]) if ratios else ("—", None)
        out.append(
            f"- retrains <= {TARGETS['retrains_vs_always']} x always: **{'pass' if ok else 'fail'}** (highest {_f(top[1], 2)}, {top[0]})"
        )
    for f in figs:
        if f["stream"] in DOES_NOT_HELP:
            d, n = f["default_mean"], f["never_mean"]
            ok = d is not None and n is not None and d >= n - TARGETS["never_margin"]
            out.append(f"- {f['stream']}: default >= never - 0.001: **{'pass' if ok else 'fail'}** ({_f(d)} vs {_f(n)})")
        if f["stream"] == "none":
            ok = f["default_retrains"] == 0 and f.get("episodes", 0) == 0
            out.append(
                f"- none: zero retrains, zero alert episodes: **{'pass' if ok else 'fail'}** "
                f"({f['default_retrains']} retrains, {f.get('episodes', 0)} episodes)"
            )
        if f["stream"] == "abrupt":
            cost_ok = f["shift_cost"] is not None and f["shift_cost"] >= TARGETS["shift_cost"]
            alert, replaced = f["alert_delay"], f.get("replaced_delay")
            delay = f.get("label_delay") or 3
            ok = (
                cost_ok and alert is not None and alert <= TARGETS["alert_delay"]
                and replaced is not None and replaced <= delay + TARGETS["replaced_after_delay"]
            )
            out.append(
                f"- abrupt (costs {_pts(f['shift_cost'])}): first alert <= 1 chunk, champion replaced <= label delay + 3 "
                f"= {delay + 3} chunks: **{'pass' if ok else 'fail'}** ({_chunks(alert)}, {_chunks(replaced)})"
            )
    return out


def merge_saved(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several saved runs as one (e.g. streams replayed by two processes side by side): the
    acceptance figures in stream order, the longest run time, the first machine record."""
    merged: dict[str, Any] = {}
    commands = []
    for run in runs:
        commands.append(run.get("command", ""))
        if run.get("speed"):
            merged["speed"] = run["speed"]
        acc = run.get("acceptance")
        if not acc:
            continue
        if "acceptance" not in merged:
            merged["acceptance"] = {**acc, "figures": [], "tables": {}}
        into = merged["acceptance"]
        into["figures"] += acc["figures"]
        into["tables"].update(acc["tables"])
        into["seconds"] = max(into["seconds"], acc["seconds"])
    if "acceptance" in merged:
        order = {name: i for i, name in enumerate(ALL_STREAMS)}
        merged["acceptance"]["figures"].sort(key=lambda f: order.get(f["stream"], len(order)))
    merged["command"] = " and ".join(f"`{c}`" if len(commands) > 1 else c for c in commands if c)
    stamps = [r["measured_at"] for r in runs if r.get("measured_at")]
    if stamps:
        merged["measured_at"] = max(stamps)
    return merged


def _f(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _pts(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} pts"


def _chunks(value: int | None) -> str:
    return "—" if value is None else f"{value} chunk{'s' if value != 1 else ''}"


def update_markdown(path: Path, block: str, kind: str) -> None:
    """Replace the generated `kind` block ("acceptance" or "speed") of the policy section in
    `path`; every other part of the file is left as it is."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = f"<!-- {MARKS[kind]}:start -->", f"<!-- {MARKS[kind]}:end -->"
    body = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + body + tail
    else:
        text = text.rstrip("\n") + f"\n\n## Retrain policy (backtest): {kind}\n\n{body}\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench policy", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--streams", default=",".join(ALL_STREAMS), help=f"comma-separated, from {ALL_STREAMS}"
    )
    parser.add_argument("--chunks", type=int, default=40, help="chunks of the synthetic streams")
    parser.add_argument(
        "--rows", type=int, default=2500, help="rows per chunk of the synthetic streams"
    )
    parser.add_argument(
        "--drift-start", type=int, default=14, help="chunk where the change is injected"
    )
    parser.add_argument(
        "--speed", action="store_true", help="time the default policy on a long stream instead"
    )
    parser.add_argument("--speed-chunks", type=int, default=365)
    parser.add_argument("--speed-rows", type=int, default=5000)
    parser.add_argument(
        "--out",
        default=None,
        help="folder for the streams and JSON results (default: a temporary one)",
    )
    parser.add_argument(
        "--markdown", help="update the policy section of this file (e.g. BENCHMARKS.md)"
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        help="measure nothing: render the results saved in these JSON files (merged)",
    )
    args = parser.parse_args(argv)
    streams = [s for s in args.streams.split(",") if s]
    unknown = [s for s in streams if s not in ALL_STREAMS]
    if unknown:
        parser.error(f"unknown stream(s) {unknown}; choose from {ALL_STREAMS}")

    from evergreen.telemetry import disable_telemetry

    disable_telemetry()
    if args.from_json:
        saved = merge_saved(
            [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.from_json]
        )
    else:
        import tempfile

        out_dir = (
            Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="evergreen-policy-bench-"))
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.speed:
            saved = {"speed": run_speed(out_dir, args.speed_chunks, args.speed_rows)}
            saved["command"] = (
                f"uv run python -m bench policy --speed --speed-chunks {args.speed_chunks} --speed-rows {args.speed_rows}"
            )
        else:
            saved = {
                "acceptance": run_acceptance(
                    streams, out_dir, args.chunks, args.rows, args.drift_start
                )
            }
            saved["command"] = (
                f"uv run python -m bench policy --streams {','.join(streams)} --chunks {args.chunks} "
                f"--rows {args.rows} --drift-start {args.drift_start}"
            )
        saved["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        name = "speed.json" if args.speed else "acceptance.json"
        (out_dir / name).write_text(
            json.dumps(saved, indent=1, default=str) + "\n", encoding="utf-8"
        )
        print(f"results: {out_dir / name}")
    command = saved.get("command", "uv run python -m bench policy")
    for kind in ("acceptance", "speed"):
        if saved.get(kind):
            block = render_markdown(
                saved.get("acceptance") if kind == "acceptance" else None,
                saved.get("speed") if kind == "speed" else None,
                command,
                saved.get("measured_at"),
            )
            print(block)
            if args.markdown:
                update_markdown(Path(args.markdown), block, kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
