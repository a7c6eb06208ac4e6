"""The MLflow model registry behind a small interface: versions, aliases, status tags and the
alias history that MLflow itself does not keep.

Alias history lives in the registry too, as registered-model tags `evergreen.history.<seq>`
(one JSON record per move), so it survives restarts and travels with the registry.

MLflow has no transactions across writes, so every transition is ordered to be safe to stop
anywhere (a killed process, a tracking server that goes away):

- tags that carry a decision (gate results, rejection reasons) are written before the alias
  move that acts on it, so whatever an alias reaches is fully described;
- one alias move is the commit point of each transition; the writes after it (status tags,
  removing the alias the version came from) are completed by `settle` if they are lost;
- each move is written ahead to the history as pending and marked done after the alias
  write, so the history neither misses a move nor shows one that did not happen.

`settle` runs at the start of every registry operation (under the model's registry lock),
so the next operation, whichever it is, finishes what an interrupted one left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

CHAMPION, CHALLENGER, CANARY = "champion", "challenger", "canary"
STATUS_TAG = "evergreen.status"
HISTORY_PREFIX = "evergreen.history."
STATUSES = ("candidate", "rejected", "canary", "champion", "retired")
# States of an alias-history record: written ahead as pending, marked done once the alias has
# moved, or abandoned when the move never happened (found pending by `settle`).
PENDING, DONE, ABANDONED = "pending", "done", "abandoned"


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version as Evergreen sees it."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return self.tags.get(STATUS_TAG)


@dataclass(frozen=True)
class AliasMove:
    """One recorded alias move: who moved which alias from which version to which, and why."""

    time: str
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str
    flow_run_id: str | None = None
    state: str = DONE

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _client() -> Any:
    import mlflow

    return mlflow.MlflowClient()


def _info(mv: Any) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        aliases=list(getattr(mv, "aliases", []) or []),
        tags=dict(mv.tags or {}),
    )


def _absent(exc: Exception) -> bool:
    """Whether a registry error says the thing does not exist (the model, the alias), as
    opposed to a registry that did not answer (connection lost, server error): the second
    must never be read as "no champion", "no canary" or "nothing registered"."""
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def ensure_registered_model(name: str) -> None:
    """Create the registered model if it does not exist yet."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _absent(exc):
            raise
        try:
            client.create_registered_model(name, description="Managed by Evergreen.")
        except MlflowException:
            client.get_registered_model(name)  # created concurrently


def get_version(name: str, version: str) -> VersionInfo:
    return _info(_client().get_model_version(name, str(version)))


