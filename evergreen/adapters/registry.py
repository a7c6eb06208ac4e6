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

The logic lives in `Registry`, whose backends are injected: the registry client (an
`mlflow.MlflowClient` by default, `memory.MemoryRegistryClient` in memory), the model files
(`MlflowArtifacts` by default, `memory.MemoryArtifacts`) and the clock that stamps alias
moves. The module-level functions are the same operations on the configured MLflow registry.
mlflow is imported inside the functions: importing this module does not import it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

from evergreen.adapters import links, registry_pages
from evergreen.aliases import CANARY as CANARY
from evergreen.aliases import CHALLENGER as CHALLENGER
from evergreen.aliases import CHAMPION as CHAMPION

STATUS_TAG = "evergreen.status"
HISTORY_PREFIX = "evergreen.history."
# The canary review's outcome ("promoted" / "rolled back") and its reason, on the version.
CANARY_OUTCOME_TAG = "evergreen.canary.outcome"
CANARY_REASON_TAG = "evergreen.canary.reason"
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
    return getattr(exc, "error_code", None) in (
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
    )


def _registry_errors(client: Any) -> tuple[type[Exception], ...]:
    """The exceptions `client` raises when the registry answers with an error (read with
    `_absent`): `MlflowException` for MLflow's client; a client that is not MLflow's names
    its own in `registry_errors` (`memory.MemoryRegistryClient`), so a registry in memory
    never imports mlflow."""
    own = getattr(client, "registry_errors", None)
    if own is not None:
        return tuple(own)
    from mlflow.exceptions import MlflowException

    return (MlflowException,)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------- model files in MLflow

MODEL_ARTIFACT = "model"
REFERENCE_ARTIFACT = "reference/monitor_reference.parquet"


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
        extra = [str(meta)]
        # the probes (the model without the hold-out, and the cross-fit ones): what the gate measures
        for file_name, data in model.extra_boosters().items():
            path = Path(tmp) / file_name
            path.write_bytes(data)
            extra.append(str(path))
        return mlflow.xgboost.log_model(
            model.booster,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=input_example,
            pip_requirements=_pip_requirements(),
            model_format="ubj",
            extra_files=extra,
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


class ModelArtifacts(Protocol):
    """Where the registry's model files and training runs' monitor references are read from."""

    def version_uri(self, info: VersionInfo) -> str:
        """The URI `load_model` loads a registered version from."""
        ...

    def load_model(self, uri: str) -> Any:
        """A TrainedModel, loaded natively (never unpickled)."""
        ...

    def load_reference(self, run_id: str) -> pd.DataFrame | None:
        """The monitor reference a training run logged; None when it logged none."""
        ...


class MlflowArtifacts:
    """Model files and references in the configured MLflow tracking server / store."""

    def version_uri(self, info: VersionInfo) -> str:
        return f"models:/{info.name}/{info.version}"

    def load_model(self, uri: str) -> Any:
        """Download a model (`models:/<name>@<alias>`, `models:/<name>/<version>`, ...) from
        the configured registry and load it natively: XGBoost's own format plus Evergreen's
        JSON metadata, never through pickle."""
        import tempfile

        import mlflow.artifacts

        from evergreen.engines.training import TrainedModel

        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            return TrainedModel.load(local)

    def load_reference(self, run_id: str) -> pd.DataFrame | None:
        """The NannyML reference the training run logged (`REFERENCE_ARTIFACT`); None when
        the run has no such artifact."""
        import tempfile

        import mlflow.artifacts
        import pandas as pd
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp
                )
            except OSError:
                return None
            except MlflowException as exc:
                if _absent(exc):
                    return None
                raise
            return pd.read_parquet(path)


# ------------------------------------------------------------------------------ the registry


