"""`evergreen demo`: the closed loop on embedded defaults, day by day.

A local `prefect server` (SQLite, 127.0.0.1) unless PREFECT_API_URL is set, a local MLflow
store (SQLite + artifact folder) and the scoring service as a child process. Each day of the
demo stream: labels that are due arrive, the day's rows are scored through the
champion/canary router over HTTP (every prediction lands in the prediction log), the log
becomes the day's batch, and the `monitor` flow runs on it. Drift events start `retrain`, a
registered candidate goes through `promote`, and a canary is reviewed by `canary-review`
every day until it is promoted or rolled back.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evergreen import io
from evergreen.config import ModelConfig, load_config

DRIFT_EVENTS = ("evergreen.drift.detected", "evergreen.performance.degraded")


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
    prefect_api_url: str
    mlflow_tracking_uri: str
    workdir: str
    seconds: float
    server_kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_config(base: ModelConfig, workdir: Path) -> ModelConfig:
    """The demo's config: every path under `workdir`."""
    return base.model_copy(
        update={
            "data": base.data.model_copy(update={"root": str(workdir / "data")}),
            "mlflow": base.mlflow.model_copy(
                update={"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_root": str(workdir / "mlartifacts")}
            ),
        }
    )


def run_demo(
    config_path: Path,
    workdir: Path,
    drift: str = "covariate",
    drift_start: int = 10,
    keep_server: bool = False,
    echo: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoSummary:
    from evergreen.services import prefect_server, scoring_service
    from evergreen.stream import write_demo_stream

    began = time.monotonic()
    _quiet_console()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cfg = demo_config(load_config(config_path), workdir)
    cfg_file = workdir / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")

    with ExitStack() as stack:
        api = os.environ.get("PREFECT_API_URL")
        started_server = not api
        if not api:
            echo("starting a local Prefect server (SQLite, 127.0.0.1) ...")
            server = prefect_server(workdir / "prefect")
            api = stack.enter_context(server) if not keep_server else server.__enter__()
        os.environ["PREFECT_API_URL"] = api
        echo(f"Prefect API: {api}")

        staging = workdir / "stream"
        echo(f"writing the demo stream with {drift} drift from day {drift_start} ...")
        info = write_demo_stream(cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(staging)})}), str(staging), drift=drift, drift_start=drift_start)
        live = Path(cfg.data.root)
        live.mkdir(parents=True, exist_ok=True)
        for name in ("reference.parquet", "monitor_reference.parquet"):
            shutil.copy(staging / name, live / name)

        from flows.canary import canary_review
        from flows.monitor import monitor
        from flows.promote import promote
        from flows.retrain import retrain

        echo("bootstrap: training the first model on the reference data ...")
        boot = retrain(config=cfg, trigger="manual", reason="bootstrap the demo", return_state=True).result()
        echo(f"  -> {boot.message}")

        rows: list[DayRow] = []
        counters = {"retrains": 1, "promotions": 0, "rollbacks": 0}
        state = {"last_retrain": -10**6, "pending_alert_day": None}
        with scoring_service(cfg_file, workdir / "serve.log") as url:
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
                mstate = monitor(config=cfg, batch=path, return_state=True)
                m = mstate.result(raise_on_failure=False)[0]
                for ev in m.events:
                    echo(f"  [{day}] event {ev}")
                action = _react(cfg, i, day, m, state, counters, echo, retrain, promote, canary_review)
                champion, canary = _aliases(cfg)
                rows.append(DayRow(day, m.valid, m.drift_detected, m.performance_degraded, m.estimated_metric, m.realized_metric, m.realized_on, m.events, action, champion, canary, served, round(time.monotonic() - t0, 1)))
        if keep_server:
            echo(f"Prefect server left running at {api}")
    detected = next((r.day for r in rows if r.drift and (info.drift_start_index is None or r.day >= info.drift_start_date)), None)
    champion, _ = _aliases(cfg)
    return DemoSummary(
        days=rows, drift_injected=drift, drift_start_day=info.drift_start_date, drift_first_detected_day=detected,
        retrains=counters["retrains"], promotions=counters["promotions"], rollbacks=counters["rollbacks"],
        final_champion=champion, prefect_api_url=api, mlflow_tracking_uri=cfg.mlflow.resolved_tracking_uri(),
        workdir=str(workdir), seconds=round(time.monotonic() - began, 1),
        server_kept=keep_server or not started_server,
    )


def _quiet_console() -> None:
    """The demo prints its own progress: flow and task logs stay on the Prefect server (UI)
    but only warnings reach the console; no download bars; MLflow's advisory warnings off."""
    import warnings

    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")


def _deliver_labels(staging: Path, live: Path, day: str) -> None:
    """Labels are files named by their delivery day: today's arrive now."""
    src = staging / "labels" / f"{day}.parquet"
    if src.exists():
        (live / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, live / "labels" / f"{day}.parquet")


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
    from evergreen.serving.predlog import compact_day, read_prediction_log

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_prediction_log(cfg.data.path("predictions_log"), day)) >= expected:
            return compact_day(cfg.data.path("predictions_log"), day, cfg.data.path("batches"))
        time.sleep(0.5)
    raise TimeoutError(f"the scoring service logged fewer than {expected} predictions for {day} within {timeout} s")


def _aliases(cfg: ModelConfig) -> tuple[str | None, str | None]:
    from evergreen import registry, tracking

    tracking.connect(cfg.mlflow)
    ch = registry.version_by_alias(cfg.mlflow.model_name, registry.CHAMPION)
    ca = registry.version_by_alias(cfg.mlflow.model_name, registry.CANARY)
    return (ch.version if ch else None), (ca.version if ca else None)


def _react(cfg, i, day, m, state, counters, echo, retrain, promote, canary_review) -> str:  # noqa: ANN001, PLR0913
    """What the automations do on this day's events (see prefect.yaml)."""
    champion, canary = _aliases(cfg)
    actions = []
    if canary is not None:
        review = canary_review(config=cfg, return_state=True)
        r = review.result(raise_on_failure=False)
        if r.decision == "promoted":
            counters["promotions"] += 1
        elif r.decision == "rolled_back":
            counters["rollbacks"] += 1
        actions.append(f"canary-review: {r.decision}")
        echo(f"  [{day}] canary review: {review.message}")
        if r.decision != "pending":
            return "; ".join(actions)
    alert = any(e in DRIFT_EVENTS for e in m.events)
    cooldown_days = cfg.retrain.cooldown_hours / 24
    if alert and canary is None and i - state["last_retrain"] >= cooldown_days:
        echo(f"  [{day}] drift -> retrain")
        rs = retrain(config=cfg, trigger="event", event_id=(m.event_ids or [None])[0], reason=m.message[:500], metric=cfg.metric, return_state=True)
        r = rs.result(raise_on_failure=False)
        counters["retrains"] += 1
        state["last_retrain"] = i
        actions.append(f"retrain: v{r.version}" if r.version else f"retrain: {r.status}")
        echo(f"  [{day}] {rs.message}")
        if r.version:
            ps = promote(config=cfg, return_state=True)
            p = ps.result(raise_on_failure=False)
            actions.append(f"gate: {p.decision}")
            echo(f"  [{day}] gate: {ps.message}")
    return "; ".join(actions) or "-"
