"""The deployments of `prefect.yaml`, served from this process (`evergreen serve-flows`).

`prefect.yaml` is the one place where deployments, schedules, triggers, concurrency and
parameters are declared. `prefect --no-prompt deploy --all` sends them to a work pool (run
by `prefect worker start --pool evergreen`); this module reads the same file and builds the
same deployments for `prefect.serve`, the single-machine default: no work pool, no worker,
runs start in a subprocess of the serving process a second or so after they are scheduled.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import yaml

PROJECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def read_deployment_specs(path: Path = PROJECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml (YAML anchors resolved)."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    deployments = spec.get("deployments") or []
    if not deployments:
        raise ValueError(f"{path} declares no deployments")
    return deployments


def load_entrypoint(entrypoint: str):  # noqa: ANN201 - a prefect Flow
    """`flows/monitor.py:monitor` -> the flow object, imported as a module of this project."""
    from prefect import Flow

    file, _, name = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name, None)
    if not isinstance(flow, Flow):
        raise ValueError(f"entrypoint {entrypoint!r} is not a Prefect flow")
    return flow


def load_deployment_flow(name: str, path: Path = PROJECT_YAML):  # noqa: ANN201 - a prefect Flow
    """The flow of the deployment `name` of prefect.yaml."""
    for spec in read_deployment_specs(path):
        if spec["name"] == name:
            return load_entrypoint(spec["entrypoint"])
    raise ValueError(f"no deployment named {name!r} in {path}")


def deployment_arguments(
    path: Path = PROJECT_YAML,
    names: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    schedules: bool = True,
) -> list[tuple[Any, dict[str, Any]]]:
    """(flow, keyword arguments of `Flow.to_deployment` / `Runner.add_flow`) for each
    deployment of `path`, equal to what `prefect deploy` makes of it.

    `parameters` overrides the `config` parameter (and any other) of every deployment and
    of every trigger and schedule that passes it. A `config` override pins the deployments to
    that one model (a block name or YAML path): the fan-outs start runs for it alone and the
    triggers match only its events (resource label `evergreen.block`). `schedules=False`
    leaves cron schedules out (the demo's clock replaces them).

    Each flow persists its result (`persist_result=True`, a few KB per run under Prefect's
    local storage path, PREFECT_LOCAL_STORAGE_PATH): a command line that handed a run to a
    served deployment reads back what it returned (`evergreen.apps.runs`). Its tasks do not
    (tasks/runner.py)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.schedules import Cron, Interval

    specs = read_deployment_specs(path)
    unknown = sorted(set(names or []) - {s["name"] for s in specs})
    if unknown:
        raise ValueError(f"no deployment named {unknown} in {path}")
    overrides = parameters or {}
    built = []
    for spec in specs:
        if names and spec["name"] not in names:
            continue
        flow = load_entrypoint(spec["entrypoint"]).with_options(persist_result=True)
        limit = spec.get("concurrency_limit")
        if isinstance(limit, dict):
            limit = ConcurrencyLimitConfig(**limit)
        plans = []
        for s in spec.get("schedules") or [] if schedules else []:
            params = _override(s.get("parameters") or {}, overrides)
            if "cron" in s:
                plans.append(Cron(s["cron"], timezone=s.get("timezone"), parameters=params, active=s.get("active", True)))
            else:
                plans.append(Interval(s["interval"], timezone=s.get("timezone"), parameters=params, active=s.get("active", True)))
        kwargs = {
            "name": spec["name"],
            "description": spec.get("description"),
            "tags": spec.get("tags"),
            "parameters": {**(spec.get("parameters") or {}), **overrides},
            "schedules": plans or None,
            "concurrency_limit": limit,
            "triggers": _triggers(spec, overrides),
        }
        built.append((flow, kwargs))
    return built


def build_deployments(
    path: Path = PROJECT_YAML,
    names: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    schedules: bool = True,
) -> list[Any]:
    """RunnerDeployments equal to what `prefect deploy` makes of `path` (see
    `deployment_arguments`)."""
    return [flow.to_deployment(**kwargs) for flow, kwargs in deployment_arguments(path, names, parameters, schedules)]


def _triggers(spec: dict[str, Any], overrides: dict[str, Any]) -> list[Any]:
    """Triggers as `prefect deploy` builds them (same default names), parameters overridden."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    from blocks.model_config import model_label
    from tasks.events import BLOCK_LABEL

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    pinned = model_label(overrides["config"]) if overrides.get("config") else None
    out = []
    for i, trigger in enumerate(spec.get("triggers") or [], start=1):
        t = dict(trigger)
        t.setdefault("name", f"{spec['name']}__automation_{i}")
        if "parameters" in t:
            t["parameters"] = _override(t["parameters"], overrides)
        if pinned and "match" in t:
            t["match"] = {**t["match"], BLOCK_LABEL: pinned}
        out.append(adapter.validate_python(t))
    return out


def _override(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Override only what a trigger or schedule passes; the rest comes from the deployment."""
    return {**params, **{k: v for k, v in overrides.items() if k in params}}


def serve_project(
    path: Path = PROJECT_YAML,
    names: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    schedules: bool = True,
    limit: int | None = None,
) -> None:
    """Serve the project's deployments until interrupted (schedules paused on shutdown).

    The flows are added to the runner as objects (`Runner.add_flow`, what `flow.serve` does),
    so each run starts in a subprocess from the flow itself; nothing is loaded from the
    deployment's storage or pull steps, which `prefect deploy` may have set for a worker."""
    import asyncio
    import contextlib

    from prefect.runner import Runner

    specs = deployment_arguments(path, names, parameters, schedules)
    if os.environ.get("EVERGREEN_RUN_START", "forkserver") == "forkserver":
        start_runs_from_forkserver()
    served = [f"{flow.name}/{kwargs['name']}" for flow, kwargs in specs]
    print(f"serving {', '.join(served)} from {path}; polling for runs (Ctrl+C stops)", flush=True)
    current = _CurrentRunner()
    own_webserver: bool | None = None  # started once, when the first runner's deployments are applied
    while True:
        runner = Runner(name="evergreen", pause_on_shutdown=True, limit=limit)
        current.runner = runner
        try:
            for flow, kwargs in specs:
                runner.add_flow(flow, **kwargs)
            if own_webserver is None:
                own_webserver = _start_runner_webserver(current)
            with _runner_webserver_off() if own_webserver else contextlib.nullcontext():
                asyncio.run(runner.start(webserver=False))
            return
        except Exception as exc:  # noqa: BLE001 - re-raised unless the API is down
            # Prefect's runner gives up after three failed polls in a row. When the
            # reason is the API being away (a server restart, a network blip), wait for
            # it and serve again: deployments and automations live in the server's
            # database, and the loop must carry on without a person restarting this.
            # Applying the deployments again is idempotent (same ids, same automations).
            if _api_error() is None:
                raise
            print(f"the Prefect API is unreachable ({type(exc).__name__}: {exc}); serving again once it answers", flush=True)
            _wait_for_api()
            print("the Prefect API answers again; serving", flush=True)


class _CurrentRunner:
    """The runner that serves now, as Prefect's runner webserver sees it (`last_polled` for
    /health, its process manager for /run_count, `stop` for /shutdown)."""

    runner: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


def _start_runner_webserver(current: _CurrentRunner) -> bool:
    """Start Prefect's runner webserver once for the life of `serve-flows`, when
    PREFECT_RUNNER_SERVER_ENABLE asks for it (True if started; each Runner must then start
    inside `_runner_webserver_off()`, or it would start a webserver of its own).

    Prefect's Runner starts its webserver in a thread that outlives the runner: a second
    Runner (serving again after an outage) could not bind the port, and the first one's
    /health would report the abandoned runner as unresponsive for good."""
    import threading
    from functools import partial

    from prefect.runner.server import start_webserver
    from prefect.settings import PREFECT_RUNNER_SERVER_ENABLE

    if not PREFECT_RUNNER_SERVER_ENABLE.value():
        return False
    threading.Thread(name="runner-server-thread", target=partial(start_webserver, runner=current), daemon=True).start()
    return True


def _runner_webserver_off() -> Any:
    from prefect.settings import PREFECT_RUNNER_SERVER_ENABLE, temporary_settings

    return temporary_settings({PREFECT_RUNNER_SERVER_ENABLE: False})


# Imported once by the fork server, so a served run's process starts with them loaded: Prefect,
# the flows, and the libraries their steps import when they run (NannyML, Great Expectations,
# MLflow and its SQL stores, XGBoost, the plotting libraries): 10-30 s of imports a cold run
# pays, a forked one does not. The fork server's other threads are OpenBLAS's and jemalloc's
# (numpy, pyarrow), which both stop or reset themselves around fork (pthread_atfork), as every
# multiprocessing "fork" user of pandas relies on; nothing is run here, only imported. A
# module that fails to import is skipped by multiprocessing.
FORKSERVER_PRELOAD = [
    "prefect.flow_engine",
    "prefect.flows",
    "blocks.model_config",
    "evergreen.config",
    "flows.monitor",
    "flows.retrain",
    "flows.promote",
    "flows.canary",
    "flows.rollback",
    "flows.fan_out",
    "evergreen.engines.monitoring",
    "evergreen.engines.validation",
    "evergreen.engines.training",
    "evergreen.engines.scoring",
    "evergreen.adapters.tracking",
    "nannyml",
    "great_expectations",
    "great_expectations.expectations",
    "great_expectations.execution_engine.pandas_execution_engine",
    "great_expectations.validator.v1_validator",
    "mlflow",
    "mlflow.xgboost",
    "mlflow.models",
    "mlflow.artifacts",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "xgboost",
    "sklearn",
    "matplotlib.figure",
    "plotly.offline",
]


def start_runs_from_forkserver(preload: list[str] = FORKSERVER_PRELOAD) -> None:
    """Start served runs from a fork server that has the flows and their libraries imported.

    Prefect's runner starts each run of a served flow with `multiprocessing` "spawn": a fresh
    interpreter that imports Prefect, the flow's module and, as the flow runs, NannyML, Great
    Expectations, MLflow and XGBoost: 15-40 s before a monitor gets to its data. A
    "forkserver" context gives the same isolation (a server process forks each run; nothing
    of the runner's own state is inherited) from a process where all of it is imported once.
    Returns once the fork server has imported them (serving starts warm).
    `EVERGREEN_RUN_START=spawn` keeps Prefect's default."""
    import multiprocessing

    import prefect.flow_engine as engine

    if "forkserver" not in multiprocessing.get_all_start_methods() or not hasattr(engine, "run_flow_in_subprocess"):
        return
    multiprocessing.set_forkserver_preload(preload)

    class _Multiprocessing:
        """`multiprocessing` as prefect.flow_engine sees it: "spawn" means the fork server."""

        def __getattr__(self, name: str) -> Any:
            return getattr(multiprocessing, name)

        def get_context(self, method: str | None = None) -> Any:
            return multiprocessing.get_context("forkserver" if method == "spawn" else method)

    engine.multiprocessing = _Multiprocessing()  # type: ignore[assignment]
    # The fork server accepts its first request once the preload is imported: a no-op
    # process started now returns when it is warm.
    probe = multiprocessing.get_context("forkserver").Process(target=_noop, name="evergreen-forkserver-warmup")
    probe.start()
    probe.join()


def _noop() -> None:
    return None


def _api_error() -> Exception | None:
    """None when the configured Prefect API answers its health check, else the error."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.api_healthcheck()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it counts as down
        return exc


def _wait_for_api(poll: float = 2.0, report_every: float = 60.0) -> None:
    """Block until the Prefect API answers (forever: serving is useless without it)."""
    import time

    started = last_report = time.monotonic()
    while (error := _api_error()) is not None:
        if time.monotonic() - last_report >= report_every:
            last_report = time.monotonic()
            print(f"still waiting for the Prefect API after {time.monotonic() - started:.0f} s: {error}", flush=True)
        time.sleep(poll)
