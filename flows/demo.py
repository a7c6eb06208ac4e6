"""`evergreen demo`: the closed loop on embedded defaults, day by day.

A local `prefect server` (SQLite, 127.0.0.1) unless PREFECT_API_URL is set, a local MLflow
store (SQLite + artifact folder), the config saved as the `car-loan` block, the deployments
of prefect.yaml served by `evergreen serve-flows` (their event triggers are the automations
that drive the loop) and the scoring service, each a child process stopped at the end.

Each day of the demo stream: labels that are due arrive, the day's rows are scored through
the champion/canary router over HTTP (every prediction lands in the prediction log), the log
becomes the day's batch, and the `monitor` flow runs on it. From there nothing is called by
the demo: a drift event makes the retrain deployment's automation start `retrain`, its
`evergreen.model.registered` event starts `promote`, and the demo only waits until those
runs have finished before it moves to the next day. The demo's clock replaces the cron
schedules (it replays 20 days in minutes): it runs `canary-review` once per simulated day
while a canary is live, as the hourly schedule would.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evergreen import events
from evergreen.adapters import io
from evergreen.config import ModelConfig, load_config

# Events with an automation in prefect.yaml (the retrain request; rollback after a promotion).
TRIGGERING = (events.RETRAIN_REQUESTED, events.PERFORMANCE_DEGRADED)
# Where the demo keeps its data on a production stack's object store (`--stack`).
STACK_DATA_ROOT = "s3://evergreen/demo/data"


@dataclass
class DayRow:
    day: str
    valid: bool
    drift: bool
    degraded: bool
    estimated: float | None
    realized: float | None
    realized_on: str | None
    events: list[str]
    action: str
    champion: str | None
    canary: str | None
    served: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    served_metric: float | None = None  # the day's served predictions against all their labels


@dataclass
class DemoSummary:
    days: list[DayRow]
    drift_injected: str
    drift_start_day: str | None
    drift_first_detected_day: str | None
    retrains: int
    promotions: int
    rollbacks: int
    final_champion: str | None
    recovery: dict[str, Any]
    lineage: list[dict[str, Any]]
    prefect_api_url: str
    mlflow_tracking_uri: str
    workdir: str
    seconds: float
    server_kept: bool = False
    prefect_server_pid: int | None = None  # the kept server's (`--keep-server`)
    cancelled_runs: list[str] = field(default_factory=list)  # leftover scheduled runs the demo cancelled

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_config(base: ModelConfig, workdir: Path, stack: dict[str, str] | None = None) -> ModelConfig:
    """The demo's config: every path under `workdir`; on a production stack (`stack`: its
    client environment), data on its object store and the registry on its MLflow server."""
    if stack is not None:
        return base.model_copy(
            update={
                "data": base.data.model_copy(update={"root": STACK_DATA_ROOT}),
                "mlflow": base.mlflow.model_copy(
                    update={"tracking_uri": stack["MLFLOW_TRACKING_URI"], "artifact_root": "mlflow-artifacts:/evergreen-demo",
                            "ui_url": stack["MLFLOW_TRACKING_URI"]}
                ),
            }
        )
    return base.model_copy(
        update={
            "data": base.data.model_copy(update={"root": str(workdir / "data")}),
            "mlflow": base.mlflow.model_copy(
                update={"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_root": str(workdir / "mlartifacts")}
            ),
        }
    )


DEFAULT_DRIFT, DEFAULT_DRIFT_START = "unit", 8


def run_demo(
    config_path: Path,
    workdir: Path,
    drift: str = DEFAULT_DRIFT,
    drift_start: int = DEFAULT_DRIFT_START,
    keep_server: bool = False,
    echo: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
    stack_dir: Path | None = None,
) -> DemoSummary:
    """The demo; with `stack_dir` (a running `evergreen stack up`) on that stack instead of
    embedded servers: its Prefect API, its workers running the deployments, its MLflow
    server and `s3://` data on its object store."""
    from evergreen.apps.services import (
        prefect_server,
        scoring_service,
        served_flows,
        start_kept_prefect_server,
    )
    from evergreen.simulation.stream import write_demo_stream

    began = time.monotonic()
    demo_started = _now()
    _quiet_console()
    _exit_on_sigterm()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    stack_env = _use_stack(stack_dir, echo) if stack_dir is not None else None
    cfg = demo_config(load_config(config_path), workdir, stack_env)
    if stack_env is not None:
        _reset_stack_demo(cfg, echo)
    cfg_file = workdir / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")

    with ExitStack() as stack, ThreadPoolExecutor(1, thread_name_prefix="demo-setup") as setup:
        # Start-up work that waits on another process (the server, the runner) overlaps
        # with work in this one (writing the stream, the bootstrap retrain).
        staging = workdir / "stream"
        echo(f"writing the demo stream with {drift} drift from day {drift_start} ...")
        stream = setup.submit(write_demo_stream, cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(staging)})}), str(staging), drift=drift, drift_start=drift_start)
        api = os.environ.get("PREFECT_API_URL")
        started_server = not api
        kept_pid: int | None = None
        if not api:
            echo("starting a local Prefect server (SQLite, 127.0.0.1) ...")
            if keep_server:
                # Detached: it must outlive this process (a context manager would stop it).
                kept = start_kept_prefect_server(workdir / "prefect")
                api, kept_pid = kept.api_url, kept.pid
                from evergreen.apps.services import stop_kept_server_hint

                echo(f"the Prefect server is kept after the demo (pid {kept_pid}; stop it with `{stop_kept_server_hint(kept_pid)}`)")
            else:
                api = stack.enter_context(prefect_server(workdir / "prefect"))
        os.environ["PREFECT_API_URL"] = api
        echo(f"Prefect API: {api}")
        info = stream.result()
        live = cfg.data.root
        for name in ("reference.parquet", "monitor_reference.parquet"):
            _put(staging / name, f"{live}/{name}")

        from blocks.model_config import EvergreenModel, block_document_name
        from flows.bootstrap import bootstrap
        from flows.canary import canary_review
        from flows.monitor import monitor

        block = block_document_name(cfg.name)
        EvergreenModel.register_type_and_schema()
        EvergreenModel.from_config(cfg).save(block, overwrite=True)
        echo(f"saved the config as block evergreen-model/{block}")
        if stack_env is None:
            echo("serving the deployments of prefect.yaml (evergreen serve-flows) ...")
            runner = setup.submit(stack.enter_context, served_flows(workdir / "serve-flows.log", extra_env={"PREFECT_API_URL": api}))
        else:
            echo("the stack's workers run the deployments of prefect.yaml (work pool evergreen)")
            runner = setup.submit(lambda: None)

        echo("bootstrap: training the first model on the reference data ...")
        boot = bootstrap(config=cfg, return_state=True).result()
        echo(f"  -> {boot.message}")
        runner.result()

        rows: list[DayRow] = []
        counters = {"retrains": 0, "promotions": 0, "rollbacks": 0}  # the bootstrap is not a retrain
        url = stack.enter_context(scoring_service(cfg_file, workdir / "serve.log"))
        echo(f"scoring service: {url}")
        days = info.days
        for i, day in enumerate(days):
            t0 = time.monotonic()
            if progress:
                progress(day, i, len(days))
            _deliver_labels(staging, live, day)
            batch = io.read_table(f"{staging}/batches/{day}.parquet")
            served = _score_day(url, cfg, batch)
            path = _compact(cfg, day, len(batch))
            since = _now()
            with _tags("evergreen", "demo"):
                m = monitor(config=cfg, batch=path, return_state=True).result(raise_on_failure=False)[0]
                for ev in m.events:
                    echo(f"  [{day}] event {ev}")
                actions = _review_canary(cfg, day, counters, echo, canary_review)
            if any(e in TRIGGERING for e in m.events) or any(a.startswith("canary-review: promoted") for a in actions):
                actions += _await_automations(since, day, counters, echo)
            champion, canary = _aliases(cfg)
            rows.append(DayRow(day, m.valid, m.drift_detected, m.performance_degraded, m.estimated_metric, m.realized_metric, m.realized_on, m.events, "; ".join(actions) or "-", champion, canary, served, round(time.monotonic() - t0, 1)))
        # Runs the automations scheduled for later (a canary review in real hours) would
        # wait forever on the demo's server once its runner stops: cancelled, saying why.
        # (A server the demo did not start has its own workers and schedules: left alone.)
        cancelled = cancel_leftover_runs(demo_started) if started_server else []
        for name in cancelled:
            echo(f"  cancelled leftover run {name} (the demo ended before its time)")
        _flush_to_server()
        if keep_server and kept_pid is not None:
            echo(f"Prefect server left running: UI {api.removesuffix('/api')} (pid {kept_pid}; stop it with `{stop_kept_server_hint(kept_pid)}`)")
    detected = next((r.day for r in rows if (r.drift or r.degraded) and (info.drift_start_index is None or r.day >= info.drift_start_date)), None)
    champion, _ = _aliases(cfg)
    for row in rows:
        row.served_metric = served_metric(cfg, staging, row.day)
    return DemoSummary(
        days=rows, drift_injected=drift, drift_start_day=info.drift_start_date, drift_first_detected_day=detected,
        retrains=counters["retrains"], promotions=counters["promotions"], rollbacks=counters["rollbacks"],
        final_champion=champion, recovery=recovery(rows, info.drift_start_date), lineage=lineage(cfg),
        prefect_api_url=api, mlflow_tracking_uri=cfg.mlflow.resolved_tracking_uri(),
        workdir=str(workdir), seconds=round(time.monotonic() - began, 1),
        server_kept=keep_server or not started_server, prefect_server_pid=kept_pid, cancelled_runs=cancelled,
    )


def _flush_to_server() -> None:
    """Send the logs and events this process still has queued while the demo's server is up:
    left for the interpreter's exit, they were retried against the stopped server for about a
    minute and the demo ended on 'Error logging to API: All connection attempts failed'."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    EventsWorker.drain_all(timeout=30)


