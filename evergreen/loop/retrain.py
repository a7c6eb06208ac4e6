"""The retrain step: may a retrain start -> versioned window -> validate -> XGBoost ->
evaluate -> log -> register a `challenger`. The `retrain` flow runs it with Prefect tasks;
the backtest with plain calls on its replay's ports.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from evergreen import events
from evergreen.adapters import registry
from evergreen.adapters.ports import Ports
from evergreen.config import ModelConfig
from evergreen.decisions import policy
from evergreen.decisions.episodes import Episode
from evergreen.engines import validation
from evergreen.lineage import Trigger, code_version
from evergreen.loop import retraining, sources, state, window_stream
from evergreen.loop.common import MANUAL, Actor, registry_lock
from evergreen.loop.runner import DIRECT, Runner
from evergreen.reports import RetrainResult
from evergreen.times import utc, utc_series

DIGEST_TAG = "evergreen.dataset_digest"
SETTINGS_TAG = "evergreen.training_settings_digest"


def retrain(
    ports: Ports,
    config: ModelConfig,
    trigger: Trigger,
    *,
    run: Runner = DIRECT,
    actor: Actor = MANUAL,
    lineage: dict[str, str] | None = None,
    policy_name: str = "default",
) -> RetrainResult:
    """Train a candidate on the current window and register it as `challenger` (with an
    empty registry it also becomes `champion`: the bootstrap).

    Returns the result with `status`: `skipped` (the start rule held it, or its snapshot is
    the data a registered version was trained on with the same settings: `blocked_by`
    `same_data`, nothing trained or registered), `rejected` (the window or a labels file
    failed validation: nothing trained, nothing stored) or `registered`. `lineage` adds tags
    to the version (the flow run, deployment)."""
    run.part("check-config-columns", sources.check_config_columns, config)
    start, data_clock, episode = run.part(
        "decide-retrain-start", check_start, ports, config, trigger.kind, policy_name, io=True
    )
    if not start.allowed:
        run.log("retrain skipped: %s", start.reason)
        return RetrainResult(
            model_name=config.mlflow.model_name, status="skipped", trigger=trigger.__dict__,
            message=start.reason, blocked_by=start.blocked_by,
        )

    # The labels files are checked while the window is planned (both only read); a bad labels
    # file rejects the run whatever became of the window. The window is held by reference
    # (`window_stream`: its rows' keys, times and targets) and read in chunks, so its size
    # is not bounded by memory; it is validated while its snapshot is staged (each reads the
    # chunks; together they take the time of one on two CPUs), and the staged copy is
    # published only if the window is valid, so rejected data leaves no snapshot behind.
    labels_checked = run.submit("check-label-files", sources.check_label_files, config, io=True)
    window_error = None
    try:
        win = run.part("assemble-training-window", window_stream.plan_training_window, config, io=True)
    except Exception as exc:  # noqa: BLE001 - re-raised below unless a labels file explains it
        window_error = exc
    bad_labels = [r for r in labels_checked.result() if not r.success]
    if bad_labels:
        return _reject(ports, config, trigger, bad_labels, None, run)
    if window_error is not None:
        raise window_error
    reference = run.part("load-monitor-reference", sources.read_monitor_reference, config, ports.registry, io=True)
    suite = retraining.training_suite(run.part("derive-suite", validation.derive_suite, reference, config))
    checking = run.submit("validate-batch", retraining.validate_window, win, suite)
    staged = run.part(
        "snapshot-training-data", ports.snapshots.stage_chunks, win.chunks, list(win.sources), config.columns.timestamp,
        io=True,
    )
    report = None
    try:
        report = checking.result()
    finally:
        win.release()
        if report is None or not report.success:
            run.part("discard-snapshot", ports.snapshots.discard, staged, io=True)
    if not report.success:
        return _reject(ports, config, trigger, [report], win, run)

    snap = run.part("publish-snapshot", ports.snapshots.publish, staged, io=True)
    novel = run.part("check-new-data", check_new_data, ports, config, snap.digest, io=True)
    if not novel.allowed:
        run.log("retrain skipped: %s", novel.reason)
        return _result(
            config, win, snap, trigger, status="skipped", message=novel.reason, blocked_by=novel.blocked_by
        )
    # In an open alert episode the model learns the world after its change point (weighted
    # rows) and is judged on post-change rows it never saw.
    change_point = utc(episode.change_point) if episode is not None and episode.change_point is not None else None
    holdout = run.part(
        "hold-out-recent", retraining.hold_out_rows, win.timestamps, _snapshot_rows(ports, snap, config), config,
        change_point,
    )
    model = run.part("train-model", _train, ports, snap, holdout, config)
    evaluation = run.part("evaluate-model", retraining.evaluate_model, model.held_out(), holdout.evaluation, config)
    tags = lineage_tags(config, snap, trigger, lineage or {}) | {
        state.TRAIN_END_TAG: str(holdout.train_end),
        state.WINDOW_END_TAG: str(win.timestamps.max()),
    }
    if episode is not None and change_point is not None:
        post = int((utc_series(win.timestamps) >= change_point).sum())
        tags |= {
            state.EPISODE_TAG: episode.id,
            state.CHANGE_POINT_TAG: change_point.isoformat(),
            state.POST_CHANGE_ROWS_TAG: str(post),
            state.WINDOW_BATCH_ROWS_TAG: str(win.rows - win.reference_rows),
            **({state.EPISODE_PHASE_TAG: "settling"} if episode.settling else {}),
        }
    if data_clock is not None:
        tags[state.DATA_CLOCK_TAG] = data_clock.isoformat()
    tags |= metric_tags(evaluation)
    logged = run.part(
        "log-training-run", ports.runs.log_training_run,
        config, model, evaluation, snap, win, holdout, trigger.kind, tags, io=True,
    )
    version, bootstrap = run.part(
        "register-candidate", register_candidate, ports, logged.model_uri, logged.run_id, tags, actor, run, io=True
    )
    run.part(
        "name-training-run", ports.runs.name_training_run, config, logged.run_id, version.version, bootstrap, io=True
    )
    run.part(
        "emit-event", ports.events.emit, events.MODEL_REGISTERED,
        {
            "version": version.version,
            "run_id": logged.run_id,
            "dataset_digest": snap.digest,
            "bootstrap": bootstrap,
            "aliases": version.aliases,
            "metric": config.metric,
            "value": evaluation.value,
            "trigger": trigger.kind,
            "trigger_event_id": trigger.event_id,
        },
        io=True,
    )
    message = f"registered {config.mlflow.model_name} v{version.version} as {', '.join(version.aliases)}"
    run.log(message)
    return _result(
        config, win, snap, trigger, status="registered", events=[events.MODEL_REGISTERED],
        version=version.version, run_id=logged.run_id, aliases=version.aliases, bootstrap=bootstrap,
        metrics=evaluation.flat_metrics(), tracking_uri=logged.tracking_uri, message=message,
    )


def check_start(
    ports: Ports, config: ModelConfig, trigger: str, policy_name: str = "default"
) -> tuple[policy.StartCheck, Any, Episode | None]:
    """The retrain policy's start rule on the loop state now (`state.build_loop_state`);
    returns the decision, the data clock to tag the new version with and the open alert
    episode (None without one: its change point shapes the window's weights and hold-out)."""
    now = state.data_clock(config, ports.store)
    chosen = policy.Policy.named(policy_name, config.retrain)
    if trigger == "manual":  # no check applies to a run a person asked for: no state to read
        return policy.decide_start(policy.LoopState(now=now), chosen, trigger), now, None
    loop_state = state.build_loop_state(config, ports.store, ports.registry, now)
    episode = loop_state.episode if loop_state.episode is not None and loop_state.episode.open else None
    return policy.decide_start(loop_state, chosen, trigger), now, episode


def check_new_data(ports: Ports, config: ModelConfig, dataset_digest: str) -> policy.StartCheck:
    """`policy.check_new_data` against the newest registered version and the champion.

    A candidate no alias reached and no decision touched (its registration was cut short
    before the `challenger` move) does not count as registered: the retrain registers its
    data again, reachable this time."""
    reg = ports.registry
    champion = reg.version_by_alias(registry.CHAMPION)
    aliased = {champion.version if champion else None}
    aliased |= {v.version for a in (registry.CHALLENGER, registry.CANARY) if (v := reg.version_by_alias(a))}
    # The listing carries no aliases (MLflow's search leaves them out): they are read above.
    registered = [v for v in reg.list_versions() if v.version in aliased or v.status != "candidate"]
    known = [(registered[-1], "the newest version")] if registered else []
    if champion is not None and all(champion.version != v.version for v, _ in known):
        known.append((champion, "the champion"))
    trained = [
        policy.TrainedVersion(v.version, v.tags.get(DIGEST_TAG), v.tags.get(SETTINGS_TAG), role) for v, role in known
    ]
    return policy.check_new_data(dataset_digest, settings_digest(config), trained)


def settings_digest(config: ModelConfig) -> str:
    """sha256 of what shapes a model besides its data: problem type, metric, feature and
    target columns, training settings. Two retrains with the same data and this digest
    train the same model (training is seeded)."""
    import hashlib
    import json

    cols = config.columns
    settings = {
        "problem_type": config.problem_type,
        "metric": config.metric,
        "columns": {"target": cols.target, "features": cols.features, "categorical": cols.categorical},
        "training": config.training.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def register_candidate(
    ports: Ports, model_uri: str, run_id: str, tags: dict[str, str], actor: Actor, run: Runner
) -> tuple[registry.VersionInfo, bool]:
    """A new version with alias `challenger` and status candidate; with no champion yet it
    also becomes `champion` (bootstrap). Returns the version and whether it was the bootstrap.

    The version is created with all its tags in one write, before any alias reaches it; a
    process killed before the alias move leaves an unreachable candidate, like a superseded
    one. In a bootstrap `champion` moves before `challenger`, so the service gets its model
    even if the second move is lost."""
    reg = ports.registry
    with registry_lock(ports, actor, run):
        bootstrap = reg.version_by_alias(registry.CHAMPION) is None
        version = reg.create_version(
            model_uri, run_id,
            {**tags, registry.STATUS_TAG: "candidate", state.BOOTSTRAP_TAG: str(bootstrap).lower()},
        )
        if bootstrap:
            reg.move_alias(registry.CHAMPION, version.version, "bootstrap: empty registry", actor.name, actor.flow_run_id)
            reg.set_tags(version.version, {registry.STATUS_TAG: "champion"})
        reg.move_alias(registry.CHALLENGER, version.version, "retrained candidate", actor.name, actor.flow_run_id)
    return reg.get_version(version.version), bootstrap


def lineage_tags(config: ModelConfig, snap: Any, trigger: Trigger, extra: dict[str, str]) -> dict[str, str]:
    """Where the version came from: the snapshot, the code, the trigger (and the flow run)."""
    return {
        "evergreen.model": config.name,
        DIGEST_TAG: snap.digest,
        SETTINGS_TAG: settings_digest(config),
        "evergreen.dataset_uri": snap.uri,
        "evergreen.dataset_rows": str(snap.rows),
        **({"evergreen.dataset_time_min": str(snap.time_min)} if getattr(snap, "time_min", None) is not None else {}),
        "evergreen.code_version": code_version(),
        **extra,
        **trigger.tags(),
    }


def metric_tags(evaluation: Any) -> dict[str, str]:
    """The held-out metrics a version carries as tags (`evergreen.metric.<name>`; the
    per-slice ones stay in the training run): its registry page shows them."""
    return {
        f"evergreen.metric.{name}": f"{value:.6g}"
        for name, value in evaluation.flat_metrics().items()
        if not name.startswith("slice.")
    }


def _reject(ports: Ports, config: ModelConfig, trigger: Trigger, reports: list, win: Any, run: Runner) -> RetrainResult:
    """Nothing is trained or registered: `evergreen.data.rejected` names each file and failure."""
    message = "; ".join(r.summary() for r in reports)
    failures = [{**f.to_dict(), "file": r.batch_id} for r in reports for f in r.failures]
    files = [r.batch_id for r in reports]
    run.part(
        "emit-event", ports.events.emit, events.DATA_REJECTED,
        {"batch_id": "training-window", "files": files, "failures": failures, "reason": message},
        io=True,
    )
    run.log("training data rejected: %s", message, level="error")
    if win is None:
        return RetrainResult(
            model_name=config.mlflow.model_name, status="rejected", trigger=trigger.__dict__,
            message=message, events=[events.DATA_REJECTED],
        )
    return _result(config, win, None, trigger, status="rejected", message=message, events=[events.DATA_REJECTED])


def _result(config: ModelConfig, win: Any, snap: Any, trigger: Trigger, **fields: Any) -> RetrainResult:
    return RetrainResult(
        model_name=config.mlflow.model_name,
        dataset_digest=snap.digest if snap else None,
        dataset_uri=snap.uri if snap else None,
        dataset_reused=bool(snap and not snap.created),
        rows=snap.rows if snap else win.rows,
        trigger=trigger.__dict__,
        sources=list(win.sources),
        excluded=dict(win.excluded),
        **fields,
    )



def _train(ports: Ports, snap: Any, holdout: retraining.RowHoldOut, config: ModelConfig) -> Any:
    """XGBoost on the window's training rows, read from its published snapshot a row group
    at a time (categorical text as Parquet stores it: no string per row). XGBoost reads the
    rows several times; a window of at most `data.memory_rows` rows is read once and kept."""
    cols = config.columns
    dictionary = [c for c in cols.categorical if c in snap.columns]

    def read(columns: list[str], needed: Any) -> Any:
        return ports.snapshots.read_rows(snap.uri, columns, needed, dictionary=dictionary)

    if snap.rows <= config.data.memory_rows:
        trained = None if config.training.refit_on_holdout else holdout.roles != retraining.EVALUATE
        kept = list(read([*cols.features, cols.target], trained))

        def read(columns: list[str], needed: Any) -> Any:  # noqa: F811 - the kept rows instead
            return ((start, frame[columns]) for start, frame in kept)

    return retraining.train_rows(read, holdout, config)


def _snapshot_rows(ports: Ports, snap: Any, config: ModelConfig) -> Any:
    """`take(positions)`: the snapshot's rows at these positions (ascending), as one frame
    with the window's columns in their order (canonical types: a column of whole numbers
    reads as integers)."""
    from evergreen.decisions.window import window_columns

    def take(positions: Any) -> pd.DataFrame:
        import numpy as np

        needed = np.zeros(snap.rows, dtype=bool)
        needed[positions] = True
        parts = []
        for start, frame in ports.snapshots.read_rows(snap.uri, list(snap.columns), needed):
            mask = needed[start : start + len(frame)]
            parts.append(frame[mask])
        joined = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=snap.columns)
        return joined[window_columns(config.columns)]

    return take
