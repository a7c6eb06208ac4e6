"""In-memory ports (`evergreen.adapters.ports`) for tests and replays: nothing on disk, no
server, no mlflow import.

- `MemoryRegistryClient`: the part of `mlflow.MlflowClient` that `registry.Registry` uses,
  with MLflow's answers (string versions 1, 2, 3…, copies rather than live objects, errors
  carrying MLflow's `error_code`s, aliases left out of `search_model_versions` as MLflow's
  stores leave them out), so `registry.Registry` runs its one implementation on it;
- `MemoryArtifacts`: model files (XGBoost's own format plus Evergreen's metadata, written
  and read by `TrainedModel.save`/`load` on fsspec's `memory://`) and monitor references
  (Parquet bytes, as the real run log stores them);
- `MemoryEvents`: the event sink, recording what was emitted;
- `MemoryRunLog`: the run log, recording training and monitor runs.

Every class is safe to use from several threads.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.jsonable import plain

if TYPE_CHECKING:
    import pandas as pd

    from evergreen.adapters.registry import VersionInfo
    from evergreen.adapters.tracking import LoggedCandidate

RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
# MLflow's limits on model registry tags (mlflow.utils.validation).
MAX_TAG_KEY_LENGTH = 250
MAX_TAG_VALUE_LENGTH = 100_000
# The `description` columns of MLflow's SQL stores (registered model, model version).
MAX_DESCRIPTION_LENGTH = 5000


class MemoryRegistryError(Exception):
    """An error answer of the in-memory registry; `error_code` as MLflow's would carry."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class MissingError(MemoryRegistryError):
    """The model, version, alias or artifact does not exist (`registry._absent` reads it so)."""

    error_code = RESOURCE_DOES_NOT_EXIST


class AlreadyExistsError(MemoryRegistryError):
    error_code = RESOURCE_ALREADY_EXISTS


class InvalidParameterError(MemoryRegistryError):
    error_code = INVALID_PARAMETER_VALUE


# ------------------------------------------------------------------------------ the registry


@dataclass
class RegisteredModel:
    """What `get_registered_model` answers (as `mlflow.entities.model_registry.RegisteredModel`)."""

    name: str
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelVersion:
    """What the version calls answer (as `mlflow.entities.model_registry.ModelVersion`)."""

    name: str
    version: str
    source: str
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    description: str | None = None
    model_id: str | None = None


@dataclass
class _Model:
    model: RegisteredModel
    versions: dict[int, ModelVersion] = field(default_factory=dict)


