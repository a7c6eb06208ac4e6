"""The `evergreen` command line. Heavy libraries are imported inside each command, so that
`evergreen --help` answers at once."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from evergreen.telemetry import disable_telemetry

if TYPE_CHECKING:
    from evergreen.apps.runs import FlowOutcome
    from evergreen.apps.services import LocalStack
    from evergreen.config import ModelConfig


class _Options:
    """The global options of this invocation."""

    verbose = False


class EvergreenGroup(TyperGroup):
    """Every command's failure as one line on stderr (`error: <message>`), exit status 2 for
    usage and config errors, 1 for a failed run; `--verbose` prints the traceback too."""

    def invoke(self, ctx: Any) -> Any:  # noqa: ANN401 - click's context and result
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click_errors.NoArgsIsHelpError):
            raise
        except click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            _fail(f"{exc.format_message()} (see `{where} --help`)", 2, exc if _Options.verbose else None)
        except click_errors.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code, exc if _Options.verbose else None)
        except Exception as exc:  # noqa: BLE001 - every failure ends as one line
            from evergreen.errors import describe, is_usage_error

            message = describe(exc)
            if not _Options.verbose and message.startswith(f"{type(exc).__name__}: "):
                message += " (`evergreen --verbose ...` prints the traceback)"  # a bug, not an input
            _fail(message, 2 if is_usage_error(exc) else 1, exc if _Options.verbose else None)


def _fail(message: str, code: int, exc: BaseException | None = None) -> None:
    """Print `error: message` (after the traceback of `exc`, if given) and exit with `code`."""
    from evergreen.errors import one_line

    if exc is not None:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


app = typer.Typer(
    cls=EvergreenGroup,
    name="evergreen",
    help="Evergreen keeps tabular ML models accurate in production. Scheduling, automations and "
    "history live in Prefect (`prefect` CLI / UI) and MLflow; this CLI covers the rest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich's markdown renderer alone costs ~0.5-1 s of start-up.
    rich_markup_mode=None,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="model config YAML", exists=True, dir_okay=False)]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="write the result as JSON here")]
LocalOpt = Annotated[
    bool,
    typer.Option("--local", help="run the flow in this process even when the served deployments are up (`evergreen server start`)"),
]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="print the traceback of a failure")] = False,
) -> None:
    disable_telemetry()
    _Options.verbose = verbose


def _load(config: Path, data_root: Path | None = None) -> ModelConfig:
    """The config of `config` (a ConfigError names the field; the command exits 2)."""
    from evergreen.config import load_config

    cfg = load_config(config)
    if data_root is not None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(data_root)})})
    return cfg


def use_local_server() -> LocalStack | None:
    """Point Prefect at this project's server (`evergreen server start`) when it is up and
    PREFECT_API_URL is not set (or names it); returns its record. Without either, a command
    that runs a flow in this process gets a temporary server from Prefect."""
    from evergreen.apps.services import running_stack

    stack = running_stack()
    current = os.environ.get("PREFECT_API_URL")
    if stack is None or (current and current.rstrip("/") != stack.api_url):
        return None
    os.environ["PREFECT_API_URL"] = stack.api_url
    os.environ.setdefault("PREFECT_UI_URL", stack.ui_url)
    return stack


def _run_flow(
    name: str, cfg: ModelConfig, config: Path, parameters: dict[str, Any], *, overridden: bool, local: bool
) -> FlowOutcome:
    """Run the flow of deployment `name`: handed to the served deployments when they are up
    (unless `local`), else in this process (`evergreen.apps.runs.run_flow`)."""
    stack = use_local_server()
    from evergreen.apps.runs import run_flow

    return run_flow(
        name, cfg, config, parameters, overridden=overridden, local=local, verbose=_Options.verbose,
        runner_cwd=stack.cwd if stack else None, echo=lambda m: typer.echo(m, err=True),
    )


def _existing(path: Path | None, option: str, what: str) -> Path | None:
    """`path` made absolute; a usage error naming `option` when it does not exist."""
    if path is None:
        return None
    if not path.exists():
        raise typer.BadParameter(f"{what} {path} not found", param_hint=option)
    return path.resolve()


def _write_json(path: Path | None, obj: object) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


@app.command()
def stream(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", help="stream folder to write")],
    drift: Annotated[str, typer.Option(help="none|covariate|gradual|unit|concept|prior|bad")] = "none",
    drift_start: Annotated[str | None, typer.Option(help="day index (0-based) or YYYY-MM-DD")] = None,
    seed: Annotated[int, typer.Option(help="seed for drift injection")] = 0,
) -> None:
    """Write the demo production stream (daily batches and delayed labels) from NannyML's
    synthetic car-loan data, optionally with drift injected from a given day on."""
    from evergreen.simulation.stream import write_demo_stream

    if drift not in ("none", "covariate", "gradual", "gradual_covariate", "unit", "concept", "prior", "bad"):
        raise typer.BadParameter(f"unknown drift kind {drift!r}", param_hint="--drift")
    cfg = _load(config, data_root=out)
    start: int | str | None = int(drift_start) if drift_start and drift_start.isdigit() else drift_start
    info = write_demo_stream(cfg, str(out), drift=drift, drift_start=start, seed=seed)
    typer.echo(json.dumps(info.to_dict() if hasattr(info, "to_dict") else info.__dict__, indent=2, default=str))


@app.command()
def init(
    reference: Annotated[str, typer.Argument(help="your labelled reference table (Parquet or CSV, any fsspec path)")],
    target: Annotated[str, typer.Option("--target", "-t", help="the column holding the label")],
    batches: Annotated[str | None, typer.Option(help="folder of production batch files (named by date, e.g. 2024-01-31.parquet)")] = None,
    labels: Annotated[str | None, typer.Option(help="folder of delayed label files (id, target), named by delivery date")] = None,
    name: Annotated[str | None, typer.Option(help="model name (default: from the reference's file name)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="config file to write (default: <name>.yaml)")] = None,
    id_column: Annotated[str | None, typer.Option("--id", help="id column (default: inferred)")] = None,
    timestamp: Annotated[str | None, typer.Option(help="timestamp column (default: inferred)")] = None,
    problem_type: Annotated[str | None, typer.Option(help="binary_classification|multiclass_classification|regression")] = None,
    features: Annotated[str | None, typer.Option(help="comma-separated feature columns (default: inferred)")] = None,
    categorical: Annotated[str | None, typer.Option(help="comma-separated categorical features (default: inferred)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: a local SQLite store)")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing config file")] = False,
) -> None:
    """Write a config for your own model from your data: column roles, problem type, batch
    cadence and size, label delay and the defaults that fit them, each guess printed with
    how to change it. Next: `evergreen bootstrap --config FILE` for a first champion."""
    from evergreen.apps.onboard import InitError, infer_config, render_config, validate_inference

    split = lambda text: [c.strip() for c in text.split(",") if c.strip()] if text else None  # noqa: E731
    try:
        inference = infer_config(
            reference, target, batches=batches, labels=labels, name=name, id_column=id_column,
            timestamp=timestamp, problem_type=problem_type, features=split(features),
            categorical=split(categorical), tracking_uri=tracking_uri,
        )
        validate_inference(inference)
    except InitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    path = out or Path(f"{inference.config['name']}.yaml")
    if path.exists() and not force:
        typer.echo(f"error: {path} exists; pass --force to overwrite it or --out another file", err=True)
        raise typer.Exit(2)
    for g in inference.guesses:
        shown = ", ".join(map(str, g.value)) if isinstance(g.value, list) else g.value
        typer.echo(f"{g.field}: {shown}\n    {g.why}" + (f" (change: {g.change})" if g.change else ""))
    for note in inference.notes:
        typer.echo(f"note: {note}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config(inference), encoding="utf-8")
    typer.echo(f"wrote {path}\nnext: evergreen bootstrap --config {path}   (a first champion; --model FILE|URI takes in your own)")


@app.command()
def bootstrap(
    config: ConfigOpt,
    model: Annotated[str | None, typer.Option(help="your trained XGBoost model: a model file (.ubj/.json) or an MLflow model URI; default: train on the reference")] = None,
    out: OutOpt = None,
) -> None:
    """A first champion for a model with none (the `bootstrap` flow): trained on the labelled
    reference, or your own model taken in; it also records the monitor's reference (the
    champion's predictions on held-out labelled rows), so monitor, retrain, promote, serve and
    backtest work right after."""
    cfg = _load(config)
    use_local_server()
    from evergreen.apps.runs import run_here
    from flows.bootstrap import bootstrap as bootstrap_flow

    # A failure is raised: one `error:` line, exit 2 for a config error, else 1 (EvergreenGroup).
    result = run_here(bootstrap_flow, {"config": cfg, "model": model}, _Options.verbose).result
    _write_json(out, result.model_dump())
    typer.echo(result.message)


def _stream_root_of(batch: Path) -> Path | None:
    """A batch inside `<root>/batches/` of a written stream: that stream's root."""
    root = batch.resolve().parent.parent
    return root if (root / "monitor_reference.parquet").exists() else None


