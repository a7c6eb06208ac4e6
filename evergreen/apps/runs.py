"""How a one-off CLI command runs its flow: handed to the served deployments when they are up
(`evergreen server start` or `evergreen serve-flows`: a warm process with the libraries
imported), else in this process, against the configured Prefect API or a temporary one.

Either way the command gets a `FlowOutcome` (final state, message, the flow's result) and
prints the same thing. The served flows persist their results (flows/deployments.py) so the
result of a run handed to them can be read back here.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen.errors import is_transient

if TYPE_CHECKING:
    from evergreen.config import ModelConfig

# A served deployment counts as up when its runner polled this recently (it polls every
# second with the project's prefect.toml, every 10 s with Prefect's default).
POLLED_WITHIN_SECONDS = 60.0
START_HINT = (
    "running in this process (a temporary Prefect server and cold imports cost 20-60 s); "
    "`evergreen server start` keeps a Prefect server and a warm runner up, and commands hand "
    "their runs to it"
)


@dataclass
class FlowOutcome:
    """A finished flow run as a command reports it."""

    failed: bool
    state_name: str
    message: str | None
    result: Any
    where: str  # "this process" or "flow run 'name' of deployment 'x/y'"


class RunFailed(RuntimeError):
    """A flow run that ended without a result to show (crashed, cancelled, lost)."""


# ------------------------------------------------------------------------- the config passed


def _relative_paths(config: ModelConfig) -> list[str]:
    """Fields whose value is a path relative to the working directory."""
    found = []
    if "://" not in config.data.root and not Path(config.data.root).is_absolute():
        found.append("data.root")
    uri = config.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        found.append("mlflow.tracking_uri")
    if "://" not in config.mlflow.artifact_root and not Path(config.mlflow.artifact_root).is_absolute():
        found.append("mlflow.artifact_root")
    return found


def with_absolute_paths(config: ModelConfig) -> ModelConfig:
    """`config` with its local paths made absolute against this working directory, so a
    process elsewhere (the served runner) reads the same files."""
    data = config.data
    if "://" not in data.root:
        data = data.model_copy(update={"root": str(Path(data.root).resolve())})
    artifact_root = config.mlflow.artifact_root
    if "://" not in artifact_root:
        artifact_root = str(Path(artifact_root).resolve())
    mlflow = config.mlflow.model_copy(
        update={"tracking_uri": config.mlflow.resolved_tracking_uri(), "artifact_root": artifact_root}
    )
    return config.model_copy(update={"data": data, "mlflow": mlflow})


def _has_secrets(model: Any) -> bool:  # noqa: ANN401 - any pydantic model
    """Whether any field, at any depth, holds a secret (a set SecretStr)."""
    from pydantic import BaseModel, SecretStr

    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr) or (isinstance(value, BaseModel) and _has_secrets(value)):
            return True
    return False


def config_parameter(config: ModelConfig, config_file: Path, *, overridden: bool, runner_cwd: str | None) -> tuple[Any, str | None]:
    """What to pass as the served flow's `config`, or (None, why not).

    The YAML path (absolute) when the runner reads it as this process does: nothing was
    overridden on the command line and the file names no path relative to the working
    directory, or the runner works in this one. Otherwise the config itself, its paths made
    absolute; but not when it holds secrets (flow run parameters are stored in the clear):
    then the run stays in this process."""
    here = str(Path.cwd().resolve())
    if not overridden and (not _relative_paths(config) or runner_cwd == here):
        return str(config_file.resolve()), None
    if not _has_secrets(config):
        return with_absolute_paths(config).model_dump(mode="json"), None
    return None, (
        "the config holds secrets and relative paths or command-line overrides, which a run "
        "parameter cannot carry safely"
    )


# ------------------------------------------------------------------------- the served runner


def api_url() -> str | None:
    """The Prefect API this process talks to, if one is configured (env, profile or
    prefect.toml); None means Prefect would start a temporary server."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def served_deployment(name: str) -> Any | None:
    """The deployment `name/name` of prefect.yaml when a runner serves it now (served by
    `serve-flows`, not a work pool; polled within a minute), else None."""
    url = api_url()
    if url is None:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"{name}/{name}")
    except ObjectNotFound:
        return None
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise RuntimeError(
            f"the Prefect API at {url} does not answer ({type(exc).__name__}: {exc}); start it with "
            "`evergreen server start` or unset PREFECT_API_URL"
        ) from exc
    polled = deployment.last_polled
    if deployment.work_pool_name or "evergreen" not in (deployment.tags or []) or polled is None:
        return None
    if (datetime.now(UTC) - polled).total_seconds() > POLLED_WITHIN_SECONDS:
        return None
    return deployment