class Registry:
    """One registered model (`evergreen.adapters.ports.ModelRegistry`): what the loop steps
    read and write.

    `client` is the registry client: by default an `mlflow.MlflowClient` on the process's
    current tracking and registry URIs (made afresh for each call, as the module functions
    always did: MLflow fixes a client's URIs when it is made, and `tracking.connect` may
    point the process elsewhere after this object was made). `artifacts` loads model files
    and references (`MlflowArtifacts` by default); `clock` stamps alias moves (UTC now by
    default; a replay passes its own).

    Writes name who made them (`actor`, `flow_run_id`) and are made holding the model's
    registry lock (`Ports.lock`)."""

    def __init__(
        self,
        name: str,
        client: Any | None = None,
        artifacts: ModelArtifacts | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = name
        self._client = client
        self.artifacts: ModelArtifacts = artifacts if artifacts is not None else MlflowArtifacts()
        self.clock: Callable[[], datetime] = clock if clock is not None else _utc_now

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else _client()

    # ------------------------------------------------------------------- reads

    def exists(self) -> bool:
        client = self.client
        errors = _registry_errors(client)
        try:
            client.get_registered_model(self.name)
        except errors as exc:
            if _absent(exc):
                return False
            raise
        return True

    def get_version(self, version: str) -> VersionInfo:
        return _info(self.client.get_model_version(self.name, str(version)))

    def version_by_alias(self, alias: str) -> VersionInfo | None:
        """The version an alias points at, or None when the alias (or the model) does not
        exist; raises when the registry cannot be reached."""
        client = self.client
        errors = _registry_errors(client)
        try:
            return _info(client.get_model_version_by_alias(self.name, alias))
        except errors as exc:
            if _absent(exc):
                return None
            raise

    def list_versions(self) -> list[VersionInfo]:
        client = self.client
        errors = _registry_errors(client)
        try:
            found = client.search_model_versions(f"name = '{self.name}'")
        except errors as exc:
            if _absent(exc):
                return []
            raise
        return sorted((_info(v) for v in found), key=lambda v: int(v.version))

    def alias_history(self, include_unsettled: bool = False) -> list[AliasMove]:
        """Every alias move of the model that happened, oldest first (with
        `include_unsettled`, also pending and abandoned records)."""
        return [m for _, m in self._history_records() if include_unsettled or m.state == DONE]

    def previous_champion(self) -> str | None:
        """The version `champion` pointed at before its current one (from the alias history)."""
        current = self.version_by_alias(CHAMPION)
        if current is None:
            return None
        for move in reversed(self.alias_history()):
            # A rollback *to* the current version is not how it became champion: look further back.
            if (
                move.alias == CHAMPION
                and move.to_version == current.version
                and not move.reason.startswith("rollback:")
            ):
                return move.from_version
        return None

    def load_version(self, version: str) -> LoadedModel:
        """One registered version, loaded."""
        info = self.get_version(version)
        return LoadedModel(
            version=info, model=self.artifacts.load_model(self.artifacts.version_uri(info))
        )

    def load_alias(self, alias: str) -> LoadedModel | None:
        """The version an alias points at, loaded; None when the alias is not set."""
        info = self.version_by_alias(alias)
        return None if info is None else self.load_version(info.version)

    def champion_reference(self) -> tuple[str, Any] | None:
        """The NannyML reference logged by the champion's training run (its predictions on
        the held-out recent slice, with labels) and the champion's version; None without a
        champion or such an artifact."""
        champion = self.version_by_alias(CHAMPION)
        if champion is None or not champion.run_id:
            return None
        frame = self.artifacts.load_reference(champion.run_id)
        return None if frame is None else (champion.version, frame)

    def _history_records(self) -> list[tuple[str, AliasMove]]:
        client = self.client
        errors = _registry_errors(client)
        try:
            tags = client.get_registered_model(self.name).tags or {}
        except errors as exc:
            if _absent(exc):
                return []
            raise
        return [
            (k, AliasMove(**json.loads(v)))
            for k, v in sorted(tags.items())
            if k.startswith(HISTORY_PREFIX)
        ]

    # ------------------------------------------------------------------ writes

    def ensure_registered_model(self) -> None:
        """Create the registered model if it does not exist yet."""
        client = self.client
        errors = _registry_errors(client)
        try:
            client.get_registered_model(self.name)
        except errors as exc:
            if not _absent(exc):
                raise
            try:
                client.create_registered_model(self.name, description="Managed by Evergreen.")
            except errors:
                client.get_registered_model(self.name)  # created concurrently

    def create_version(self, source: str, run_id: str, tags: dict[str, str]) -> VersionInfo:
        """Register a new version from a logged model URI."""
        self.ensure_registered_model()
        # A tracking server (unlike a local store) insists on the logged model's id for a
        # `models:/m-<id>` source (what log_model returns in MLflow 3).
        logged = source.removeprefix("models:/")
        model_id = logged if source.startswith("models:/m-") and "/" not in logged else None
        tags = links.with_prefect_link(tags)
        mv = self.client.create_model_version(
            name=self.name, source=source, run_id=run_id, tags=tags, model_id=model_id
        )
        self.describe_version(str(mv.version))
        return _info(mv)

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        """Write a version's tags, then its description (`registry_pages.describe_version`),
        so the version's page says what its tags now say."""
        client = self.client
        for key, value in tags.items():
            client.set_model_version_tag(self.name, str(version), key, str(value))
        self.describe_version(str(version))

    def describe_version(self, version: str) -> None:
        """Render the version's description from its tags; written only when it changed."""
        client = self.client
        mv = client.get_model_version(self.name, str(version))
        text = registry_pages.describe_version(dict(mv.tags or {}), self.name, str(mv.version))
        if (getattr(mv, "description", None) or "") != text:
            client.update_model_version(self.name, str(mv.version), description=text)

    def describe_model(self) -> None:
        """Render the registered model's description: its aliases now and the alias history."""
        client = self.client
        model = client.get_registered_model(self.name)
        moves = [m.to_dict() for _, m in self._history_records()]
        aliases = {a: (v.version if (v := self.version_by_alias(a)) else None) for a in (CHAMPION, CANARY, CHALLENGER)}
        text = registry_pages.describe_model(self.name, aliases, moves)
        if (getattr(model, "description", None) or "") != text:
            client.update_registered_model(self.name, description=text)

    def move_alias(
        self,
        alias: str,
        to_version: str | None,
        reason: str,
        actor: str,
        flow_run_id: str | None = None,
    ) -> AliasMove:
        """Point `alias` at `to_version` (None removes it) and record the move in the history.

        The record is written first as pending and marked done after the alias write (see
        the module docstring). An alias already where it is asked to go is left alone and
        nothing is recorded, so re-running a transition changes nothing twice. Callers
        serialize moves per model (see tasks/registry.py); MLflow's alias writes are
        last-writer-wins.
        """
        client = self.client
        current = self.version_by_alias(alias)
        from_version = current.version if current else None
        target = None if to_version is None else str(to_version)
        move = AliasMove(
            time=self.clock().isoformat(),
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
        key = self._append_history(move)
        if target is None:
            client.delete_registered_model_alias(self.name, alias)
        else:
            client.set_registered_model_alias(self.name, alias, target)
        done = replace(move, state=DONE)
        client.set_registered_model_tag(self.name, key, json.dumps(done.to_dict()))
        self.describe_model()
        return done

    def _append_history(self, move: AliasMove) -> str:
        client = self.client
        tags = client.get_registered_model(self.name).tags or {}
        seq = 1 + max(
            (int(k[len(HISTORY_PREFIX) :]) for k in tags if k.startswith(HISTORY_PREFIX)), default=0
        )
        key = f"{HISTORY_PREFIX}{seq:06d}"
        client.set_registered_model_tag(self.name, key, json.dumps(move.to_dict()))
        return key

    def settle(self, actor: str, flow_run_id: str | None = None) -> list[str]:
        """Finish what an interrupted transition left; returns what was done (empty: nothing).

        Every partial state the transitions below can leave is unambiguous:
        a pending history record (done if the alias moved, else abandoned); `challenger` or
        `canary` on a version already tagged rejected (the removal was lost); `challenger` on
        the canary (start_canary lost its last step); `canary` on the champion
        (promote_canary lost its last steps); a status tag that lags behind the aliases (the
        champion's not `champion`, a canary's not `canary`, an old champion without the alias
        not `retired`). Call it holding the model's registry lock.
        """
        name = self.name
        client = self.client
        errors = _registry_errors(client)
        try:
            client.get_registered_model(name)
        except errors as exc:
            if _absent(exc):
                return []  # nothing registered yet
            raise
        fixed: list[str] = []
        for key, move in self._history_records():
            if move.state != PENDING:
                continue
            now = self.version_by_alias(move.alias)
            moved = (now.version if now else None) == move.to_version
            client.set_registered_model_tag(
                name, key, json.dumps(replace(move, state=DONE if moved else ABANDONED).to_dict())
            )
            fixed.append(
                f"history {key}: {move.alias} -> {move.to_version} {'done' if moved else 'never happened'}"
            )

        def finish(alias: str, why: str) -> None:
            self.move_alias(alias, None, f"settled: {why}", actor, flow_run_id)
            fixed.append(f"removed {alias}: {why}")

        champion = self.version_by_alias(CHAMPION)
        canary = self.version_by_alias(CANARY)
        challenger = self.version_by_alias(CHALLENGER)
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
        expected = {
            v.version: s
            for v, s in ((challenger, "candidate"), (canary, "canary"), (champion, "champion"))
            if v is not None
        }
        for version, status in expected.items():
            info = self.get_version(version)
            if info.status != status and not (status == "candidate" and info.status is None):
                self.set_tags(version, {STATUS_TAG: status})
                fixed.append(f"v{version} status {info.status} -> {status}")
        for info in self.list_versions():
            if info.status == "champion" and info.version not in expected:
                self.set_tags(info.version, {STATUS_TAG: "retired"})
                fixed.append(f"v{info.version} status champion -> retired (no longer champion)")
        return fixed

    # ------------------------------------------------------- lifecycle transitions
    # Each is a registry write that follows a decision made elsewhere (evergreen.decisions.gate,
    # evergreen.decisions.canary); callers hold the model's registry lock and have called
    # `settle`. The comment `commit` marks the write after which the transition counts as
    # done: what follows it is finished by `settle` if the process stops there.

    def start_canary(
        self, version: str, results: dict[str, Any], actor: str, flow_run_id: str | None
    ) -> None:
        """Gate passed: the challenger becomes the canary."""
        self.set_tags(version, _gate_tags(results))
        self.move_alias(CANARY, version, "gate passed", actor, flow_run_id)  # commit
        self.set_tags(version, {STATUS_TAG: "canary"})
        if (c := self.version_by_alias(CHALLENGER)) is not None and c.version == version:
            self.move_alias(CHALLENGER, None, "challenger became canary", actor, flow_run_id)

    def reject_challenger(
        self,
        version: str,
        results: dict[str, Any],
        reasons: list[str],
        actor: str,
        flow_run_id: str | None,
    ) -> None:
        """Gate failed: the version is rejected with the reasons; the champion is untouched."""
        self.set_tags(
            version,
            {"evergreen.rejected.reasons": "; ".join(reasons)[:4900], **_gate_tags(results)},
        )
        self.set_tags(version, {STATUS_TAG: "rejected"})  # commit
        if (c := self.version_by_alias(CHALLENGER)) is not None and c.version == version:
            self.move_alias(
                CHALLENGER, None, "gate failed: " + "; ".join(reasons)[:500], actor, flow_run_id
            )

    def promote_canary(
        self, canary_version: str, reason: str, actor: str, flow_run_id: str | None
    ) -> str | None:
        """The canary takes over: `champion` moves to it, the old champion is retired (and
        kept as the rollback target). Returns the previous champion version."""
        old = self.version_by_alias(CHAMPION)
        if old is not None and old.version == canary_version:
            return self.previous_champion()  # already promoted (settle removes the canary alias)
        self.move_alias(CHAMPION, canary_version, reason, actor, flow_run_id)  # commit
        self.set_tags(
            canary_version,
            {STATUS_TAG: "champion", CANARY_OUTCOME_TAG: "promoted", CANARY_REASON_TAG: reason[:4900]},
        )
        if old is not None:
            self.set_tags(old.version, {STATUS_TAG: "retired"})
        self.move_alias(CANARY, None, f"canary v{canary_version} promoted", actor, flow_run_id)
        return old.version if old else None

    def reject_canary(
        self, canary_version: str, reason: str, actor: str, flow_run_id: str | None
    ) -> None:
        """The canary is worse: it stops serving and is rejected."""
        self.set_tags(
            canary_version,
            {
                "evergreen.rejected.reasons": reason[:4900],
                CANARY_OUTCOME_TAG: "rolled back",
                CANARY_REASON_TAG: reason[:4900],
            },
        )
        self.set_tags(canary_version, {STATUS_TAG: "rejected"})  # commit
        self.move_alias(CANARY, None, reason, actor, flow_run_id)

    def roll_back_champion(
        self, to_version: str, reason: str, actor: str, flow_run_id: str | None
    ) -> str | None:
        """`champion` back to `to_version`; any canary removed. Returns the version rolled
        back from.

        Two aliases change, so there is one state between: the canary is removed first (it
        was gated against the champion being rolled back), then `champion` moves. Stopped
        between the two, the registry is consistent (the old champion serves alone) and a
        re-run with the same `from_version` completes the rollback."""
        current = self.version_by_alias(CHAMPION)
        if (canary := self.version_by_alias(CANARY)) is not None:
            if canary.version != to_version:
                self.set_tags(
                    canary.version,
                    {
                        STATUS_TAG: "rejected",
                        "evergreen.rejected.reasons": f"rollback: {reason}"[:4900],
                    },
                )
            self.move_alias(CANARY, None, f"rollback: {reason}", actor, flow_run_id)
        if current is not None and current.version == to_version:
            return None
        self.move_alias(CHAMPION, to_version, f"rollback: {reason}", actor, flow_run_id)  # commit
        self.set_tags(to_version, {STATUS_TAG: "champion"})
        if current is not None:
            self.set_tags(
                current.version,
                {STATUS_TAG: "retired", "evergreen.rolled_back.reason": reason[:4900]},
            )
        return current.version if current else None


GATE_EVIDENCE_TAG = "evergreen.gate.evidence_factor"


def _gate_tags(results: dict[str, Any]) -> dict[str, str]:
    return {
        "evergreen.gate.passed": str(results.get("passed")).lower(),
        "evergreen.gate.results": json.dumps(results)[:4900],
        # A failed gate: the evaluation rows its interval asked for, x the ones it had (`gate.evidence_factor`).
        **({GATE_EVIDENCE_TAG: f"{results['evidence_factor']:.4g}"} if results.get("evidence_factor") else {}),
    }


# ------------------------------------------------- the same operations on the MLflow registry
# One-line wrappers kept for their many callers: `Registry(name)` on the configured registry.


def ensure_registered_model(name: str) -> None:
    """Create the registered model if it does not exist yet."""
    return Registry(name).ensure_registered_model()


def get_version(name: str, version: str) -> VersionInfo:
    return Registry(name).get_version(version)


def version_by_alias(name: str, alias: str) -> VersionInfo | None:
    """The version an alias points at, or None when the alias (or the model) does not exist;
    raises when the registry cannot be reached."""
    return Registry(name).version_by_alias(alias)


def list_versions(name: str) -> list[VersionInfo]:
    return Registry(name).list_versions()


def create_version(name: str, source: str, run_id: str, tags: dict[str, str]) -> VersionInfo:
    """Register a new version of `name` from a logged model URI."""
    return Registry(name).create_version(source, run_id, tags)


def set_tags(name: str, version: str, tags: dict[str, str]) -> None:
    return Registry(name).set_tags(version, tags)


def move_alias(
    name: str,
    alias: str,
    to_version: str | None,
    reason: str,
    actor: str,
    flow_run_id: str | None = None,
) -> AliasMove:
    """Point `alias` at `to_version` (None removes it) and record the move in the history
    (`Registry.move_alias`)."""
    return Registry(name).move_alias(alias, to_version, reason, actor, flow_run_id)


def _append_history(name: str, move: AliasMove) -> str:
    return Registry(name)._append_history(move)


def _history_records(name: str) -> list[tuple[str, AliasMove]]:
    return Registry(name)._history_records()


def alias_history(name: str, include_unsettled: bool = False) -> list[AliasMove]:
    """Every alias move of the model that happened, oldest first (with `include_unsettled`,
    also pending and abandoned records)."""
    return Registry(name).alias_history(include_unsettled)


def settle(name: str, actor: str, flow_run_id: str | None = None) -> list[str]:
    """Finish what an interrupted transition left; returns what was done (empty: nothing).
    See `Registry.settle`; call it holding the model's registry lock."""
    return Registry(name).settle(actor, flow_run_id)


def load_model_uri(uri: str) -> Any:
    """Download a model (`models:/<name>@<alias>`, `models:/<name>/<version>`, ...) from the
    configured registry and load it natively: XGBoost's own format plus Evergreen's JSON
    metadata, never through pickle."""
    return MlflowArtifacts().load_model(uri)


def load_version(name: str, version: str) -> LoadedModel:
    """One registered version, loaded."""
    return Registry(name).load_version(version)


def load_alias(name: str, alias: str) -> LoadedModel | None:
    """The version an alias points at, loaded; None when the alias is not set."""
    return Registry(name).load_alias(alias)


def start_canary(
    name: str, version: str, results: dict[str, Any], actor: str, flow_run_id: str | None
) -> None:
    """Gate passed: the challenger becomes the canary."""
    return Registry(name).start_canary(version, results, actor, flow_run_id)


def reject_challenger(
    name: str,
    version: str,
    results: dict[str, Any],
    reasons: list[str],
    actor: str,
    flow_run_id: str | None,
) -> None:
    """Gate failed: the version is rejected with the reasons; the champion is untouched."""
    return Registry(name).reject_challenger(version, results, reasons, actor, flow_run_id)


def promote_canary(
    name: str, canary_version: str, reason: str, actor: str, flow_run_id: str | None
) -> str | None:
    """The canary takes over: `champion` moves to it, the old champion is retired (and kept
    as the rollback target). Returns the previous champion version."""
    return Registry(name).promote_canary(canary_version, reason, actor, flow_run_id)


def reject_canary(
    name: str, canary_version: str, reason: str, actor: str, flow_run_id: str | None
) -> None:
    """The canary is worse: it stops serving and is rejected."""
    return Registry(name).reject_canary(canary_version, reason, actor, flow_run_id)


def previous_champion(name: str) -> str | None:
    """The version `champion` pointed at before its current one (from the alias history)."""
    return Registry(name).previous_champion()


def roll_back_champion(
    name: str, to_version: str, reason: str, actor: str, flow_run_id: str | None
) -> str | None:
    """`champion` back to `to_version`; any canary removed. Returns the version rolled back from
    (`Registry.roll_back_champion`)."""
    return Registry(name).roll_back_champion(to_version, reason, actor, flow_run_id)


def champion_reference(name: str) -> tuple[str, Any] | None:
    """The NannyML reference logged by the champion's training run (its predictions on the
    held-out recent slice, with labels) and the champion's version; None without a champion
    or such an artifact."""
    return Registry(name).champion_reference()