_NAME_FILTER = re.compile(r"^\s*name\s*=\s*'((?:[^']|'')*)'\s*$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


class MemoryRegistryClient:
    """The `mlflow.MlflowClient` registry calls `registry.Registry` makes, in memory."""

    # What `registry.Registry` catches from this client (instead of MlflowException).
    registry_errors = (MemoryRegistryError,)

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._models: dict[str, _Model] = {}

    # ----------------------------------------------------------- registered models

    def create_registered_model(
        self, name: str, tags: dict[str, str] | None = None, description: str | None = None
    ) -> RegisteredModel:
        _check_name(name)
        with self._lock:
            if name in self._models:
                raise AlreadyExistsError(f"Registered Model (name={name}) already exists.")
            entry = _Model(RegisteredModel(name=name, description=description))
            for key, value in (tags or {}).items():
                entry.model.tags[key] = _tag_value(key, value)
            self._models[name] = entry
            return copy.deepcopy(entry.model)

    def get_registered_model(self, name: str) -> RegisteredModel:
        with self._lock:
            return copy.deepcopy(self._model(name).model)

    def search_registered_models(
        self, filter_string: str | None = None, max_results: int = 100, **_: Any
    ) -> list[RegisteredModel]:
        with self._lock:
            names = (
                sorted(self._models)
                if filter_string is None
                else [n for n in [_filtered_name(filter_string)] if n in self._models]
            )
            return [copy.deepcopy(self._models[n].model) for n in names[:max_results]]

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        with self._lock:
            self._model(name).model.tags[key] = _tag_value(key, value)

    def update_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        with self._lock:
            entry = self._model(name)
            entry.model.description = _description(description)
            return copy.deepcopy(entry.model)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        with self._lock:
            self._model(name).model.tags.pop(key, None)

    # ------------------------------------------------------------------ versions

    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        await_creation_for: int | None = None,
        model_id: str | None = None,
    ) -> ModelVersion:
        checked = {key: _tag_value(key, value) for key, value in (tags or {}).items()}
        with self._lock:
            entry = self._model(name)
            number = 1 + max(entry.versions, default=0)
            mv = ModelVersion(
                name=name,
                version=str(number),
                source=source,
                run_id=run_id,
                tags=checked,
                description=description,
                model_id=model_id,
            )
            entry.versions[number] = mv
            return self._answer(entry, mv)

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        with self._lock:
            entry = self._model(name)
            return self._answer(entry, self._version(entry, version))

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        return self.get_model_version(name, version).source

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        with self._lock:
            entry = self._model(name)
            if alias not in entry.model.aliases:
                raise MissingError(f"Registered model alias {alias} not found.")
            return self._answer(entry, entry.versions[int(entry.model.aliases[alias])])

    def search_model_versions(
        self, filter_string: str | None = None, max_results: int = 10_000, **_: Any
    ) -> list[ModelVersion]:
        """Versions of the model named by `name = '<name>'` (or of every model without a
        filter), without their aliases: MLflow's stores answer this call so."""
        with self._lock:
            if filter_string is None:
                entries = [self._models[n] for n in sorted(self._models)]
            else:
                wanted = _filtered_name(filter_string)
                entries = [self._models[wanted]] if wanted in self._models else []
            found = [copy.deepcopy(mv) for e in entries for _, mv in sorted(e.versions.items())]
        for mv in found:
            mv.aliases = []
        return found[:max_results]

    def set_model_version_tag(self, name: str, version: str, key: str, value: Any) -> None:
        with self._lock:
            mv = self._version(self._model(name), version)
            mv.tags[key] = _tag_value(key, value)

    def update_model_version(self, name: str, version: str, description: str | None = None) -> ModelVersion:
        with self._lock:
            entry = self._model(name)
            mv = self._version(entry, version)
            mv.description = _description(description)
            return self._answer(entry, mv)

    def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
        with self._lock:
            self._version(self._model(name), version).tags.pop(key, None)

    # ------------------------------------------------------------------- aliases

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        _check_alias(alias)
        if _RESERVED_ALIAS.match(alias):
            raise InvalidParameterError(f"Alias name {alias!r} is reserved.")
        with self._lock:
            entry = self._model(name)
            mv = self._version(entry, version)
            entry.model.aliases[alias] = mv.version

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        """Removes the alias; an alias that is not set is no error (as in MLflow)."""
        _check_alias(alias)
        with self._lock:
            self._model(name).model.aliases.pop(alias, None)

    # ------------------------------------------------------------------- helpers

    def _model(self, name: str) -> _Model:
        _check_name(name)
        entry = self._models.get(name)
        if entry is None:
            raise MissingError(f"Registered Model with name={name} not found")
        return entry

    @staticmethod
    def _version(entry: _Model, version: Any) -> ModelVersion:
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"Parameter 'version' must be an integer, got {version!r}."
            ) from None
        mv = entry.versions.get(number)
        if mv is None:
            raise MissingError(
                f"Model Version (name={entry.model.name}, version={version}) not found"
            )
        return mv

    @staticmethod
    def _answer(entry: _Model, mv: ModelVersion) -> ModelVersion:
        out = copy.deepcopy(mv)
        out.aliases = sorted(a for a, v in entry.model.aliases.items() if v == mv.version)
        return out


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidParameterError("Registered model name cannot be empty.")


