"""The bootstrap step: a first champion for a model that has none, from the user's data.

Either trained on the labelled reference table (the most recent `training.evaluation_fraction`
of it held out, as a retrain does, and with `training.refit_on_holdout` the served model refit
on all of it once its rounds are chosen) or the user's own already-trained XGBoost model taken in
(`engines.model_import`: a native model file or an MLflow model URI). Either way the reference
is snapshotted content-addressed, the model is evaluated, logged with the next monitor's
NannyML reference (the champion's predictions on held-out labelled rows: the monitor and the
retrain read it from the registry from then on) and registered as `champion`. Nothing else
(batches, labels) is needed, so `monitor`, `retrain`, `promote`, `serve` and `backtest` work on
the user's data right after it.
"""

from __future__ import annotations

from evergreen import events
from evergreen.adapters import registry
from evergreen.adapters.ports import Ports
from evergreen.config import ModelConfig
from evergreen.decisions.window import assemble_window
from evergreen.lineage import Trigger
from evergreen.loop import retraining, sources, state
from evergreen.loop.common import MANUAL, Actor
from evergreen.loop.retrain import lineage_tags, metric_tags, register_candidate
from evergreen.loop.runner import DIRECT, Runner
from evergreen.reports import RetrainResult

BOOTSTRAP_TRIGGER = Trigger(kind="manual", reason="bootstrap")


class BootstrapError(ValueError):
    """Inputs the bootstrap cannot use; the message names the file or setting to fix."""


def bootstrap(
    ports: Ports,
    config: ModelConfig,
    *,
    model_source: str | None = None,
    run: Runner = DIRECT,
    actor: Actor = MANUAL,
    lineage: dict[str, str] | None = None,
) -> RetrainResult:
    """Register a first `champion` for `config` (skipped when it has one already).

    `model_source`: the user's trained XGBoost model to take in (native file or MLflow URI);
    without it a model is trained on the reference."""
    name = config.mlflow.model_name
    champion = run.part("read-champion", ports.registry.version_by_alias, registry.CHAMPION, io=True)
    if champion is not None:
        message = (
            f"{name} already has champion v{champion.version}: nothing to bootstrap "
            "(`evergreen retrain` trains the next version)"
        )
        return RetrainResult(model_name=name, status="skipped", message=message, blocked_by="champion_exists",
                             trigger=BOOTSTRAP_TRIGGER.__dict__)
    reference = run.part("read-training-reference", read_reference, config, io=True)
    policy = config.retrain.model_copy(update={"include_reference": True})
    win = run.part("assemble-training-window", assemble_window, reference, [], policy, config.columns)
    if win.rows < 20:
        raise BootstrapError(
            f"the reference {config.data.path('training_reference')} has {win.rows} labelled rows; "
            "a first model needs at least 20"
        )
    staged = run.part("snapshot-training-data", ports.snapshots.stage, win.frame, ["reference"], config.columns.timestamp, io=True)
    snap = run.part("publish-snapshot", ports.snapshots.publish, staged, io=True)
    if model_source is None:
        holdout = run.part("hold-out-recent", retraining.hold_out_recent, win.frame, config)
        model = run.part("train-model", _train, holdout.train, config)
        if config.training.refit_on_holdout:
            # As a retrain: once early stopping chose the rounds, the served model learns every
            # reference row; the fit without the hold-out stays as its probe, which evaluates.
            model = run.part("refit-on-holdout", _refit, model, win.frame, config)
    else:
        # The user's model was trained elsewhere: all of the reference is its evaluation
        # and the monitor's reference (pass a reference it was not trained on, e.g. its
        # test period, for unbiased estimates).
        holdout = retraining.HoldOut(train=win.frame.iloc[:0], evaluation=win.frame)
        model = run.part("import-model", _import, model_source, config, win.frame)
    evaluation = run.part("evaluate-model", retraining.evaluate_model, model.held_out(), holdout.evaluation, config)
    trigger = Trigger(kind="manual", reason="bootstrap: imported model" if model_source else "bootstrap: trained on the reference")
    tags = lineage_tags(config, snap, trigger, lineage or {}) | {
        state.TRAIN_END_TAG: str(win.frame[config.columns.timestamp].max() if model_source else holdout.train[config.columns.timestamp].max()),
        state.WINDOW_END_TAG: str(win.frame[config.columns.timestamp].max()),
    }
    if model_source:
        tags["evergreen.imported_from"] = model_source[:4000]
    tags |= metric_tags(evaluation)
    logged = run.part(
        "log-training-run", ports.runs.log_training_run,
        config, model, evaluation, snap, win, holdout, trigger.kind, tags, io=True,
    )
    version, _ = run.part(
        "register-candidate", register_candidate, ports, logged.model_uri, logged.run_id, tags, actor, run, io=True
    )
    run.part(
        "name-training-run", ports.runs.name_training_run, config, logged.run_id, version.version, True, io=True
    )
    run.part(
        "emit-event", ports.events.emit, events.MODEL_REGISTERED,
        {
            "version": version.version, "run_id": logged.run_id, "dataset_digest": snap.digest,
            "bootstrap": True, "aliases": version.aliases, "metric": config.metric,
            "value": evaluation.value, "trigger": trigger.kind, "trigger_event_id": None,
        },
        io=True,
    )
    how = f"imported from {model_source}" if model_source else f"trained on {len(holdout.train):,} reference rows"
    if model.probe is not None:
        how += f", then refit on all {len(holdout.train) + len(holdout.evaluation):,}"
    message = (
        f"registered {name} v{version.version} as champion ({how}; {config.metric} "
        f"{evaluation.value:.4g} on {len(holdout.evaluation):,} held-out rows)"
    )
    run.log(message)
    return RetrainResult(
        model_name=name, status="registered", version=version.version, run_id=logged.run_id,
        dataset_digest=snap.digest, dataset_uri=snap.uri, dataset_reused=not snap.created, rows=snap.rows,
        aliases=version.aliases, bootstrap=True, metrics=evaluation.flat_metrics(),
        tracking_uri=logged.tracking_uri, trigger=trigger.__dict__, sources=["reference"],
        message=message, events=[events.MODEL_REGISTERED],
    )


def read_reference(config: ModelConfig):  # noqa: ANN201 - a DataFrame
    """The labelled reference table (BootstrapError naming the file and the field when absent)."""
    from evergreen.adapters import io

    path = config.data.path("training_reference")
    if not io.exists(path):
        raise BootstrapError(
            f"training reference {path} not found: set data.training_reference in the config to "
            "your labelled reference table (Parquet or CSV), or write one with `evergreen init`"
        )
    sources.check_config_columns(config)
    return io.read_table(path, datetime_columns=[config.columns.timestamp])


def _train(frame, config: ModelConfig):  # noqa: ANN001, ANN202
    from evergreen.engines import training

    return training.train_model(frame, config)


def _refit(model, frame, config: ModelConfig):  # noqa: ANN001, ANN202
    from evergreen.engines import training

    return training.refit_on(model, frame, config)


def _import(source: str, config: ModelConfig, reference):  # noqa: ANN001, ANN202
    from evergreen.engines.model_import import import_model

    return import_model(source, config, reference)
