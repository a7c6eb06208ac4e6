"""One-off command latency: `evergreen monitor --config F --batch B` on one batch, from the
CLI process's start to its exit, handed to the warm runner (`evergreen server start`) and,
in the same run, cold in this process (Prefect's temporary server, every library imported).

`uv run python -m bench oneoff [--rows 5000] [--runs 5] [--cold-runs 3] [--out F.json]
[--markdown BENCHMARKS.md] [--keep]`

Set-up (not measured): the demo stream with `--rows` rows per daily batch under a scratch
folder, its config with absolute paths, `evergreen server start` there (a Prefect server and
the served deployments, schedules off). Each measured run is a fresh `evergreen monitor`
process on the next batch, warm and cold alternating; a warm run must say it was handed to
the served deployment. Per warm run, from the Prefect API: the runner's pick-up (run created
-> flow code running) and the flow run's own time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from evergreen.apps.services import executable, free_port, service_env

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 10.0
MARKERS = ("<!-- bench:oneoff:start -->", "<!-- bench:oneoff:end -->")
TABLE_ROW = "| one-off `evergreen monitor`, 5,000 rows |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench oneoff", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows per batch")
    parser.add_argument("--runs", type=int, default=5, help="warm runs (median over them)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold in-process runs, alternating with the warm ones")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--markdown", help="update the one-off section and summary row of this file (BENCHMARKS.md)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    command = "uv run python -m bench oneoff" + "".join(
        f" {flag} {value}"
        for flag, value, default in (
            ("--rows", args.rows, 5000), ("--runs", args.runs, 5), ("--cold-runs", args.cold_runs, 3),
            ("--markdown", args.markdown, None),
        )
        if value != default
    )
    result = run(args.rows, args.runs, args.cold_runs, keep=args.keep)
    result["command"] = command
    print(render(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        update_markdown(Path(args.markdown), result)
    return 0 if result["pass"] else 1


def run(rows: int, runs: int, cold_runs: int, keep: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="evergreen-oneoff-"))
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    # The children find no Prefect server but the one this benchmark starts.
    env = service_env()
    env.pop("PREFECT_API_URL", None)
    env.pop("EVERGREEN_SERVER_DIR", None)
    try:
        config_file = _prepare(workdir, rows, env)
        batches = sorted((workdir / "data" / "batches").glob("*.parquet"))
        if len(batches) < runs + cold_runs:
            raise RuntimeError(f"{len(batches)} batches of {rows} rows; need {runs + cold_runs}")
        started = time.monotonic()
        _cli(["server", "start", "--port", str(free_port()), "--no-schedules"], workdir, env, timeout=600)
        server_start = time.monotonic() - started
        stack = json.loads((workdir / ".evergreen" / "server" / "state.json").read_text())
        # Cold runs see no server: a folder without a recorded one.
        cold_env = {**env, "EVERGREEN_SERVER_DIR": str(workdir / "no-server")}
        warm: list[dict[str, Any]] = []
        cold: list[dict[str, Any]] = []
        order = _alternate(runs, cold_runs)  # warm, cold, warm, cold, ..., then the rest
        for kind, batch in zip(order, batches, strict=False):
            if kind == "warm":
                warm.append(_monitor(config_file, batch, workdir, env, expect_handoff=True))
            else:
                cold.append(_monitor(config_file, batch, workdir, cold_env, expect_handoff=False))
        _attach_flow_timings(warm, stack["api_url"])
        _cli(["server", "stop"], workdir, env, timeout=120)
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            subprocess.run([executable("evergreen"), "server", "stop"], cwd=workdir, env=env, capture_output=True, timeout=120)
            shutil.rmtree(workdir, ignore_errors=True)
    warm_median = statistics.median(r["seconds"] for r in warm)
    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": rows,
        "target_seconds": TARGET_SECONDS,
        "warm_median_seconds": round(warm_median, 2),
        "cold_median_seconds": round(statistics.median(r["seconds"] for r in cold), 2) if cold else None,
        "pickup_median_seconds": _median(warm, "pickup_seconds"),
        "flow_median_seconds": _median(warm, "flow_seconds"),
        "server_start_seconds": round(server_start, 1),
        "warm": warm,
        "cold": cold,
        "pass": warm_median < TARGET_SECONDS,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - began, 1),
    }


def _alternate(warm: int, cold: int) -> list[str]:
    order: list[str] = []
    while warm or cold:
        if warm:
            order.append("warm")
            warm -= 1
        if cold:
            order.append("cold")
            cold -= 1
    return order


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run([executable("evergreen"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"evergreen {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _prepare(workdir: Path, rows: int, env: dict[str, str]) -> Path:
    """The demo config on the scratch folder (absolute paths, `rows` per batch) and its stream."""
    raw = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    raw["data"]["root"] = str(workdir / "data")
    raw["data"]["rows_per_batch"] = rows
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{workdir / 'mlflow.db'}"
    raw["mlflow"]["artifact_root"] = str(workdir / "mlartifacts")
    config_file = workdir / "model.yaml"
    config_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    _cli(["stream", "--config", str(config_file), "--out", str(workdir / "data")], workdir, env, timeout=600)
    return config_file


def _monitor(config_file: Path, batch: Path, cwd: Path, env: dict[str, str], expect_handoff: bool) -> dict[str, Any]:
    """One `evergreen monitor` process, timed from its start to its exit."""
    out = cwd / "results" / f"{batch.stem}.json"
    command = [executable("evergreen"), "monitor", "--config", str(config_file), "--batch", str(batch), "--out", str(out)]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    handed = re.search(r"handed to the served deployment \S+: flow run '([^']+)'", proc.stderr)
    if bool(handed) != expect_handoff:
        raise RuntimeError(f"expected the run {'handed to the runner' if expect_handoff else 'in process'}:\n{proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    return {
        "batch": batch.stem, "seconds": round(seconds, 2), "rows": result["rows"], "valid": result["valid"],
        "flow_run": handed.group(1) if handed else None,
    }


def _attach_flow_timings(runs: list[dict[str, Any]], api_url: str) -> None:
    """Per handed-off run: created -> running (the runner's pick-up and the fork) and the
    flow run's own time, from the Prefect API."""
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    names = [r["flow_run"] for r in runs]
    with get_client(sync_client=True) as client:
        found = {fr.name: fr for fr in client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names)))}
    for r in runs:
        fr = found.get(r["flow_run"])
        if fr is None or fr.start_time is None or fr.end_time is None:
            continue
        r["pickup_seconds"] = round((fr.start_time - fr.created).total_seconds(), 2)
        r["flow_seconds"] = round((fr.end_time - fr.start_time).total_seconds(), 2)