def _check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not alias:
        raise InvalidParameterError("Registered model alias name cannot be empty.")


def _tag_value(key: str, value: Any) -> str:
    """MLflow's checks on a registry tag: a value, a key and a value within its limits."""
    if value is None:
        raise InvalidParameterError("Tag value cannot be None")
    if not key or len(key) > MAX_TAG_KEY_LENGTH:
        raise InvalidParameterError(
            f"Tag key {key[:100]!r} must have 1 to {MAX_TAG_KEY_LENGTH} characters."
        )
    text = str(value)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        raise InvalidParameterError(
            f"Tag value of {key!r} has {len(text)} characters, more than {MAX_TAG_VALUE_LENGTH}."
        )
    return text


def _description(value: str | None) -> str | None:
    """MLflow's SQL stores hold a description in 5,000 characters (PostgreSQL refuses more)."""
    if value is not None and len(value) > MAX_DESCRIPTION_LENGTH:
        raise InvalidParameterError(f"description has {len(value)} characters, more than {MAX_DESCRIPTION_LENGTH}.")
    return value


def _filtered_name(filter_string: str) -> str:
    match = _NAME_FILTER.match(filter_string)
    if match is None:
        raise InvalidParameterError(
            f"unsupported filter {filter_string!r} (the memory registry knows \"name = '<name>'\")"
        )
    return match.group(1).replace("''", "'")


# ------------------------------------------------------------------------------ artifacts


class MemoryArtifacts:
    """Model files and monitor references in memory (`registry.ModelArtifacts`).

    A model is stored by `TrainedModel.save` (XGBoost's own format and Evergreen's metadata,
    never a pickle) under this store's own root on fsspec's `memory://` and read back by
    `TrainedModel.load`, so every load gives a new model, as a download from MLflow does. Its
    URI is `memory://models/<n>`; a registered version's source is that URI."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root = f"memory://evergreen-artifacts-{uuid.uuid4().hex[:12]}"
        self._numbers = itertools.count(1)
        self._models: dict[str, str] = {}  # URI -> directory under self._root
        self._references: dict[str, bytes] = {}  # run id -> Parquet

    def put_model(self, model: Any) -> str:
        """Store a TrainedModel; returns its URI."""
        with self._lock:
            number = next(self._numbers)
        uri, directory = f"memory://models/{number}", f"{self._root}/models/{number}"
        model.save(directory)
        with self._lock:
            self._models[uri] = directory
        return uri

    def version_uri(self, info: VersionInfo) -> str:
        return info.source

    def load_model(self, uri: str) -> Any:
        from evergreen.engines.training import TrainedModel

        with self._lock:
            directory = self._models.get(uri)
        if directory is None:
            raise MissingError(f"no model at {uri!r} in this in-memory artifact store")
        return TrainedModel.load(directory)

    def put_reference(self, run_id: str, frame: pd.DataFrame) -> None:
        """Store a run's monitor reference as the real run log does: Parquet, without the index."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        with self._lock:
            self._references[run_id] = buffer.getvalue()

    def load_reference(self, run_id: str) -> pd.DataFrame | None:
        import pandas as pd

        with self._lock:
            data = self._references.get(run_id)
        return None if data is None else pd.read_parquet(io.BytesIO(data))


# --------------------------------------------------------------------------------- events