def served_metric(cfg: ModelConfig, staging: Path, day: str) -> float | None:
    """The metric of what was served on `day` (the batch's logged predictions, champion and
    canary rows alike) against the labels the stream delivers for them, sooner or later."""
    from evergreen.decisions.evaluation import metric_value, served_scores, target_values

    path = Path(cfg.data.path("batches")) / f"{day}.parquet"
    if not path.exists():
        return None
    batch = io.read_table(str(path))
    labels = io.read_labels(str(staging / "labels"))
    if labels is None:
        return None
    joined = batch.merge(labels[[cfg.columns.id, cfg.columns.target]], on=cfg.columns.id, how="inner")
    if joined.empty:
        return None
    y = target_values(joined[cfg.columns.target], cfg)
    value = metric_value(y, served_scores(joined, cfg), cfg.problem_type, cfg.metric)
    return None if value is None else round(float(value), 4)


def recovery(rows: list[DayRow], change_day: str | None) -> dict[str, Any]:
    """Served metric before the change, at its worst after it, and over the last three days."""
    before = [r.served_metric for r in rows if r.served_metric is not None and (change_day is None or r.day < change_day)]
    after = [(r.served_metric, r.day) for r in rows if r.served_metric is not None and change_day is not None and r.day >= change_day]
    if not before or not after:
        return {}
    trough = min(after)
    last = [m for m, _ in after[-3:]]
    return {
        "before": round(sum(before) / len(before), 4),
        "trough": trough[0],
        "trough_day": trough[1],
        "recovered": round(sum(last) / len(last), 4),
        "recovered_days": [d for _, d in after[-3:]],
    }


