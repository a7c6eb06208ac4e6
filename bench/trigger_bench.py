"""Event -> run latency: from `evergreen.retrain.requested` (what the monitor emits once an
alert episode's evidence is there) to the `retrain` flow run starting,
with the deployments served (`evergreen serve-flows`) and with a process work pool and
`prefect worker start`, on a real local Prefect server.

`uv run python -m bench trigger [--events N] [--out FILE.json] [--markdown BENCHMARKS.md]`

Set-up (not measured): a small demo stream, a bootstrapped champion, the config saved as the
`car-loan` block. Every measured event is a real retrain request for `evergreen.model.car-loan`;
the retrain deployment's automation creates the run, the runner or worker starts it, and the
run ends quickly as Skipped (the retrain cooldown: no new data since the champion was
trained), so the events can be spaced by one run each. Per event, from the event's
`occurred` time: the automation created the run (`created`), the runner/worker picked it up
(`Pending`), the flow code started (`Running`, the figure the target is about).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from evergreen.apps.services import (
    child_service,
    executable,
    free_port,
    prefect_server,
    served_flows,
    service_env,
)
from evergreen.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 2.0  # issue 20: median event -> Running in serve mode
MARKERS = ("<!-- bench:trigger:start -->", "<!-- bench:trigger:end -->")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench trigger", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=7, help="events per mode (median over them)")
    parser.add_argument("--modes", nargs="*", default=["serve", "worker"], choices=["serve", "worker"])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--markdown", help="update the trigger section of this file (e.g. BENCHMARKS.md)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    command = "uv run python -m bench trigger" + "".join(
        f" {flag} {value}" for flag, value in (("--events", args.events), ("--out", args.out), ("--markdown", args.markdown)) if value
    )
    result = run(args.events, args.modes, keep=args.keep)
    result["command"] = command
    print(render(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        update_markdown(Path(args.markdown), render(result))
    return 0


def run(events: int, modes: list[str], keep: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="evergreen-trigger-"))
    began = time.monotonic()
    load = os.getloadavg()[0]
    try:
        with prefect_server(workdir / "prefect") as api:
            os.environ["PREFECT_API_URL"] = api
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: api}):
                cfg = _prepare(workdir)
                results = {}
                for mode in modes:
                    with _executor(mode, workdir, api):
                        results[mode] = [_measure_one(cfg.name) for _ in range(events)]
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        mode: {key: round(statistics.median(r[key] for r in runs), 2) for key in ("created", "pending", "running")}
        for mode, runs in results.items()
    }
    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "events": events,
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - began),
        "median": summary,
        "runs": results,
    }


def _prepare(workdir: Path):  # noqa: ANN202 - ModelConfig
    """A small stream with every batch delivered and a champion trained on all of it."""
    from blocks.model_config import EvergreenModel, block_document_name
    from evergreen.simulation.stream import write_demo_stream
    from flows.retrain import retrain

    base = load_config(REPO_ROOT / "configs" / "demo.yaml")
    cfg = base.model_copy(
        update={
            "data": base.data.model_copy(update={"root": str(workdir / "data"), "rows_per_batch": 500}),
            "mlflow": base.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_root": str(workdir / "mlartifacts")}),
        }
    )
    write_demo_stream(cfg, cfg.data.root)
    state = retrain(config=cfg, trigger="manual", reason="bootstrap the trigger benchmark", return_state=True)
    assert state.is_completed(), state.message
    EvergreenModel.register_type_and_schema()
    EvergreenModel.from_config(cfg).save(block_document_name(cfg.name), overwrite=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    return cfg


@contextmanager
def _executor(mode: str, workdir: Path, api: str):  # noqa: ANN202
    env = {"PREFECT_API_URL": api}
    if mode == "serve":
        with served_flows(workdir / "serve-flows.log", only=["retrain"], extra_env=env):
            yield
        return
    subprocess.run([executable("prefect"), "work-pool", "create", "evergreen", "--type", "process", "--overwrite"], cwd=REPO_ROOT, env=service_env(env), check=True, capture_output=True)
    subprocess.run([executable("prefect"), "--no-prompt", "deploy", "--name", "retrain"], cwd=REPO_ROOT, env=service_env(env), check=True, capture_output=True)
    port = free_port()
    worker_env = service_env(
        {
            **env,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
            "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        }
    )
    command = [executable("prefect"), "worker", "start", "--pool", "evergreen", "--with-healthcheck"]
    with child_service(command, worker_env, workdir / "worker.log", f"http://127.0.0.1:{port}/health", 180):
        yield


def _measure_one(model: str, timeout: float = 300) -> dict[str, float]:
    """Emit one retrain request; wait for the retrain run it starts to finish; its timings."""
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event

    from evergreen.events import RETRAIN_REQUESTED, resource_id

    event = emit_event(
        RETRAIN_REQUESTED,
        resource={"prefect.resource.id": resource_id(model)},
        payload={"metric": "drifted_feature_share", "reason": "trigger benchmark"},
    )
    assert event is not None, "the event was not emitted"
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs() if (r.parameters or {}).get("event_id") == str(event.id)]
            if runs and runs[0].state is not None and runs[0].state.is_final():
                run = runs[0]
                states = {s.type.value: s.timestamp for s in client.read_flow_run_states(run.id)}
                occurred = event.occurred
                return {
                    "created": (run.created - occurred).total_seconds(),
                    "pending": (states["PENDING"] - occurred).total_seconds(),
                    "running": (states["RUNNING"] - occurred).total_seconds(),
                    "final_state": run.state.name,
                }
            time.sleep(0.5)
    raise TimeoutError(f"no finished retrain run for event {event.id} within {timeout} s")


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['measured_at']} with `{result.get('command', 'uv run python -m bench trigger')}` "
        f"({result['events']} events per mode; load average {result['load_before']} before / {result['load_after']} after; {result['seconds']} s).",
        "",
        "| mode | event -> run created (s) | -> picked up, Pending (s) | -> flow code running (s) | target (Running) | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for mode, m in result["median"].items():
        target = f"<= {TARGET_SECONDS:g}" if mode == "serve" else "—"
        verdict = ("pass" if m["running"] <= TARGET_SECONDS else "**fail**") if mode == "serve" else "info"
        lines.append(f"| {mode} | {m['created']:.2f} | {m['pending']:.2f} | {m['running']:.2f} | {target} | {verdict} |")
    spread = "; ".join(
        f"{mode} " + ", ".join(f"{r['running']:.1f}" for r in runs) for mode, runs in result["runs"].items()
    )
    states = sorted({r["final_state"] for runs in result["runs"].values() for r in runs})
    lines += ["", f"Event -> Running (s) of every run: {spread}; final states: {', '.join(states)}."]
    return "\n".join(lines)


def update_markdown(path: Path, section: str) -> None:
    start, end = MARKERS
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{start}\n{section}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n## Event -> retrain latency\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
