"""MLflow tracking plumbing: where runs go, and links people can open.

mlflow is imported inside the functions: it costs ~6 s and the CLI and scoring service
must not pay it unless they log something.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen.adapters import links
from evergreen.config import ConfigError, MlflowConfig

if TYPE_CHECKING:
    import pandas as pd

    from evergreen.config import ModelConfig
    from evergreen.decisions.evaluation import EvaluationResult
    from evergreen.decisions.window import TrainingWindow
    from evergreen.engines.snapshot import SnapshotInfo
    from evergreen.engines.training import TrainedModel
    from evergreen.loop.retraining import HoldOut


def connect(cfg: MlflowConfig) -> str:
    """Point this process's MLflow client at the configured tracking server / store.

    With `mlflow.username` and `mlflow.password` set, every MLflow request of this process
    (fluent API and `MlflowClient` alike) carries them as a basic-auth header; they are
    not written to the environment, so child processes and environment dumps never see
    the password. Returns the tracking URI as clients should use it (relative SQLite
    paths made absolute; never with credentials in it).
    """
    import mlflow

    uri = cfg.resolved_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    _send_credentials(cfg)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


class _BasicAuthHeader:
    """An MLflow request header provider (MLflow calls only these two methods) holding the
    Authorization header of the server `connect` last pointed at; None sends nothing.
    Credentials MLflow finds in its own variables (MLFLOW_TRACKING_USERNAME/PASSWORD set
    by the user) still take precedence: MLflow writes them over this header."""

    def __init__(self) -> None:
        self.header: str | None = None

    def in_context(self) -> bool:
        return self.header is not None

    def request_headers(self) -> dict[str, str]:
        return {} if self.header is None else {"Authorization": self.header}

    def __repr__(self) -> str:  # never the header itself
        return f"_BasicAuthHeader(set={self.header is not None})"


_AUTH = _BasicAuthHeader()
_AUTH_LOCK = threading.Lock()


def _send_credentials(cfg: MlflowConfig) -> None:
    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    header = None
    if cfg.username and cfg.password is not None:
        pair = f"{cfg.username}:{cfg.password.get_secret_value()}".encode()
        header = "Basic " + base64.b64encode(pair).decode("ascii")
    with _AUTH_LOCK:
        _AUTH.header = header
        # MLflow's documented way in is an entry point; registering in code keeps the
        # provider (and the secret) to processes that called `connect`. `register`
        # instantiates what it is given, hence the lambda.
        if header is not None and _AUTH not in list(_request_header_provider_registry):
            _request_header_provider_registry.register(lambda: _AUTH)


def check_registered_model(cfg: MlflowConfig) -> None:
    """ConfigError naming `mlflow.model_name` when the registry holds no model of that name
    (a flow that acts on an existing model must not create one or quietly do nothing)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = connect(cfg)
    client = MlflowClient(uri, uri)
    try:
        client.get_registered_model(cfg.model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise ConfigError(
            f"invalid Evergreen config:\n  mlflow.model_name: no registered model "
            f"{cfg.model_name!r} in the registry at {uri} (it has {names}); fix the name, "
            "or run a retrain first to register the model"
        ) from None


def ensure_experiment(cfg: MlflowConfig, name: str) -> str:
    """Id of the named experiment, created with an explicit artifact location if missing.

    Every experiment Evergreen uses is tagged as a model-training experiment
    (`links.EXPERIMENT_KIND_TAG`), so the MLflow UI opens it on its runs, not on the GenAI
    view's empty traces; an experiment created before the tag existed gets it here."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    kind = {links.EXPERIMENT_KIND_TAG: links.MODEL_TRAINING_KIND}
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if links.EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            client.set_experiment_tag(exp.experiment_id, links.EXPERIMENT_KIND_TAG, links.MODEL_TRAINING_KIND)
        return str(exp.experiment_id)
    location = f"{cfg.resolved_artifact_root().rstrip('/')}/{name}"
    try:
        return str(client.create_experiment(name, artifact_location=location, tags=kind))
    except MlflowException:
        # Another process created it between our read and our write.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def ui_base(cfg: MlflowConfig) -> str:
    """Where people open the MLflow UI: the tracking server itself, else `mlflow.ui_url`."""
    uri = cfg.resolved_tracking_uri()
    return uri if uri.startswith(("http://", "https://")) else cfg.ui_url


def run_url(cfg: MlflowConfig, experiment_id: str, run_id: str) -> str:
    """Link to a run in the MLflow UI (its model-training view)."""
    return links.mlflow_run_url(ui_base(cfg), experiment_id, run_id)


def training_run_name(model: str, trigger_kind: str, window_end: str | None) -> str:
    """A training run's name while its version is not known: model, trigger and data end."""
    end = f", {window_end[:10]}" if window_end else ""
    return f"train {model} ({trigger_kind}{end})"


def version_run_name(model: str, version: str, bootstrap: bool) -> str:
    """A training run's name once its model is registered: model and version."""
    return f"{'bootstrap' if bootstrap else 'retrain'} · {model} · v{version}"


def monitor_run_name(model: str, batch_id: str) -> str:
    """A monitor run's name: model and batch."""
    return f"monitor · {model} · {batch_id}"


def safe_metric_name(name: str) -> str:
    """MLflow metric keys allow alphanumerics, _ - . space / only."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Log the finite numeric values of a mapping to the active run."""
    import math

    import mlflow

    clean = {
        safe_metric_name(k): float(v)
        for k, v in metrics.items()
        if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
    }
    if clean:
        mlflow.log_metrics(clean, step=step)


# Enough rows, spread over the whole frame, for MLflow to see every column's type.
SCHEMA_SAMPLE_ROWS = 10_000


def pandas_dataset(
    frame: Any, source: str, targets: str | None, name: str, digest: str, rows: int | None = None
) -> Any:
    """`mlflow.data.from_pandas`, with the column schema inferred from a sample.

    MLflow infers a dataset's schema with a Python loop over every cell (~37 s per million
    rows here, most of a retrain's logging); the schema depends on the column types, which
    a few thousand rows spread over the frame show as well (the window has been validated:
    one type per column). The profile (rows, elements) and the digest are of the whole frame,
    or of `rows` rows when the frame stands for a larger table (of the same columns).
    """
    import mlflow
    from mlflow.models import infer_signature

    dataset = mlflow.data.from_pandas(frame, source=source, targets=targets, name=name, digest=digest)
    step = max(1, len(frame) // SCHEMA_SAMPLE_ROWS)
    # PandasDataset.schema is a functools.cached_property: fill its cache with the sample's.
    dataset.__dict__["schema"] = infer_signature(frame.iloc[::step]).inputs
    if rows is not None and rows != len(frame):
        dataset.__class__ = _sized_dataset(type(dataset))
        dataset._evergreen_profile = {"num_rows": int(rows), "num_elements": int(rows) * frame.shape[1]}
    return dataset


@functools.cache
def _sized_dataset(base: type) -> type:
    """MLflow's PandasDataset whose profile is given, not counted on its frame."""

    class SizedPandasDataset(base):  # type: ignore[misc, valid-type]
        @property
        def profile(self) -> Any:
            return self._evergreen_profile

    return SizedPandasDataset


@dataclass(frozen=True)
class LoggedCandidate:
    """Where a training run and its model were logged."""

    run_id: str
    experiment_id: str
    model_uri: str
    tracking_uri: str


def training_params(config: ModelConfig, model: Any, win: Any, holdout: Any, trigger_kind: str) -> dict[str, Any]:
    """The parameters a training run records: XGBoost's, the seed, the window, the split."""
    return {
        **{f"xgb.{k}": v for k, v in model.params.items()},
        "best_iteration": model.best_iteration,
        "seed": config.training.seed,
        "window.policy": config.retrain.window,
        "window.rows": win.rows,
        "window.reference_rows": win.reference_rows,
        "train_rows": holdout.train_rows,
        "evaluation_rows": holdout.evaluation_rows,
        "refit_on_holdout": model.probe is not None,
        "cross_fit_folds": len(model.cross_fit.folds) if model.cross_fit is not None else 0,
        "trigger": trigger_kind,
    }


def log_training_run(
    config: ModelConfig,
    model: TrainedModel,
    evaluation: EvaluationResult,
    snap: SnapshotInfo,
    win: TrainingWindow,
    holdout: HoldOut,
    trigger_kind: str,
    lineage_tags: dict[str, str],
) -> LoggedCandidate:
    """One run of the training experiment: params, metrics, the training data as an MLflow
    dataset input (the snapshot's digest, rows, time range and sources as tags), the model
    in XGBoost's format, the next monitor's NannyML reference, the evaluation and plots."""
    import mlflow

    from evergreen.adapters import registry
    from evergreen.engines import plots
    from evergreen.engines.scoring import monitor_reference

    uri = connect(config.mlflow)
    exp_id = ensure_experiment(config.mlflow, config.mlflow.training_experiment)
    name = training_run_name(config.name, trigger_kind, lineage_tags.get("evergreen.window_end"))
    tags = links.with_prefect_link(lineage_tags)
    with mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags) as run:
        mlflow.log_params(training_params(config, model, win, holdout, trigger_kind))
        log_metrics(evaluation.flat_metrics())
        # A window read in chunks has no frame: its schema is that of its held-out rows.
        frame = getattr(win, "frame", None)
        dataset = pandas_dataset(
            frame if frame is not None else holdout.evaluation, source=snap.uri, targets=config.columns.target,
            name=f"{config.name}-training", digest=snap.digest[:32], rows=snap.rows,
        )
        mlflow.log_input(
            dataset,
            context="training",
            tags={
                "evergreen.sha256": snap.digest,
                "rows": str(snap.rows),
                "time_min": str(snap.time_min),
                "time_max": str(snap.time_max),
                "sources": ",".join(snap.sources)[:4000],
            },
        )
        example = holdout.evaluation[list(config.columns.features)].head(5)
        logged = registry.log_model(model, example)
        # the hold-out scored by the model that never saw it (the probe, when the registered
        # model was refit on the hold-out too): NannyML calibrates on out-of-sample scores
        reference = monitor_reference(model.held_out(), holdout.evaluation, config, version="candidate")
        _log_parquet(reference, registry.REFERENCE_ARTIFACT)
        mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
        mlflow.log_figure(plots.feature_importance(model.feature_importance()), "plots/feature_importance.png")
        if evaluation.calibration is not None:
            mlflow.log_figure(plots.calibration_curve(evaluation.calibration), "plots/calibration.png")
    return LoggedCandidate(run_id=run.info.run_id, experiment_id=exp_id, model_uri=logged.model_uri, tracking_uri=uri)


def _log_parquet(frame: pd.DataFrame, artifact_file: str) -> None:
    """Log `frame` as a Parquet artifact at `artifact_file` of the active run."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent))


# ------------------------------------------------------------------ monitoring over batches
# One long-lived run per model in the monitoring experiment holds the model's monitoring
# history: each batch logs its metrics there with `step=` the batch's index, so MLflow draws
# them as lines over batches; it also holds plotly.js (once) and the history plot.

HISTORY_RUN_TAG = "evergreen.monitoring_history"
HISTORY_RUN_ID_TAG = "evergreen.monitoring_history_run_id"
PLOTLY_TAG = "evergreen.plotly_js"
HISTORY_POINTS = "history/batches.json"
HISTORY_PLOT = "plots/history.html"
BATCH_PLOTS_DIR = "plots"
# A batch's plot page stays under this (plotly.js is not in it; see `MonitorReport.plots_for`).
PLOT_PAGE_LIMIT = 500_000


def plotly_artifact_path() -> str:
    """Where plotly.js is logged in a history run. `.mjs`, not `.js`: MLflow's server sends
    `.js` artifacts as text/plain with `nosniff`, which browsers refuse to run as a script,
    and `.mjs` as text/javascript (the file is plotly's own bundle, loaded as a classic script)."""
    from importlib.metadata import version

    return f"plotly/plotly-{version('plotly')}.min.mjs"


def plotly_loader(run_id: str, artifact_path: str, relative: str) -> str:
    """Head markup that loads plotly.js from `artifact_path` of run `run_id`, offline (from
    the MLflow server or the artifact folder, never a CDN), before the page's figures run.

    MLflow's artifact viewer shows an HTML artifact in a sandboxed iframe from a `blob:` URL,
    against which no relative URL resolves: there the script comes from the server's
    `get-artifact` endpoint (the viewer's own page, given as the referrer, else the blob's
    origin). Opened from `get-artifact` directly, the same query relative to it; opened as a
    file from the artifact folder, `relative` (the artifact store's `<run id>/artifacts/`
    layout). `document.write` keeps the load blocking, so the figures' scripts find Plotly."""
    query = f"get-artifact?path={artifact_path}&run_uuid={run_id}"
    script = _PLOTLY_LOADER.replace("QUERY", json.dumps(query)).replace("RELATIVE", json.dumps(relative))
    return f'<script type="text/javascript">{script}</script>'


# What `plotly_loader` writes (QUERY and RELATIVE replaced by JSON strings).
_PLOTLY_LOADER = r"""window.PlotlyConfig = {MathJaxConfig: 'local'};
(function () {
  var q = QUERY, src = RELATIVE, here = window.location;
  try {
    if (here.protocol === 'blob:') {
      var origin = new URL(here.href.slice(5)).origin;
      var ref = document.referrer;
      src = new URL(q, ref && ref.indexOf(origin) === 0 ? ref : origin + '/').href;
    } else if (/\/get-artifact$/.test(here.pathname)) {
      src = q;
    }
  } catch (e) {}
  window.EVERGREEN_PLOTLY_SRC = src;
  document.write('<script src="' + src + '"><\/script>');
  window.addEventListener('load', function () {
    if (window.Plotly) return;
    var p = document.createElement('p');
    p.textContent = 'plotly.js did not load from ' + src + ': open this page in the MLflow UI.';
    document.body.insertBefore(p, document.body.firstChild);
  });
})();"""


def monitoring_history_run(config: ModelConfig, experiment_id: str) -> tuple[str, str]:
    """The model's monitoring history run (created, with plotly.js logged, the first time);
    returns its id and artifact URI."""
    from mlflow import MlflowClient
    from mlflow.entities import RunStatus

    client = MlflowClient()
    name = config.name.replace("'", "\\'")
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{HISTORY_RUN_TAG}` = 'true' and tags.`evergreen.model` = '{name}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        run = found[0]
    else:
        run = client.create_run(
            experiment_id,
            run_name=f"history · {config.name}",
            tags={
                HISTORY_RUN_TAG: "true",
                "evergreen.model": config.name,
                "mlflow.note.content": (
                    f"Monitoring history of {config.name}: every monitored batch logs its metrics here "
                    "with step = the batch's index (the Model metrics tab draws them over batches); "
                    f"`{HISTORY_PLOT}` plots the metric and the drift share per batch."
                ),
            },
        )
        # Finished, not running: it is a record that batches append to (MLflow accepts
        # metrics and artifacts on a finished run).
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
    path = plotly_artifact_path()
    if run.data.tags.get(PLOTLY_TAG) != path:
        _log_plotly(client, run.info.run_id, path)
        client.set_tag(run.info.run_id, PLOTLY_TAG, path)
    return run.info.run_id, run.info.artifact_uri


def _log_plotly(client: Any, run_id: str, path: str) -> None:
    """plotly's own bundled plotly.js (from the installed package) as an artifact."""
    import tempfile

    import plotly.offline

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        local.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
        client.log_artifact(run_id, str(local), artifact_path=str(Path(path).parent))


def batch_plotly_head(history_run_id: str) -> str:
    """The plotly loader for a batch run's pages under `plots/` (three folders up from a page
    is the experiment's folder, where the history run's artifacts are)."""
    path = plotly_artifact_path()
    return plotly_loader(history_run_id, path, f"../../../{history_run_id}/artifacts/{path}")


def monitoring_point(result: Any) -> dict[str, Any]:
    """What a batch adds to its model's history (plain JSON values; None where unknown)."""
    features = result.features or {}
    drifted = sum(bool(f.get("alert")) for f in features.values())
    return {
        "batch": result.batch_id,
        "valid": bool(result.valid),
        "rows": int(result.rows),
        "estimated": result.estimated_metric,
        "realized": result.realized_metric,
        "drifted_features": drifted if result.valid else None,
        "drift_share": (drifted / len(features)) if (result.valid and features) else None,
        "multivariate": (result.multivariate or {}).get("value") if result.valid else None,
        "drift_detected": bool(result.drift_detected),
        "performance_degraded": bool(result.performance_degraded),
    }


def log_monitoring_history(config: ModelConfig, run_id: str, result: Any, step: int) -> list[dict[str, Any]]:
    """Append one batch to the model's history run: its metrics at `step`, its point in
    `history/batches.json` (a re-monitored batch replaces its point) and the history plot
    redrawn. Returns the points."""
    import math
    import tempfile
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from evergreen.engines import plots

    client = MlflowClient()
    point = {"step": int(step), **monitoring_point(result)}
    names = {
        "estimated": f"estimated.{result.metric}", "realized": f"realized.{result.metric}",
        "drift_share": "drift_share", "drifted_features": "drifted_features",
        "multivariate": "multivariate.reconstruction_error", "rows": "rows",
    }  # fmt: skip
    now = int(time.time() * 1000)
    values = {names[k]: point[k] for k in names} | {"valid": float(point["valid"])}
    metrics = [
        Metric(safe_metric_name(k), float(v), now, int(step))
        for k, v in values.items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    ]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, HISTORY_POINTS, tmp)
            points = json.loads(Path(local).read_text(encoding="utf-8")).get("batches", [])
        except Exception:  # noqa: BLE001 - the first batch: no history yet
            points = []
    points = sorted([p for p in points if p.get("step") != point["step"]] + [point], key=lambda p: p["step"])
    client.log_dict(run_id, {"model": config.name, "metric": result.metric, "batches": points}, HISTORY_POINTS)
    path = plotly_artifact_path()
    head = plotly_loader(run_id, path, f"../{path}")
    client.log_text(run_id, plots.monitoring_history_page(config.name, result.metric, points, head), HISTORY_PLOT)
    return points


def describe_batch(result: Any, history_run_id: str | None = None) -> str:
    """A monitor run's description (Markdown, the run page's Description): what the batch
    showed and what the policy did with it."""
    lines = [f"**{result.batch_id}**: {result.rows:,} rows, " + ("valid" if result.valid else "**rejected**")]
    if not result.valid:
        lines.append(f"- why: {' '.join(str(result.message).split())}")
    else:
        drifted = sorted(n for n, f in (result.features or {}).items() if f.get("alert"))
        lines.append(f"- drifted features: {', '.join(drifted) if drifted else 'none'} (of {len(result.features or {})})")
        for kind, value in (("estimated", result.estimated_metric), ("realized", result.realized_metric)):
            if value is not None:
                lines.append(f"- {kind} {result.metric}: {value:.4f}")
        if result.performance_degraded:
            lines.append("- **performance degraded**")
    if result.reasons:
        lines.append(f"- reasons: {'; '.join(result.reasons)}")
    if result.decision and result.decision != "none":
        lines.append(f"- retrain policy: {result.decision}" + (f" ({result.policy})" if result.policy else ""))
    if result.events:
        lines.append(f"- events: {', '.join(result.events)}")
    if history_run_id:
        lines.append(f"- the model's history over batches: run `{history_run_id}` (history · {result.model})")
    return "\n".join(lines)[:5000]


def log_monitor_run(
    config: ModelConfig,
    result: Any,
    step: int,
    plots: dict[str, str],
    chunks: list[dict],
    flow_run_id: str | None,
    history_run_id: str | None = None,
) -> tuple[str, str, str]:
    """One MLflow run per monitored batch (a `reports.MonitorResult`) in the monitoring
    experiment: metrics, tags, plots. Returns the run id, experiment id and a link."""
    import mlflow

    connect(config.mlflow)
    exp_id = ensure_experiment(config.mlflow, config.mlflow.monitoring_experiment)
    tags = {
        "evergreen.model": config.name,
        "evergreen.batch": result.batch_id,
        "evergreen.valid": str(result.valid).lower(),
        "evergreen.drift_detected": str(result.drift_detected).lower(),
        "evergreen.performance_degraded": str(result.performance_degraded).lower(),
        "evergreen.events": ",".join(result.events),
    }
    if history_run_id:
        tags[HISTORY_RUN_ID_TAG] = history_run_id
    tags["mlflow.note.content"] = describe_batch(result, history_run_id)
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
        tags = links.with_prefect_link(tags, flow_run_id)
    name = monitor_run_name(config.name, result.batch_id)
    with mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags) as run:
        metrics: dict[str, float | None] = {"valid": float(result.valid), "rows": float(result.rows)}
        # Columns with values the reference never had (beyond its range, unseen categories).
        metrics["distribution_findings"] = float(len(result.distribution_findings))
        if result.valid:
            metrics |= {f"drift.{name}": f.get("value") for name, f in result.features.items()}
            metrics["drifted_features"] = float(sum(bool(f.get("alert")) for f in result.features.values()))
            metrics["drift_share"] = monitoring_point(result)["drift_share"]
            if result.multivariate:
                metrics["multivariate.reconstruction_error"] = result.multivariate.get("value")
            metrics[f"estimated.{result.metric}"] = result.estimated_metric
            metrics[f"realized.{result.metric}"] = result.realized_metric
        log_metrics(metrics, step=step)
        mlflow.log_dict(result.model_dump(), "monitor_result.json")
        if chunks:
            mlflow.log_dict({"chunks": chunks}, "chunks.json")
        for name, html in plots.items():
            mlflow.log_text(html, f"{BATCH_PLOTS_DIR}/{name}.html")
    return run.info.run_id, exp_id, run_url(config.mlflow, exp_id, run.info.run_id)


class MlflowRunLog:
    """Runs in MLflow (`evergreen.adapters.ports.RunLog`): the training run that holds the
    model the registry versions, and one run per monitored batch with NannyML's plots."""

    def log_training_run(self, config, model, evaluation, snap, win, holdout, trigger_kind, lineage_tags):  # noqa: ANN001, ANN201
        return log_training_run(config, model, evaluation, snap, win, holdout, trigger_kind, lineage_tags)

    def name_training_run(self, config: ModelConfig, run_id: str, version: str, bootstrap: bool) -> None:
        """Rename the training run after the version it registered (`version_run_name`)."""
        from mlflow import MlflowClient

        uri = connect(config.mlflow)
        client = MlflowClient(uri, uri)
        client.set_tag(run_id, "mlflow.runName", version_run_name(config.name, version, bootstrap))
        page = links.mlflow_version_url(ui_base(config.mlflow), config.mlflow.model_name, version)
        note = f"Registered as [{config.mlflow.model_name} v{version}]({page}); its page says what became of it."
        client.set_tag(run_id, "mlflow.note.content", note)

    def publish_monitor(
        self, config: ModelConfig, result: Any, index: int, report: Any, chunks: list[dict], flow_run_id: str | None
    ) -> tuple[str | None, str | None]:
        """`monitoring.plots` decides the plots: every plot when the batch alerts. The page
        loads plotly.js from the model's history run (logged there once), and the batch is
        appended to that run's history (metrics at step `index`, the history plot)."""
        connect(config.mlflow)
        exp_id = ensure_experiment(config.mlflow, config.mlflow.monitoring_experiment)
        history_run_id, _ = monitoring_history_run(config, exp_id)
        plots = {}
        if report is not None:
            alerting = result.drift_detected or result.performance_degraded
            plots["monitor"] = report.plots_for(
                config.monitoring.plots, alerting, batch_plotly_head(history_run_id), max_bytes=PLOT_PAGE_LIMIT
            )
        run_id, _, url = log_monitor_run(config, result, index, plots, chunks, flow_run_id, history_run_id)
        log_monitoring_history(config, history_run_id, result, index)
        return run_id, url