def lineage(cfg: ModelConfig) -> list[dict[str, Any]]:
    """Every registered version: status, why it was trained and on what."""
    from evergreen.adapters import registry, tracking

    tracking.connect(cfg.mlflow)
    out = []
    for v in registry.list_versions(cfg.mlflow.model_name):
        tags = v.tags
        out.append(
            {
                "version": v.version,
                "status": v.status,
                "trigger": tags.get("evergreen.trigger"),
                "reason": (tags.get("evergreen.trigger.reason") or "")[:120],
                "episode": tags.get("evergreen.episode"),
                "rows": tags.get("evergreen.dataset_rows"),
                "post_change_rows": tags.get("evergreen.post_change_rows"),
                "dataset_digest": (tags.get("evergreen.dataset_digest") or "")[:12],
            }
        )
    return out


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl+C, so the server, runner and scoring service the demo
    started are stopped too (they run in their own process groups)."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _quiet_console() -> None:
    """The demo prints its own progress: flow and task logs stay on the Prefect server (UI)
    but only warnings reach the console; no download bars; MLflow's advisory warnings off."""
    import warnings

    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")


def _deliver_labels(staging: Path, live: str, day: str) -> None:
    """Labels are files named by their delivery day: today's arrive now."""
    src = staging / "labels" / f"{day}.parquet"
    if src.exists():
        _put(src, f"{live}/labels/{day}.parquet")