@app.command()
def monitor(
    config: ConfigOpt,
    batch: Annotated[Path | None, typer.Option(help="one batch file; default: every batch not yet monitored")] = None,
    data_root: Annotated[Path | None, typer.Option(help="override data.root of the config")] = None,
    out: OutOpt = None,
    local: LocalOpt = False,
) -> None:
    """Validate a batch, estimate drift and performance, emit drift events (the `monitor` flow).

    Exit status 0 when the run completed (drift or not), 1 when a batch was rejected or the
    run failed, 2 for a bad config or a missing input file."""
    batch = _existing(batch, "--batch", "batch file")
    data_root = _existing(data_root, "--data-root", "data root")
    root = data_root or (_stream_root_of(batch) if batch else None)
    cfg = _load(config, data_root=root)
    done = _run_flow(
        "monitor", cfg, config, {"batch": str(batch) if batch else None}, overridden=root is not None, local=local
    )
    results = done.result
    rows = [r.model_dump() for r in results]
    payload = rows[0] if batch is not None and len(rows) == 1 else {"batches": rows}
    _write_json(out, payload)
    for r in results:
        flag = "REJECTED" if not r.valid else ("DRIFT" if r.drift_detected else "ok")
        typer.echo(f"{r.batch_id}: {flag} {r.message}")
    if done.failed:
        typer.echo(done.message or "a batch was rejected", err=True)
        raise typer.Exit(1)


