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
ALL_STREAMS = ("demo", *SCENARIOS)


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


def write_demo(root: str):  # noqa: ANN201 - (ModelConfig, StreamInfo)
    """The car-loan demo stream: covariate drift injected from day 10 (as `evergreen demo`)."""
    from evergreen.config import load_config
    from evergreen.simulation.stream import write_demo_stream

    cfg = load_config(REPO_ROOT / "configs" / "demo.yaml")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": root})})
    info = write_demo_stream(cfg, root, drift="covariate", drift_start=10)
    return cfg, info


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
    return StreamFigures(
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
    "mean_vs_always": 0.99,
    "retrains_vs_always": 0.3,
    "false_alarms": 0,
    "detection_delay": 2,
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
            f"Synthetic streams: {s['chunks']} daily chunks x {s['rows']:,} rows, change injected at chunk "
            f"{s['drift_start']}; demo: the car-loan stream of `evergreen demo` (covariate drift from day 10). "
            f"Machine: {m['nproc']} CPUs, load average {m['load_before']} before / {m.get('load_after')} after "
            f"(shared with other jobs); run took {acceptance['seconds'] / 60:.0f} min.",
            "",
            "| stream | drift | chunks | shift cost (first model) | default mean | always mean | never mean | mean / always | "
            "retrains default / always / schedule:7 | retrains / always | first alert after change | first retrain after change | false alarms | promotions / rollbacks |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for f in acceptance["figures"]:
            lines.append(
                f"| {f['stream']} | {f['drift']} | {f['chunks']} x {f['rows_per_chunk']:,} | {_pts(f['shift_cost'])} | "
                f"{_f(f['default_mean'])} | {_f(f['always_mean'])} | {_f(f['never_mean'])} | **{_f(f['mean_vs_always'])}** | "
                f"{f['default_retrains']} / {f['always_retrains']} / {f['schedule_retrains']} | **{_f(f['retrains_vs_always'], 2)}** | "
                f"{_chunks(f['alert_delay'])} | {_chunks(f['detection_delay'])} | "
                f"{'**' + str(f['false_alarms']) + '**' if f['false_alarms'] is not None else '—'} | {f['promotions']} / {f['rollbacks']} |"
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
    means = [(f["stream"], f["mean_vs_always"]) for f in figs if f["mean_vs_always"] is not None]
    worst = min(means, key=lambda x: x[1]) if means else None
    if worst:
        ok = all(v >= TARGETS["mean_vs_always"] for _, v in means)
        out.append(
            f"- mean realized metric >= 0.99 x always on every stream: **{'pass' if ok else 'fail'}** (lowest {worst[1]:.4f}, {worst[0]})"
        )
    ratios = [
        (f["stream"], f["retrains_vs_always"]) for f in figs if f["retrains_vs_always"] is not None
    ]
    if ratios:
        top = max(ratios, key=lambda x: x[1])
        ok = all(v <= TARGETS["retrains_vs_always"] for _, v in ratios)
        out.append(
            f"- retrains <= 0.3 x always on every stream: **{'pass' if ok else 'fail'}** (highest {top[1]:.2f}, {top[0]})"
        )
    none = [f for f in figs if f["false_alarms"] is not None]
    for f in none:
        ok = f["false_alarms"] == 0
        out.append(
            f"- zero retrains on the no-drift stream: **{'pass' if ok else 'fail'}** ({f['false_alarms']} retrains, {f['chunks']} chunks)"
        )
    for f in figs:
        if f["stream"] == "abrupt":
            cost_ok = f["shift_cost"] is not None and f["shift_cost"] >= TARGETS["shift_cost"]
            det = f["detection_delay"]
            ok = cost_ok and det is not None and det <= TARGETS["detection_delay"]
            out.append(
                f"- detection within 2 chunks of an abrupt shift costing >= 2 points: **{'pass' if ok else 'fail'}** "
                f"(the shift costs the first model {_pts(f['shift_cost'])}; first alert {_chunks(f['alert_delay'])}, "
                f"first retrain {_chunks(det)} after the change)"
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