def _put(src: Path, dest: str) -> None:
    """Copy a local file to `dest`, a local path or any fsspec URL (the stack's s3://)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(dest)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(src), path)


def _use_stack(stack_dir: Path, echo: Callable[[str], None]) -> dict[str, str]:
    """Point this process (and the services it starts) at a running production stack: its
    client environment, as `eval "$(evergreen stack env)"` would."""
    from evergreen.apps import stack

    if not stack.is_up(stack_dir):
        raise stack.StackError(f"the stack in {stack_dir} is not up; start it with `evergreen stack up`")
    env = stack.stack_env(stack_dir)
    stack.apply_env(env)
    echo(f"on the production stack in {stack_dir}: Prefect {env['PREFECT_API_URL']}, MLflow {env['MLFLOW_TRACKING_URI']}, data {STACK_DATA_ROOT}")
    return env


def _reset_stack_demo(cfg: ModelConfig, echo: Callable[[str], None]) -> None:
    """A fresh start for the demo's own model on a stack: its data prefix and its registered
    model (with its alias history) go; other models are left alone."""
    import fsspec
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from evergreen.adapters import tracking

    fs, path = fsspec.core.url_to_fs(cfg.data.root)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    uri = tracking.connect(cfg.mlflow)
    try:
        MlflowClient(uri, uri).delete_registered_model(cfg.mlflow.model_name)
        echo(f"reset the demo's registered model {cfg.mlflow.model_name!r} on {uri}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _score_day(url: str, cfg: ModelConfig, batch, chunk: int = 500) -> dict[str, int]:  # noqa: ANN001
    """Send the day's rows (no predictions, no labels) through the scoring service."""
    import httpx

    cols = cfg.columns
    request_cols = [cols.id, cols.timestamp, *cols.features]
    frame = batch[request_cols].copy()
    frame[cols.timestamp] = frame[cols.timestamp].astype(str)
    served: dict[str, int] = {}
    with httpx.Client(timeout=60) as client:
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start : start + chunk]
            body = {"dataframe_split": json.loads(part.to_json(orient="split", index=False))}
            resp = client.post(f"{url}/invocations", json=body)
            resp.raise_for_status()
            for alias in resp.json()["aliases"]:
                served[alias] = served.get(alias, 0) + 1
    return served


def _compact(cfg: ModelConfig, day: str, expected: int, timeout: float = 60) -> str:
    """Wait until the service has flushed the day's predictions, then write the batch file."""
    from evergreen.adapters.predlog import compact_day, read_prediction_log

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_prediction_log(cfg.data.path("predictions_log"), day)) >= expected:
            return compact_day(cfg.data.path("predictions_log"), day, cfg.data.path("batches"))
        time.sleep(0.5)
    raise TimeoutError(f"the scoring service logged fewer than {expected} predictions for {day} within {timeout} s")


def _aliases(cfg: ModelConfig) -> tuple[str | None, str | None]:
    from evergreen.adapters import registry, tracking

    tracking.connect(cfg.mlflow)
    ch = registry.version_by_alias(cfg.mlflow.model_name, registry.CHAMPION)
    ca = registry.version_by_alias(cfg.mlflow.model_name, registry.CANARY)
    return (ch.version if ch else None), (ca.version if ca else None)