@app.command()
def retrain(
    config: ConfigOpt,
    data_root: Annotated[Path | None, typer.Option(help="override data.root of the config")] = None,
    trigger: Annotated[str, typer.Option(help="schedule|event|manual")] = "manual",
    event_id: Annotated[str | None, typer.Option(help="id of the event that asked for it")] = None,
    reason: Annotated[str | None, typer.Option(help="why (recorded on the version)")] = None,
    out: OutOpt = None,
    local: LocalOpt = False,
) -> None:
    """Train a candidate on the current window and register it as `challenger` (the `retrain`
    flow). Exit status 1 when the training data was rejected or the run failed."""
    data_root = _existing(data_root, "--data-root", "data root")
    cfg = _load(config, data_root=data_root)
    params = {"trigger": trigger, "event_id": event_id, "reason": reason}
    done = _run_flow("retrain", cfg, config, params, overridden=data_root is not None, local=local)
    _write_json(out, done.result.model_dump())
    typer.echo(done.result.message)
    if done.failed:
        raise typer.Exit(1)


def _report_decision(done: FlowOutcome, out: Path | None) -> None:
    _write_json(out, done.result.model_dump())
    typer.echo(done.message or done.result.decision)
    if done.failed:
        raise typer.Exit(1)


@app.command()
def promote(
    config: ConfigOpt,
    data_root: Annotated[Path | None, typer.Option(help="override data.root of the config")] = None,
    out: OutOpt = None,
    local: LocalOpt = False,
) -> None:
    """Gate the `challenger` against the `champion` on the freshest labelled data (the `promote`
    flow): pass -> canary, fail -> rejected. Exit status 1 when the gate failed."""
    data_root = _existing(data_root, "--data-root", "data root")
    cfg = _load(config, data_root=data_root)
    _report_decision(_run_flow("promote", cfg, config, {}, overridden=data_root is not None, local=local), out)