def version_by_alias(name: str, alias: str) -> VersionInfo | None:
    """The version an alias points at, or None when the alias (or the model) does not exist;
    raises when the registry cannot be reached."""
    from mlflow.exceptions import MlflowException

    try:
        return _info(_client().get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if _absent(exc):
            return None
        raise


def list_versions(name: str) -> list[VersionInfo]:
    from mlflow.exceptions import MlflowException

    try:
        found = _client().search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if _absent(exc):
            return []
        raise
    return sorted((_info(v) for v in found), key=lambda v: int(v.version))


def create_version(name: str, source: str, run_id: str, tags: dict[str, str]) -> VersionInfo:
    """Register a new version of `name` from a logged model URI."""
    ensure_registered_model(name)
    # A tracking server (unlike a local store) insists on the logged model's id for a
    # `models:/m-<id>` source (what log_model returns in MLflow 3).
    logged = source.removeprefix("models:/")
    model_id = logged if source.startswith("models:/m-") and "/" not in logged else None
    mv = _client().create_model_version(name=name, source=source, run_id=run_id, tags=tags, model_id=model_id)
    return _info(mv)


def set_tags(name: str, version: str, tags: dict[str, str]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def move_alias(
    name: str,
    alias: str,
    to_version: str | None,
    reason: str,
    actor: str,
    flow_run_id: str | None = None,
) -> AliasMove:
    """Point `alias` at `to_version` (None removes it) and record the move in the history.

    The record is written first as pending and marked done after the alias write (see the
    module docstring). An alias already where it is asked to go is left alone and nothing is
    recorded, so re-running a transition changes nothing twice. Callers serialize moves per
    model (see tasks/registry.py); MLflow's alias writes are last-writer-wins.
    """
    client = _client()
    current = version_by_alias(name, alias)
    from_version = current.version if current else None
    target = None if to_version is None else str(to_version)
    move = AliasMove(
        time=datetime.now(UTC).isoformat(),
        alias=alias,
        from_version=from_version,
        to_version=target,
        reason=reason[:2000],
        actor=actor,
        flow_run_id=flow_run_id,
        state=PENDING,
    )
    if from_version == target:
        return replace(move, state="unchanged")
    key = _append_history(name, move)
    if target is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, target)
    done = replace(move, state=DONE)
    client.set_registered_model_tag(name, key, json.dumps(done.to_dict()))
    return done


def _append_history(name: str, move: AliasMove) -> str:
    client = _client()
    tags = client.get_registered_model(name).tags or {}
    seq = 1 + max((int(k[len(HISTORY_PREFIX) :]) for k in tags if k.startswith(HISTORY_PREFIX)), default=0)
    key = f"{HISTORY_PREFIX}{seq:06d}"
    client.set_registered_model_tag(name, key, json.dumps(move.to_dict()))
    return key


def _history_records(name: str) -> list[tuple[str, AliasMove]]:
    from mlflow.exceptions import MlflowException

    try:
        tags = _client().get_registered_model(name).tags or {}
    except MlflowException as exc:
        if _absent(exc):
            return []
        raise
    return [(k, AliasMove(**json.loads(v))) for k, v in sorted(tags.items()) if k.startswith(HISTORY_PREFIX)]


def alias_history(name: str, include_unsettled: bool = False) -> list[AliasMove]:
    """Every alias move of the model that happened, oldest first (with `include_unsettled`,
    also pending and abandoned records)."""
    return [m for _, m in _history_records(name) if include_unsettled or m.state == DONE]


def settle(name: str, actor: str, flow_run_id: str | None = None) -> list[str]:
    """Finish what an interrupted transition left; returns what was done (empty: nothing).

    Every partial state the transitions below can leave is unambiguous:
    a pending history record (done if the alias moved, else abandoned); `challenger` or
    `canary` on a version already tagged rejected (the removal was lost); `challenger` on the
    canary (start_canary lost its last step); `canary` on the champion (promote_canary lost
    its last steps); a status tag that lags behind the aliases (the champion's not
    `champion`, a canary's not `canary`, an old champion without the alias not `retired`).
    Call it holding the model's registry lock.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _absent(exc):
            return []  # nothing registered yet
        raise
    fixed: list[str] = []
    for key, move in _history_records(name):
        if move.state != PENDING:
            continue
        now = version_by_alias(name, move.alias)
        moved = (now.version if now else None) == move.to_version
        client.set_registered_model_tag(name, key, json.dumps(replace(move, state=DONE if moved else ABANDONED).to_dict()))
        fixed.append(f"history {key}: {move.alias} -> {move.to_version} {'done' if moved else 'never happened'}")

    def finish(alias: str, why: str) -> None:
        move_alias(name, alias, None, f"settled: {why}", actor, flow_run_id)
        fixed.append(f"removed {alias}: {why}")

    champion = version_by_alias(name, CHAMPION)
    canary = version_by_alias(name, CANARY)
    challenger = version_by_alias(name, CHALLENGER)
    if canary is not None and champion is not None and canary.version == champion.version:
        finish(CANARY, f"v{canary.version} was promoted to champion")
        canary = None
    if canary is not None and canary.status == "rejected":
        finish(CANARY, f"v{canary.version} was rejected")
        canary = None
    if challenger is not None and challenger.status == "rejected":
        finish(CHALLENGER, f"v{challenger.version} was rejected")
        challenger = None
    if challenger is not None and canary is not None and challenger.version == canary.version:
        finish(CHALLENGER, f"v{challenger.version} became the canary")
        challenger = None
    expected = {v.version: s for v, s in ((challenger, "candidate"), (canary, "canary"), (champion, "champion")) if v is not None}
    for version, status in expected.items():
        info = get_version(name, version)
        if info.status != status and not (status == "candidate" and info.status is None):
            set_tags(name, version, {STATUS_TAG: status})
            fixed.append(f"v{version} status {info.status} -> {status}")
    for info in list_versions(name):
        if info.status == "champion" and info.version not in expected:
            set_tags(name, info.version, {STATUS_TAG: "retired"})
            fixed.append(f"v{info.version} status champion -> retired (no longer champion)")
    return fixed


# ----------------------------------------------------------------------- model files in MLflow

MODEL_ARTIFACT = "model"


def _pip_requirements() -> list[str]:
    # Explicit: otherwise MLflow spends ~12 s inferring them in a subprocess.
    from importlib.metadata import version

    return [f"xgboost=={version('xgboost')}", f"pandas=={version('pandas')}"]


def log_model(model: Any, input_example: Any) -> Any:
    """Log a TrainedModel to the active run in XGBoost's own format (UBJSON, no pickle), with
    its signature, an input example and Evergreen's metadata (features, fixed categories)."""
    import tempfile
    from pathlib import Path

    import mlflow.xgboost
    from mlflow.models import infer_signature

    from evergreen.engines.training import METADATA_FILE

    preds = model.predict(input_example)
    output = preds.probability if preds.probability is not None else preds.prediction
    signature = infer_signature(input_example, output)
    with tempfile.TemporaryDirectory() as tmp, _quiet_serving_check():
        meta = Path(tmp) / METADATA_FILE
        meta.write_text(json.dumps(model.metadata(), indent=2, sort_keys=True), encoding="utf-8")
        return mlflow.xgboost.log_model(
            model.booster,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=input_example,
            pip_requirements=_pip_requirements(),
            model_format="ubj",
            extra_files=[str(meta)],
        )


@contextmanager
def _quiet_serving_check() -> Iterator[None]:
    """MLflow tries the input example through pyfunc, which rejects categorical inputs and
    logs a misleading warning; Evergreen scores the booster natively (evergreen.apps.serving)."""
    import logging

    logger = logging.getLogger("mlflow.models.model")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


@dataclass
class LoadedModel:
    """A registry model loaded for scoring: the version and the TrainedModel."""

    version: VersionInfo
    model: Any


def load_model_uri(uri: str) -> Any:
    """Download a model (`models:/<name>@<alias>`, `models:/<name>/<version>`, ...) from the
    configured registry and load it natively: XGBoost's own format plus Evergreen's JSON
    metadata, never through pickle."""
    import tempfile

    import mlflow.artifacts

    from evergreen.engines.training import TrainedModel

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        return TrainedModel.load(local)


def load_version(name: str, version: str) -> LoadedModel:
    """One registered version, loaded."""
    return LoadedModel(version=get_version(name, version), model=load_model_uri(f"models:/{name}/{version}"))


def load_alias(name: str, alias: str) -> LoadedModel | None:
    """The version an alias points at, loaded; None when the alias is not set."""
    info = version_by_alias(name, alias)
    return None if info is None else load_version(name, info.version)


# ----------------------------------------------------------------------- lifecycle transitions
# Each is a registry write that follows a decision made elsewhere (evergreen.decisions.gate,
# evergreen.decisions.canary); callers hold the model's registry lock and have called `settle`. The
# comment `commit` marks the write after which the transition counts as done: what follows
# it is finished by `settle` if the process stops there.


def _gate_tags(results: dict[str, Any]) -> dict[str, str]:
    return {"evergreen.gate.passed": str(results.get("passed")).lower(), "evergreen.gate.results": json.dumps(results)[:4900]}


def start_canary(name: str, version: str, results: dict[str, Any], actor: str, flow_run_id: str | None) -> None:
    """Gate passed: the challenger becomes the canary."""
    set_tags(name, version, _gate_tags(results))
    move_alias(name, CANARY, version, "gate passed", actor, flow_run_id)  # commit
    set_tags(name, version, {STATUS_TAG: "canary"})
    if (c := version_by_alias(name, CHALLENGER)) is not None and c.version == version:
        move_alias(name, CHALLENGER, None, "challenger became canary", actor, flow_run_id)


def reject_challenger(name: str, version: str, results: dict[str, Any], reasons: list[str], actor: str, flow_run_id: str | None) -> None:
    """Gate failed: the version is rejected with the reasons; the champion is untouched."""
    set_tags(name, version, {"evergreen.rejected.reasons": "; ".join(reasons)[:4900], **_gate_tags(results)})
    set_tags(name, version, {STATUS_TAG: "rejected"})  # commit
    if (c := version_by_alias(name, CHALLENGER)) is not None and c.version == version:
        move_alias(name, CHALLENGER, None, "gate failed: " + "; ".join(reasons)[:500], actor, flow_run_id)


def promote_canary(name: str, canary_version: str, reason: str, actor: str, flow_run_id: str | None) -> str | None:
    """The canary takes over: `champion` moves to it, the old champion is retired (and kept
    as the rollback target). Returns the previous champion version."""
    old = version_by_alias(name, CHAMPION)
    if old is not None and old.version == canary_version:
        return previous_champion(name)  # already promoted (settle removes the canary alias)
    move_alias(name, CHAMPION, canary_version, reason, actor, flow_run_id)  # commit
    set_tags(name, canary_version, {STATUS_TAG: "champion"})
    if old is not None:
        set_tags(name, old.version, {STATUS_TAG: "retired"})
    move_alias(name, CANARY, None, f"canary v{canary_version} promoted", actor, flow_run_id)
    return old.version if old else None


def reject_canary(name: str, canary_version: str, reason: str, actor: str, flow_run_id: str | None) -> None:
    """The canary is worse: it stops serving and is rejected."""
    set_tags(name, canary_version, {"evergreen.rejected.reasons": reason[:4900]})
    set_tags(name, canary_version, {STATUS_TAG: "rejected"})  # commit
    move_alias(name, CANARY, None, reason, actor, flow_run_id)


def previous_champion(name: str) -> str | None:
    """The version `champion` pointed at before its current one (from the alias history)."""
    current = version_by_alias(name, CHAMPION)
    if current is None:
        return None
    for move in reversed(alias_history(name)):
        # A rollback *to* the current version is not how it became champion: look further back.
        if move.alias == CHAMPION and move.to_version == current.version and not move.reason.startswith("rollback:"):
            return move.from_version
    return None


def roll_back_champion(name: str, to_version: str, reason: str, actor: str, flow_run_id: str | None) -> str | None:
    """`champion` back to `to_version`; any canary removed. Returns the version rolled back from.

    Two aliases change, so there is one state between: the canary is removed first (it was
    gated against the champion being rolled back), then `champion` moves. Stopped between the
    two, the registry is consistent (the old champion serves alone) and a re-run with the
    same `from_version` completes the rollback."""
    current = version_by_alias(name, CHAMPION)
    if (canary := version_by_alias(name, CANARY)) is not None:
        if canary.version != to_version:
            set_tags(name, canary.version, {STATUS_TAG: "rejected", "evergreen.rejected.reasons": f"rollback: {reason}"[:4900]})
        move_alias(name, CANARY, None, f"rollback: {reason}", actor, flow_run_id)
    if current is not None and current.version == to_version:
        return None
    move_alias(name, CHAMPION, to_version, f"rollback: {reason}", actor, flow_run_id)  # commit
    set_tags(name, to_version, {STATUS_TAG: "champion"})
    if current is not None:
        set_tags(name, current.version, {STATUS_TAG: "retired", "evergreen.rolled_back.reason": reason[:4900]})
    return current.version if current else None


REFERENCE_ARTIFACT = "reference/monitor_reference.parquet"


def champion_reference(name: str) -> tuple[str, Any] | None:
    """The NannyML reference logged by the champion's training run (its predictions on the
    held-out recent slice, with labels) and the champion's version; None without a champion
    or such an artifact."""
    import tempfile

    import mlflow.artifacts
    import pandas as pd
    from mlflow.exceptions import MlflowException

    champion = version_by_alias(name, CHAMPION)
    if champion is None or not champion.run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=champion.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp)
        except OSError:
            return None
        except MlflowException as exc:
            if _absent(exc):
                return None
            raise
        return champion.version, pd.read_parquet(path)


class Registry:
    """One registered model in the configured MLflow registry, as the loop reads it
    (`evergreen.adapters.ports.ModelRegistry`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def list_versions(self) -> list[VersionInfo]:
        return list_versions(self.name)

    def get_version(self, version: str) -> VersionInfo:
        return get_version(self.name, version)

    def version_by_alias(self, alias: str) -> VersionInfo | None:
        return version_by_alias(self.name, alias)

    def alias_history(self) -> list[AliasMove]:
        return alias_history(self.name)

    def load_version(self, version: str) -> LoadedModel:
        return load_version(self.name, version)

    def load_alias(self, alias: str) -> LoadedModel | None:
        return load_alias(self.name, alias)

    def champion_reference(self) -> tuple[str, Any] | None:
        return champion_reference(self.name)

    def previous_champion(self) -> str | None:
        return previous_champion(self.name)