def run_served(
    deployment: Any, parameters: dict[str, Any], echo: Callable[[str], None], poll: float = 0.2
) -> FlowOutcome:
    """A run of `deployment` with `parameters`, waited for; its result read back."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_UI_URL
    from prefect.states import Cancelling

    from blocks.model_config import model_label
    from tasks.runs import model_tag, run_name

    name = f"{deployment.name}/{deployment.name}"
    label = model_label(parameters.get("config"))
    flow_run: Any = run_deployment(
        deployment.id, parameters=parameters, timeout=0, as_subflow=False,
        tags=["evergreen-cli", *([model_tag(label)] if label else [])],
        flow_run_name=run_name(deployment.name, parameters),  # the name the flow gives itself
    )
    ui = PREFECT_UI_URL.value()
    link = f" ({ui.rstrip('/')}/runs/flow-run/{flow_run.id})" if ui else ""
    echo(f"handed to the served deployment {name}: flow run {flow_run.name!r} id {flow_run.id}{link}")
    where = f"flow run {flow_run.name!r} ({flow_run.id}) of deployment {name!r}"
    waiting_since, told = time.monotonic(), 0.0
    with get_client(sync_client=True) as client:
        try:
            while True:
                flow_run = client.read_flow_run(flow_run.id)
                state = flow_run.state
                if state is not None and state.is_final():
                    break
                waited = time.monotonic() - waiting_since
                if state is not None and state.is_scheduled() and waited - told >= 30:
                    told = waited
                    echo(f"still waiting for the runner to start {where} ({state.name}, {waited:.0f} s)")
                time.sleep(poll)
        except KeyboardInterrupt:
            client.set_flow_run_state(flow_run.id, Cancelling(message="interrupted from the command line"), force=True)
            echo(f"cancelling {where}")
            raise
    return _outcome(state, where, logs=link.strip(" ()") or None)


# ------------------------------------------------------------------------- in this process


class _HideRunTracebacks(logging.Filter):
    """Leave out of the console the flow and task runs' failure records that carry a
    traceback (Prefect logs the error of a failed run with its traceback): the command prints
    the error as one line, and `--verbose` the traceback. The records still reach the Prefect
    API, so the flow run's logs in the UI keep them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def quiet_console_failures() -> None:
    """Install `_HideRunTracebacks` on this process's console handlers (not the API's)."""
    import prefect  # noqa: F401 - configures logging: its console handler is on the root logger

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _HideRunTracebacks) for f in handler.filters):
            handler.addFilter(_HideRunTracebacks())


def run_here(flow: Any, parameters: dict[str, Any], verbose: bool) -> FlowOutcome:
    """Run `flow` in this process and wait for it."""
    if not verbose:
        quiet_console_failures()
    state = flow(**parameters, return_state=True)
    return _outcome(state, "this process")


def _outcome(state: Any, where: str, logs: str | None = None) -> FlowOutcome:
    """The final state's result: an exception is raised (the command reports it; `logs`, the
    run's page, is added to its traceback)."""
    if state.is_cancelled() or state.is_crashed():
        raise RunFailed(f"{where} ended {state.name}: {state.message or 'no message'}")
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - a result that cannot be read back
        raise RunFailed(
            f"{where} ended {state.name} ({state.message}), but its result could not be read back "
            f"({type(exc).__name__}: {exc}); a runner started before results were persisted? restart it"
        ) from exc
    if isinstance(result, BaseException):
        if logs:
            result.add_note(f"raised in {where}; its logs and traceback: {logs}")
        raise result
    return FlowOutcome(state.is_failed(), state.name, state.message, result, where)


# ------------------------------------------------------------------------- the command's run


def run_flow(
    name: str,
    config: ModelConfig,
    config_file: Path,
    parameters: dict[str, Any],
    *,
    overridden: bool,
    local: bool,
    verbose: bool,
    runner_cwd: str | None = None,
    echo: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> FlowOutcome:
    """Run the flow of prefect.yaml's deployment `name` with `parameters` (the `config`
    parameter is added here): on the served deployment when it is up and `local` is not
    asked, else in this process."""
    if not local:
        deployment = served_deployment(name)
        if deployment is not None:
            value, why_not = config_parameter(config, config_file, overridden=overridden, runner_cwd=runner_cwd)
            if value is not None:
                return run_served(deployment, {**parameters, "config": value}, echo)
            echo(f"running in this process: {why_not}")
        elif api_url() is None:
            echo(START_HINT)
    from flows.deployments import load_deployment_flow

    return run_here(load_deployment_flow(name), {**parameters, "config": config}, verbose)