def _now():  # noqa: ANN202
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(seconds=1)


def _tags(*names: str):  # noqa: ANN202
    """Flow runs the demo starts itself carry the `evergreen` tag, like the deployments' runs
    (the failed-run notification matches it)."""
    from prefect import tags

    return tags(*names)


def _review_canary(cfg: ModelConfig, day: str, counters: dict[str, int], echo: Callable[[str], None], canary_review) -> list[str]:  # noqa: ANN001
    """What the hourly canary-review schedule does, once per simulated day while a canary is live."""
    _, canary = _aliases(cfg)
    if canary is None:
        return []
    review = canary_review(config=cfg, return_state=True)
    r = review.result(raise_on_failure=False)
    if r.decision == "promoted":
        counters["promotions"] += 1
    elif r.decision == "rolled_back":
        counters["rollbacks"] += 1
    echo(f"  [{day}] canary review: {review.message}")
    return [f"canary-review: {r.decision}"]


CANCEL_MESSAGE = "the demo ended before this run's time; cancelled so that no run is left waiting on the kept server"


def cancel_leftover_runs(since) -> list[str]:  # noqa: ANN001
    """Cancel the runs of deployments created since `since` that are still scheduled or
    pending (nobody serves them once the demo's runner stops), each with a message saying
    why; returns their names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    flt = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(is_null_=False),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])),
        start_time=FlowRunFilterStartTime(is_null_=True),
    )
    names = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=flt):
            if run.created is not None and run.created < since:
                continue  # not the demo's
            client.set_flow_run_state(run.id, Cancelled(message=CANCEL_MESSAGE), force=True)
            names.append(run.name)
    return names


def read_deployment_runs(since) -> list[Any]:  # noqa: ANN001
    """Flow runs of deployments created since `since` (oldest first)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(is_null_=False),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=since),
    )
    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_ASC))


def _await_automations(since, day: str, counters: dict[str, int], echo: Callable[[str], None], quiet: float = 5.0, timeout: float = 600) -> list[str]:  # noqa: ANN001
    """Wait until the runs the automations started (and the runs those started) have
    finished, and `quiet` seconds passed without a new one; report them."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        horizon = datetime.now(UTC) + timedelta(minutes=1)
        # A run scheduled for later (the next hourly review) is not work to wait for now.
        runs = [r for r in read_deployment_runs(since) if not (r.state and r.state.is_scheduled() and r.expected_start_time and r.expected_start_time > horizon)]
        for run in runs:
            key = str(run.id)
            final = run.state is not None and run.state.is_final()
            if seen.get(key) != final:
                seen[key] = final
                last_change = time.monotonic()
        if runs and all(seen.values()) and time.monotonic() - last_change >= quiet:
            break
        if not runs and time.monotonic() - last_change >= quiet:
            break
        time.sleep(1)
    actions = []
    with get_client(sync_client=True) as client:
        names = {}
        for run in read_deployment_runs(since):
            if run.deployment_id not in names:
                names[run.deployment_id] = client.read_deployment(run.deployment_id).name
            dep, state = names[run.deployment_id], run.state
            if state is not None and state.is_scheduled():
                if run.created is not None and run.created < since:
                    continue  # announced on the day it was scheduled
                echo(f"  [{day}] automation -> {dep} scheduled for {run.expected_start_time:%Y-%m-%d %H:%M} UTC (real time)")
                continue
            echo(f"  [{day}] automation -> {dep}: {state.name}: {state.message or ''}".rstrip(": "))
            actions.append(f"{dep}: {_short(dep, state)}")
            if dep == "retrain" and state.name == "Completed":
                counters["retrains"] += 1
            if dep == "rollback" and state.name == "Completed":
                counters["rollbacks"] += 1
    return actions


def _short(deployment: str, state) -> str:  # noqa: ANN001
    msg = state.message or ""
    if deployment == "retrain" and state.name == "Completed":
        return msg.split(" as ")[0]
    if deployment == "promote":
        return "passed -> canary" if state.name == "Completed" else state.name
    return state.name
