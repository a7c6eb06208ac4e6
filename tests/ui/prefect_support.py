"""Helpers of the Prefect UI browser tests: a kept Prefect server started the way
`evergreen demo --keep-server` starts it (by a process that exits), and a short loop of the
real flows run against it in a child process.

The loop runs in its own process because Prefect's process-wide events worker keeps the
first API URL it used: flows run in the pytest process would talk to the test harness (or an
earlier test's server), not to this server.

`python -m tests.ui.prefect_support start HOME` prints the kept server's API URL and pid as
JSON and exits; `python -m tests.ui.prefect_support loop ROOT NAME` runs the loop and prints
its summary as JSON; `block NAME` saves the demo model's `evergreen-model` block and
`check-block NAME` loads it back and compares (the block form test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from evergreen.apps.services import TELEMETRY_OFF
from evergreen.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]
CHUNKS, ROWS, DRIFT_AT = 6, 400, 2


def child_env(api_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, **TELEMETRY_OFF, "PYTHONPATH": str(ROOT)}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:
        env.pop("PREFECT_API_URL", None)
    return env


def start_kept_server(home: Path, timeout: float = 240) -> dict[str, Any]:
    """Start a kept Prefect server from a child process that returns (as `evergreen demo
    --keep-server` does) and return what it printed: `api_url`, `pid`."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.ui.prefect_support", "start", str(home)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout, check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"the kept server did not start:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stop_kept_server(pid: int, timeout: float = 30) -> None:
    """SIGTERM the kept server's process group, SIGKILL what is left after `timeout`."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.3)
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_loop(root: Path, name: str, api_url: str, timeout: float = 300) -> dict[str, Any]:
    """The short loop (`loop`) in a child process talking to `api_url`; its summary."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.ui.prefect_support", "loop", str(root), name],
        cwd=ROOT, env=child_env(api_url), capture_output=True, text=True, timeout=timeout, check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"the loop failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def loop_config(root: Path, name: str) -> ModelConfig:
    """The unit tests' toy model on a small drifting stream under `root` (labels a day late,
    a gate lenient enough that the retrained version becomes canary)."""
    from tests.unit.conftest import _config as toy

    base = toy()
    return base.model_copy(
        update={
            "name": name,
            "data": base.data.model_copy(update={"root": str(root), "rows_per_batch": ROWS, "label_delay_days": 1}),
            "retrain": base.retrain.model_copy(update={"window": "expanding"}),
            "gate": base.gate.model_copy(
                update={"min_rows": 50, "max_latency_ms": 1e9, "mode_on_alert": "non_inferiority", "margin": 0.1}
            ),
            "canary": base.canary.model_copy(update={"min_predictions": 100, "min_labels": 50}),
            "mlflow": base.mlflow.model_copy(
                update={"model_name": name, "tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": str(root / "mlartifacts")}
            ),
        }
    )


def loop(root: Path, name: str) -> dict[str, Any]:
    """bootstrap -> monitor every batch (drift from the third) -> retrain -> promote ->
    canary-review, the real flows on the Prefect server of PREFECT_API_URL, the config
    saved as the model's `evergreen-model` block (the fleet overview lists it)."""
    from blocks.model_config import EvergreenModel, block_document_name
    from evergreen.adapters import io
    from flows.bootstrap import bootstrap
    from flows.canary import canary_review
    from flows.monitor import monitor
    from flows.promote import promote
    from flows.retrain import retrain
    from tests.support import write_toy_drift_stream

    cfg = loop_config(root, name)
    write_toy_drift_stream(cfg, str(root), CHUNKS, ROWS, DRIFT_AT)
    EvergreenModel.register_type_and_schema()
    EvergreenModel.from_config(cfg).save(block_document_name(cfg.name), overwrite=True)
    out: dict[str, Any] = {"block": block_document_name(cfg.name)}
    boot = bootstrap(config=cfg, return_state=True)
    out["bootstrap"] = boot.message
    monitored = monitor(config=cfg, return_state=True)
    out["monitor"] = {"state": monitored.name, "message": monitored.message}
    trained = retrain(config=cfg, trigger="manual", reason="ui test", return_state=True)
    result = trained.result(raise_on_failure=False)
    out["retrain"] = {"state": trained.name, "message": trained.message, "version": getattr(result, "version", None), "run": str(trained.state_details.flow_run_id)}
    gated = promote(config=cfg, return_state=True)
    out["promote"] = {"state": gated.name, "message": gated.message}
    reviewed = canary_review(config=cfg, return_state=True)
    out["canary"] = {"state": reviewed.name, "message": reviewed.message, "run": str(reviewed.state_details.flow_run_id)}
    out["batches"] = [b.day for b in io.list_batches(cfg.data.path("batches"))]
    return out


def form_config() -> ModelConfig:
    """The demo model with values a form could lose: an explicit value equal to its default
    (`canary.traffic_share: 0.2`) and a setting switched off (`retrain.cooldown_hours: null`)."""
    from evergreen.config import load_config

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    return cfg.model_copy(
        update={
            "retrain": cfg.retrain.model_copy(update={"cooldown_hours": None}),
            "canary": cfg.canary.model_copy(update={"traffic_share": 0.2}),
        }
    )


def save_block(name: str) -> dict[str, Any]:
    """Save `form_config` as the `evergreen-model` block `name` on the server of
    PREFECT_API_URL (as `evergreen register` does); its id."""
    from blocks.model_config import EvergreenModel

    EvergreenModel.register_type_and_schema()
    return {"id": str(EvergreenModel.from_config(form_config()).save(name, overwrite=True))}


def check_block(name: str) -> dict[str, Any]:
    """Whether the block `name` loads as `form_config` (after a Save in the UI)."""
    from blocks.model_config import EvergreenModel

    loaded = EvergreenModel.load(name).to_config()
    return {"same": loaded == form_config(), "cooldown_hours": loaded.retrain.cooldown_hours, "traffic_share": loaded.canary.traffic_share}


def in_child(api_url: str, *argv: str, timeout: float = 180) -> dict[str, Any]:
    """`python -m tests.ui.prefect_support ARGV...` against `api_url`: what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.ui.prefect_support", *argv],
        cwd=ROOT, env=child_env(api_url), capture_output=True, text=True, timeout=timeout, check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"{argv} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "start":
        from evergreen.apps.services import start_kept_prefect_server

        server = start_kept_prefect_server(Path(argv[1]))
        print(json.dumps({"api_url": server.api_url, "pid": server.pid}), flush=True)
    elif command == "loop":
        summary = loop(Path(argv[1]), argv[2])
        print(json.dumps(summary), flush=True)
    elif command == "block":
        print(json.dumps(save_block(argv[1])), flush=True)
    elif command == "check-block":
        print(json.dumps(check_block(argv[1])), flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}: start HOME | loop ROOT NAME | block NAME | check-block NAME")


if __name__ == "__main__":
    main(sys.argv[1:])