@app.command("canary-review")
def canary_review(
    config: ConfigOpt,
    data_root: Annotated[Path | None, typer.Option(help="override data.root of the config")] = None,
    out: OutOpt = None,
    local: LocalOpt = False,
) -> None:
    """Compare canary and champion on the traffic each served (the `canary-review` flow):
    promote, roll back, or report how much more evidence is needed."""
    data_root = _existing(data_root, "--data-root", "data root")
    cfg = _load(config, data_root=data_root)
    _report_decision(_run_flow("canary-review", cfg, config, {}, overridden=data_root is not None, local=local), out)


@app.command()
def rollback(
    config: ConfigOpt,
    reason: Annotated[str, typer.Option(help="why (recorded in the alias history)")],
    to: Annotated[str | None, typer.Option("--to", help="version to roll back to; default: the previous champion")] = None,
    out: OutOpt = None,
    local: LocalOpt = False,
) -> None:
    """Move `champion` back to the previous champion (or --to VERSION) and remove any canary."""
    cfg = _load(config)
    params = {"to_version": to, "reason": reason}
    _report_decision(_run_flow("rollback", cfg, config, params, overridden=False, local=local), out)


@app.command()
def history(
    config: ConfigOpt,
    model: Annotated[str | None, typer.Option(help="registered model name; default: the config's")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """Print the alias history of a model: time, alias, from, to, flow run, reason."""
    cfg = _load(config)
    from evergreen.adapters import registry, tracking

    tracking.connect(cfg.mlflow)
    moves = registry.alias_history(model or cfg.mlflow.model_name)
    if as_json:
        for m in moves:
            typer.echo(json.dumps(m.to_dict()))
        return
    typer.echo(f"{'time':32} {'alias':10} {'from':>5} {'to':>5}  {'by':28} {'flow run':36}  reason")
    for m in moves:
        typer.echo(
            f"{m.time:32} {m.alias:10} {m.from_version or '-':>5} {m.to_version or '-':>5}  "
            f"{m.actor[:28]:28} {m.flow_run_id or '-':36}  {m.reason}"
        )


@app.command()
def register(
    config: ConfigOpt,
    webhook_url: Annotated[
        str | None,
        typer.Option(envvar="EVERGREEN_WEBHOOK_URL", help="webhook for notifications (else notifications.webhook_url)"),
    ] = None,
) -> None:
    """Add a model to the fleet the deployments of prefect.yaml serve, with no edit to it: save
    the config as an `evergreen-model` block on the Prefect server (editable in the Prefect UI;
    its name is what triggers and schedules pass as `config`) and create the model's
    concurrency limits (registry lock, one run per flow at a time). With a webhook URL, also
    save a Prefect `Webhook` block and the automations that call it on the model's promotions,
    rollbacks and failed flow runs. Running it again updates them in place."""
    cfg = _load(config)
    use_local_server()
    if webhook_url:
        from pydantic import SecretStr

        cfg = cfg.model_copy(update={"notifications": cfg.notifications.model_copy(update={"webhook_url": SecretStr(webhook_url)})})
    from evergreen.apps.registration import register_model

    done = register_model(cfg)
    typer.echo(f"saved block evergreen-model/{done.block}")
    created = set(done.created_limits)
    for limit in done.limits:
        typer.echo(f"concurrency limit {limit} ({'created' if limit in created else 'exists'})")
    for automation in done.automations:
        typer.echo(f"automation {automation!r} calls block webhook/{done.webhook_block}")
    typer.echo(f"model {cfg.name} is served by every deployment of prefect.yaml (triggers, schedules)")


@app.command()
def unregister(
    name: Annotated[str, typer.Argument(help="the model's name (its config's `name`) or its block name")],
) -> None:
    """Remove a model from the fleet: its `evergreen-model` block, its concurrency limits, its
    notification webhook block and automations. Its MLflow registered model, versions and
    alias history are left alone. Running it again changes nothing."""
    use_local_server()
    from evergreen.apps.registration import unregister_model

    done = unregister_model(name)
    if not done.removed:
        typer.echo(f"nothing registered for {name}: no block evergreen-model/{name}, no concurrency limits or notifications of it")
    for what in done.removed:
        typer.echo(f"removed {what}")
    registry = f"its MLflow registered model {done.registry!r}" if done.registry else "its MLflow registry"
    typer.echo(f"{registry} is left alone (versions, aliases, history); delete it in MLflow if you mean to")


@app.command("serve-flows")
def serve_flows(
    only: Annotated[list[str] | None, typer.Option("--only", help="serve only these deployments of prefect.yaml")] = None,
    config: Annotated[str | None, typer.Option(help="serve one model only (block name or YAML path): every deployment, trigger and schedule is pinned to it; default: every registered model")] = None,
    schedules: Annotated[bool, typer.Option(help="keep the cron schedules of prefect.yaml")] = True,
    limit: Annotated[int | None, typer.Option(help="most flow runs at once")] = None,
) -> None:
    """Serve the deployments of prefect.yaml from this process (no work pool, no worker):
    their schedules and event triggers start runs here until interrupted."""
    from flows.deployments import serve_project

    serve_project(names=only or None, parameters={"config": config} if config else None, schedules=schedules, limit=limit)


server_app = typer.Typer(
    cls=EvergreenGroup,
    no_args_is_help=True,
    help="A local Prefect server and the served deployments (a warm runner), kept up in the "
    "background for this project (.evergreen/server): one-off commands use that server and hand "
    "their runs to the runner.",
)
app.add_typer(server_app, name="server")
DirOpt = Annotated[
    Path | None,
    typer.Option("--dir", help="where the server keeps its database, logs and state.json (default .evergreen/server; env EVERGREEN_SERVER_DIR)"),
]


def _print_stack(status: Any) -> None:  # noqa: ANN401 - services.StackStatus
    s = status.stack
    up = lambda ok: "up" if ok else "DOWN"  # noqa: E731
    typer.echo(f"Prefect server  {up(status.server_healthy):4}  {s.api_url}  (UI {s.ui_url}; pid {s.server_pid}; log {s.server_log})")
    typer.echo(f"served flows    {up(status.runner_healthy):4}  {s.runner_health_url}  (pid {s.runner_pid}; log {s.runner_log})")
    typer.echo(f"started {s.started_at} in {s.cwd}; models {s.config or 'every registered model'}; schedules {'on' if s.schedules else 'off'}")


@server_app.command("start")
def server_start(
    directory: DirOpt = None,
    port: Annotated[int, typer.Option(help="port of the Prefect server on 127.0.0.1")] = 4200,
    config: Annotated[str | None, typer.Option(help="serve one model only (block name or YAML path); default: every registered model")] = None,
    schedules: Annotated[bool, typer.Option(help="keep the cron schedules of prefect.yaml")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each part to answer")] = 300,
) -> None:
    """Start, in the background on 127.0.0.1, a Prefect server (SQLite in the folder, UI on)
    and `evergreen serve-flows` against it, and record both in <dir>/state.json. Then
    `monitor`, `retrain`, `promote`, `canary-review` and `rollback` hand their runs to the
    warm runner, and every command uses that server; `evergreen server stop` stops both."""
    from evergreen.apps.services import read_stack, stack_dir, stack_status, start_stack

    home = stack_dir(directory)
    previous = read_stack(home)
    if previous is not None:
        status = stack_status(previous)
        if status.up:
            typer.echo("already running:")
            _print_stack(status)
            return
        if status.server_running or status.runner_running:
            raise RuntimeError(f"a part of the server recorded in {home / 'state.json'} still runs but does not answer; run `evergreen server stop` first")
    stack = start_stack(home, port=port, config=config, schedules=schedules, timeout=timeout, log=lambda m: typer.echo(m, err=True))
    _print_stack(stack_status(stack))
    other = os.environ.get("PREFECT_API_URL")
    if other and other.rstrip("/") != stack.api_url:
        typer.echo(f"note: PREFECT_API_URL is set ({other}): commands use that server until it is unset")
    typer.echo(f"one-off commands in {stack.cwd} now use it; `evergreen server stop` stops it")


@server_app.command("status")
def server_status(
    directory: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the state as JSON")] = False,
) -> None:
    """Report the server and the served deployments of this project: URLs, pids, health.
    Exit status 0 when both answer, 1 otherwise."""
    from evergreen.apps.services import read_stack, stack_dir, stack_status

    home = stack_dir(directory)
    stack = read_stack(home)
    if stack is None:
        if as_json:
            typer.echo(json.dumps({"up": False, "dir": str(home)}))
        else:
            typer.echo(f"not running (no {home / 'state.json'}); start it with `evergreen server start`")
        raise typer.Exit(1)
    status = stack_status(stack)
    if as_json:
        typer.echo(json.dumps(status.to_dict()))
    else:
        _print_stack(status)
    if not status.up:
        raise typer.Exit(1)


@server_app.command("stop")
def server_stop(directory: DirOpt = None) -> None:
    """Stop the server and the served deployments that `evergreen server start` recorded in
    this folder (the database and logs stay)."""
    from evergreen.apps.services import stack_dir, stop_stack

    home = stack_dir(directory)
    stopped = stop_stack(home)
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else f"nothing to stop in {home}")


@app.command("deploy-file")
def deploy_file(
    overlay: Annotated[Path, typer.Argument(help="an overlay naming the work pool, job variables and pull steps (deploy/kubernetes.yaml, deploy/docker.yaml)", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="the prefect file to write (then `prefect deploy --all --prefect-file FILE`)")],
    project: Annotated[Path, typer.Option(help="the project's prefect.yaml", exists=True, dir_okay=False)] = Path("prefect.yaml"),
) -> None:
    """Write prefect.yaml's deployments for another work pool (Kubernetes, Docker): the
    overlay's pool, job variables and pull steps; schedules, triggers and concurrency as in
    prefect.yaml."""
    from evergreen.apps.deployfile import render_file

    out.write_text(render_file(overlay, project), encoding="utf-8")
    typer.echo(f"wrote {out}; deploy with: uv run prefect --no-prompt deploy --all --prefect-file {out}")


stack_app = typer.Typer(
    cls=EvergreenGroup,
    no_args_is_help=True,
    help="The production stack on 127.0.0.1 (.evergreen/stack): PostgreSQL, a Prefect server on it "
    "with basic auth, a process work pool with two workers, an MLflow server with its basic-auth app "
    "serving its artifacts, an S3 endpoint (moto) with the bucket `evergreen`. Credentials are "
    "generated at the first `up` (credentials.json, 0600; Prefect Secret blocks).",
)
app.add_typer(stack_app, name="stack")
StackDirOpt = Annotated[
    Path | None,
    typer.Option("--dir", help="the stack's folder (default .evergreen/stack; env EVERGREEN_STACK)"),
]


def _print_stack_status(rows: list[Any]) -> None:
    for r in rows:
        state = "up" if r.answering else ("NO ANSWER" if r.running else "DOWN")
        typer.echo(f"{r.name:10} {state:9} {r.url}  (pid {r.pid or '-'}; log {r.log or '-'})")


@stack_app.command("up")
def stack_up(
    directory: StackDirOpt = None,
    workers: Annotated[int, typer.Option(help="workers on the process work pool")] = 2,
    worker_limit: Annotated[int | None, typer.Option(help="most flow runs at once per worker (default: no limit)")] = None,
    deploy: Annotated[bool, typer.Option(help="`prefect deploy --all` of prefect.yaml onto the work pool")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each server to answer")] = 300,
) -> None:
    """Start what is not running yet (running twice changes nothing), configure Prefect (Secret
    blocks, work pool, automations), deploy prefect.yaml and start the workers; then print the
    services. `eval "$(evergreen stack env)"` points a shell at the stack."""
    from evergreen.apps import stack

    home = stack.stack_home(directory)
    stack.up(home, workers=workers, worker_limit=worker_limit, deploy=deploy, timeout=timeout, log=lambda m: typer.echo(m, err=True))
    _print_stack_status(stack.status(home))
    typer.echo(f'environment: eval "$(uv run evergreen stack env{f" --dir {home}" if directory else ""})"')


@stack_app.command("status")
def stack_status_cmd(
    directory: StackDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Each service of the stack: URL, pid, whether it answers. Exit status 0 when all do."""
    from dataclasses import asdict

    from evergreen.apps import stack

    home = stack.stack_home(directory)
    rows = stack.status(home)
    if as_json:
        typer.echo(json.dumps({"dir": str(home), "up": stack.is_up(home), "services": [asdict(r) for r in rows]}))
    elif not rows:
        typer.echo(f"no stack in {home}; start it with `evergreen stack up`")
    else:
        _print_stack_status(rows)
    if not rows or not all(r.answering for r in rows):
        raise typer.Exit(1)


@stack_app.command("down")
def stack_down(directory: StackDirOpt = None) -> None:
    """Stop the stack's processes by their recorded pids (databases, artifacts and credentials
    stay; the S3 endpoint keeps objects in memory, so they go)."""
    from evergreen.apps import stack

    home = stack.stack_home(directory)
    if not stack.down(home, log=typer.echo):
        typer.echo(f"nothing to stop in {home}")


@stack_app.command("env")
def stack_env_cmd(directory: StackDirOpt = None) -> None:
    """Print `export` lines for a shell: `eval "$(evergreen stack env)"` (Prefect API and auth
    string, MLflow server and user, S3 endpoint and keys)."""
    from evergreen.apps import stack

    typer.echo(stack.shell_exports(stack.stack_env(directory)))


@app.command()
def demo(
    config: Annotated[Path, typer.Option("--config", "-c", help="model config YAML", exists=True, dir_okay=False)] = Path("configs/demo.yaml"),
    workdir: Annotated[Path, typer.Option(help="where the demo keeps its data, registry and server")] = Path(".evergreen/demo"),
    drift: Annotated[str, typer.Option(help="drift injected: unit (an upstream unit change retraining fixes)|covariate|concept|prior|none")] = "unit",
    drift_start: Annotated[int, typer.Option(help="day index where the drift starts")] = 8,
    keep_server: Annotated[bool, typer.Option(help="leave the Prefect server running at the end")] = False,
    stack_dir: Annotated[
        Path | None,
        typer.Option("--stack", envvar="EVERGREEN_STACK", help="run on the production stack in this folder (`evergreen stack up`, e.g. .evergreen/stack): its Prefect server and workers, MLflow server and s3:// data"),
    ] = None,
    out: OutOpt = None,
) -> None:
    """The closed loop on embedded defaults: local Prefect server and MLflow store, the demo
    stream replayed day by day through the scoring service, monitor, retrain, gate, canary."""
    from flows.demo import run_demo

    summary = run_demo(
        config.resolve(), workdir.resolve(), drift=drift, drift_start=drift_start, keep_server=keep_server,
        stack_dir=stack_dir.resolve() if stack_dir else None,
        echo=typer.echo, progress=lambda day, i, n: typer.echo(f"[{i + 1:>2}/{n}] {'#' * (i + 1)}{'.' * (n - i - 1)} {day}"),
    )
    _print_demo_table(summary)
    _write_json(out, summary.to_dict())


def _print_demo_table(summary) -> None:  # noqa: ANN001
    typer.echo("")
    typer.echo(f"{'day':10} {'valid':5} {'drift':5} {'est.':>6} {'served':>6} {'champ':>5} {'canary':>6}  events / action")
    for r in summary.days:
        est = f"{r.estimated:.3f}" if r.estimated is not None else "-"
        served = f"{r.served_metric:.3f}" if r.served_metric is not None else "-"
        evs = ",".join(e.split(".")[-1] for e in r.events) or "-"
        alert = "yes" if (r.drift or r.degraded) else "no"
        typer.echo(f"{r.day:10} {str(r.valid)[0]:5} {alert:5} {est:>6} {served:>6} {r.champion or '-':>5} {r.canary or '-':>6}  {evs} / {r.action}")
    typer.echo("  (served: the metric of the day's served predictions against their labels, which arrive later)")
    typer.echo("")
    typer.echo(
        f"{summary.drift_injected} drift injected from {summary.drift_start_day}, first detected {summary.drift_first_detected_day}; "
        f"retrains {summary.retrains} (after the bootstrap), promotions {summary.promotions}, rollbacks {summary.rollbacks}; "
        f"final champion v{summary.final_champion}; {summary.seconds:.0f} s"
    )
    rec = summary.recovery
    if rec:
        typer.echo(
            f"served metric: {rec['before']:.3f} before the change, {rec['trough']:.3f} at its worst ({rec['trough_day']}), "
            f"{rec['recovered']:.3f} over the last days ({', '.join(rec['recovered_days'])})"
        )
    typer.echo("champion lineage:")
    for v in summary.lineage:
        why = f"episode {v['episode']}, {v['post_change_rows']} post-change rows" if v["episode"] else (v["reason"] or v["trigger"])
        typer.echo(f"  v{v['version']:<3} {v['status'] or '-':9} {v['rows'] or '-':>7} rows  data {v['dataset_digest']}  {why}")
    ui = summary.prefect_api_url.removesuffix("/api")
    if summary.server_kept:
        typer.echo(f"Prefect UI: {ui}  (flow runs, events; Artifacts: car-loan-status, evergreen-fleet, ...)")
        if summary.prefect_server_pid is not None:
            from evergreen.apps.services import stop_kept_server_hint

            typer.echo(f"            the demo's server keeps running; stop it with: {stop_kept_server_hint(summary.prefect_server_pid)}")
    else:
        typer.echo("Prefect UI: the demo's server is stopped; rerun with --keep-server to browse it")
    if summary.mlflow_tracking_uri.startswith(("http://", "https://")):
        typer.echo(f"MLflow UI:  {summary.mlflow_tracking_uri}")
    else:
        typer.echo(
            f"MLflow UI:  uv run mlflow ui --backend-store-uri {summary.mlflow_tracking_uri} --host 127.0.0.1 --port 5000"
            "  (then http://127.0.0.1:5000)"
        )


@app.command()
def backtest(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="write the report (policies, chunks) as JSON here")],
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", help="policy to replay, repeatable: default, never, always, schedule, schedule:K"),
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="draw realized/estimated metric per chunk and retrains (PNG)")] = None,
    data_root: Annotated[Path | None, typer.Option(help="the stream folder (overrides data.root)")] = None,
    max_chunks: Annotated[int | None, typer.Option(help="replay only the first N chunks")] = None,
    only: Annotated[bool, typer.Option("--only", help="replay the --policy names alone, without the baselines (timing runs)")] = False,
    check_latency: Annotated[bool, typer.Option("--check-latency", help="keep the gate's latency check (it measures this machine's load)")] = False,
) -> None:
    """Replay a labelled stream chunk by chunk through the loop's own steps (monitor, retrain
    policy, retrain, gate, canary review, rollback) on in-memory ports, for each policy plus
    the baselines never / always / schedule; print a table and write per-chunk rows and
    totals as JSON."""
    cfg = _load(config, data_root=data_root)
    from evergreen.apps.backtest import BacktestError, format_table, run_backtest
    from evergreen.decisions.policy import PolicyError

    try:
        result = run_backtest(
            cfg, policy or ["default"], baselines=not only, max_chunks=max_chunks,
            check_latency=check_latency, log=typer.echo,
        )
    except (BacktestError, PolicyError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    _write_json(out, result.to_dict())
    typer.echo(format_table(result))
    if plot is not None:
        from evergreen.apps.backtest import plot as draw

        draw(result, str(plot))
        typer.echo(f"plot: {plot}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """The benchmarks (bench/): each flow or service against a baseline measured in the same
    run. Arguments go to `python -m bench` (names, --rows, --rounds, --out, --markdown)."""
    from bench.__main__ import main as bench_main

    raise typer.Exit(bench_main(list(ctx.args)))


@app.command()
def serve(
    config: ConfigOpt,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 5001,
    workers: Annotated[int, typer.Option(min=1, help="worker processes on the port (each loads the models and writes its own prediction-log files)")] = 1,
    metrics: Annotated[bool, typer.Option(help="serve GET /metrics (Prometheus) and record what it shows")] = True,
    log_flush_seconds: Annotated[float, typer.Option(min=0.01, help="write the buffered prediction log at least this often (and at 100,000 rows, and at shutdown)")] = 5.0,
) -> None:
    """The scoring service: MLflow's /invocations protocol with the champion/canary split."""
    cfg = _load(config)
    from evergreen.apps.serving import LogSettings
    from evergreen.apps.serving import serve as run_service

    settings = LogSettings(flush_seconds=log_flush_seconds)
    run_service(cfg, host=host, port=port, workers=workers, metrics=metrics, log_settings=settings)


if __name__ == "__main__":  # pragma: no cover
    app()