def render(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section's figures, terse."""
    warm = ", ".join(f"{r['seconds']:.1f}" for r in result["warm"])
    cold = ", ".join(f"{r['seconds']:.1f}" for r in result["cold"]) or "-"
    verdict = "pass" if result["pass"] else "**fail**"
    return (
        f"Measured {result['measured_at']}, `{result.get('command', 'uv run python -m bench oneoff')}` "
        f"(load {result['load_before']} / {result['load_after']}): warm **{result['warm_median_seconds']:.2f} s** "
        f"median (< {TARGET_SECONDS:.0f} s: {verdict}; runs {warm}; pick-up {result['pickup_median_seconds']} s, "
        f"flow run {result['flow_median_seconds']} s); cold {result['cold_median_seconds']} s ({cold})."
    )


def update_markdown(path: Path, result: dict[str, Any]) -> None:
    """Replace the section between the markers and the summary table's row."""
    text = path.read_text(encoding="utf-8")
    start, end = MARKERS
    section = f"{start}\n{render(result)}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## One-off commands\n\n{section}\n"
    verdict = "pass" if result["pass"] else "**fail**"
    row = f"{TABLE_ROW} < {TARGET_SECONDS:.0f} s, warm runner | {result['warm_median_seconds']:.1f} s (cold {result['cold_median_seconds']:.0f} s): {verdict} |"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(TABLE_ROW):
            lines[i] = row
            break
    else:
        last = max(i for i, line in enumerate(lines[:40]) if line.startswith("| "))
        lines.insert(last + 1, row)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