class MemoryEvents:
    """The event sink in memory: `emitted` holds (event, payload, id), oldest first, the
    payload as plain JSON types (what Prefect would be sent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.emitted: list[tuple[str, dict[str, Any], str]] = []

    def emit(self, event: str, payload: dict[str, Any]) -> str:
        event_id = str(uuid.uuid4())
        body = plain(payload)
        with self._lock:
            self.emitted.append((event, body, event_id))
        return event_id

    def payloads(self, event: str) -> list[dict[str, Any]]:
        """The payloads of every `event` emitted, oldest first."""
        with self._lock:
            return [p for e, p, _ in self.emitted if e == event]


# -------------------------------------------------------------------------------- run log


@dataclass
class MemoryRun:
    """One recorded run: a training run (its model URI) or a monitored batch (its result)."""

    run_id: str
    kind: str  # "training" or "monitor"
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    model_uri: str | None = None
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


MEMORY_TRACKING_URI = "memory://"


class MemoryRunLog:
    """The run log in memory (`ports.RunLog`): a training run stores the model and the next
    monitor's reference in `artifacts` (where the registry's versions load them from);
    `runs` keeps every run, oldest first."""

    def __init__(self, artifacts: MemoryArtifacts | None = None) -> None:
        self.artifacts = artifacts if artifacts is not None else MemoryArtifacts()
        self._lock = threading.Lock()
        self.runs: list[MemoryRun] = []

    def log_training_run(
        self,
        config: Any,
        model: Any,
        evaluation: Any,
        snap: Any,
        win: Any,
        holdout: Any,
        trigger_kind: str,
        lineage_tags: dict[str, str],
    ) -> LoggedCandidate:
        """What `tracking.log_training_run` logs, kept here: the params, the finite
        metrics, the model and the monitor reference (the held-out rows scored by the
        model, version "candidate")."""
        from evergreen.adapters.tracking import LoggedCandidate, safe_metric_name, training_params
        from evergreen.engines.scoring import monitor_reference

        run_id = uuid.uuid4().hex
        uri = self.artifacts.put_model(model)
        self.artifacts.put_reference(
            run_id, monitor_reference(model.held_out(), holdout.evaluation, config, version="candidate")
        )
        params = training_params(config, model, win, holdout, trigger_kind)
        metrics = {
            safe_metric_name(k): float(v)
            for k, v in evaluation.flat_metrics().items()
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        run = MemoryRun(
            run_id=run_id,
            kind="training",
            params=params,
            metrics=metrics,
            tags=dict(lineage_tags),
            model_uri=uri,
            extra={
                "dataset_digest": snap.digest,
                "dataset_uri": snap.uri,
                "evaluation": plain(evaluation.to_dict()),
            },
        )
        with self._lock:
            self.runs.append(run)
        return LoggedCandidate(
            run_id=run_id,
            experiment_id=config.mlflow.training_experiment,
            model_uri=uri,
            tracking_uri=MEMORY_TRACKING_URI,
        )

    def name_training_run(self, config: Any, run_id: str, version: str, bootstrap: bool) -> None:
        """Records the name MLflow would show (`tracking.version_run_name`)."""
        name = f"{'bootstrap' if bootstrap else 'retrain'} · {config.name} · v{version}"
        with self._lock:
            for run in self.runs:
                if run.run_id == run_id:
                    run.tags["mlflow.runName"] = name

    def publish_monitor(
        self,
        config: Any,
        result: Any,
        index: int,
        report: Any,
        chunks: list[dict],
        flow_run_id: str | None,
    ) -> tuple[str | None, str | None]:
        """Records the monitored batch's result (no plots are drawn: nobody looks at them in
        memory); returns the run id and no link."""
        run_id = uuid.uuid4().hex
        tags = {
            "evergreen.model": config.name,
            "evergreen.batch": str(getattr(result, "batch_id", "")),
        }
        if flow_run_id:
            tags["prefect.flow_run_id"] = flow_run_id
        run = MemoryRun(
            run_id=run_id, kind="monitor", tags=tags, result=result,
            extra={"step": index, "chunks": list(chunks), "plots": []},
        )  # fmt: skip
        with self._lock:
            self.runs.append(run)
        return run_id, None

    def training_runs(self) -> list[MemoryRun]:
        with self._lock:
            return [r for r in self.runs if r.kind == "training"]

    def monitor_runs(self) -> list[MemoryRun]:
        with self._lock:
            return [r for r in self.runs if r.kind == "monitor"]
