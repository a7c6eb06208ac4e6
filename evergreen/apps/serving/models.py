"""The models being served: an immutable snapshot, swapped atomically by a refresher.

A request reads `store.snapshot` once and scores every row with that object, so a swap
in the middle of a request changes nothing for it. Only the refresher thread builds
snapshots; assigning the attribute is atomic in CPython, so readers take no lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from evergreen.adapters.column_batch import ColumnBatch
from evergreen.adapters.registry import CANARY, CHAMPION
from evergreen.apps.serving.schema import FeatureSpec, feature_specs, merge_specs

log = logging.getLogger("evergreen.apps.serving.models")

ALIASES = (CHAMPION, CANARY)
# Retry a version that failed to load after this long at most (doubling from refresh_seconds).
MAX_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class ServedModel:
    """One loaded registry version, ready to score."""

    version: str
    run_id: str | None
    model: Any  # evergreen.engines.training.TrainedModel
    specs: tuple[FeatureSpec, ...]
    loaded_at: str
    scorer: Any = None  # fast path (evergreen.apps.serving.fastpath); None: model.predict

    def predict(self, frame: Any) -> Any:
        """Predictions of this version for a validated frame (TrainedModel.predict's contract)."""
        return (self.scorer or self.model).predict(frame)

    def predict_columns(self, rows: ColumnBatch) -> Any:
        """Predictions for validated request columns; through the fast path when there is
        one, else the model's own `predict` on the rows as a frame."""
        predict_columns = getattr(self.scorer, "predict_columns", None)
        if predict_columns is not None:
            return predict_columns(rows)
        return self.predict(rows.to_frame())

    def predict_subset(self, rows: ColumnBatch, mask: Any, matrices: dict[Any, Any]) -> Any:
        """Predictions for the rows of `rows` selected by the boolean `mask`. Through the fast
        path, the input matrix is built once per request and layout (`matrices` keeps it), so
        champion and canary of the same features share it; else as `predict_columns`."""
        scorer = self.scorer
        layout = getattr(scorer, "layout", None)
        if not layout:
            return self.predict_columns(rows if mask.all() else rows.take(mask))
        matrix = matrices.get(layout)
        if matrix is None:
            matrix = matrices[layout] = scorer.matrix(rows)
        return scorer.predict_features(matrix if mask.all() else matrix[mask])

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "problem_type": self.model.problem_type,
            "threshold": self.model.threshold,
            "classes": getattr(self.model, "classes", None),
            "features": [s.name for s in self.specs],
            "fast_path": self.scorer is not None and self.scorer is not self.model,
        }


@dataclass(frozen=True)
class ServingSnapshot:
    """What serves traffic right now; never modified, only replaced."""

    model_name: str
    canary_share: float
    champion: ServedModel | None = None
    canary: ServedModel | None = None
    created_at: str = field(default_factory=lambda: _now())

    @property
    def ready(self) -> bool:
        return self.champion is not None

    @property
    def has_canary(self) -> bool:
        return self.canary is not None

    def model_for(self, alias: str) -> ServedModel | None:
        return {CHAMPION: self.champion, CANARY: self.canary}.get(alias)

    @cached_property
    def specs(self) -> list[FeatureSpec]:
        """Every feature any served model needs; the champion's type wins on a conflict."""
        return merge_specs(*(m.specs for m in (self.champion, self.canary) if m is not None))

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "champion": self.champion.describe() if self.champion else None,
            "canary": self.canary.describe() if self.canary else None,
            "canary_share": self.canary_share,
            "effective_canary_share": self.canary_share if self.has_canary else 0.0,
            "snapshot_created_at": self.created_at,
        }


Resolver = Callable[[str, str], "str | None"]
Loader = Callable[[str, str], ServedModel]


def resolve_from_registry(model_name: str, alias: str) -> str | None:
    """The version an alias points at in the MLflow registry (None when unset)."""
    from evergreen.adapters.registry import version_by_alias

    info = version_by_alias(model_name, alias)
    return None if info is None else info.version


def load_from_registry(model_name: str, version: str) -> ServedModel:
    """Download and load one version natively (XGBoost UBJSON + metadata, no pickle)."""
    from evergreen.adapters.registry import load_version
    from evergreen.apps.serving.fastpath import build_scorer

    loaded = load_version(model_name, version)
    # The service scores with the booster alone: the probes (what the gate measures) are let go.
    model = replace(loaded.model, probe=None, cross_fit=None)
    return ServedModel(
        version=loaded.version.version,
        run_id=loaded.version.run_id,
        model=model,
        specs=tuple(feature_specs(model.features, model.categories)),
        loaded_at=_now(),
        scorer=build_scorer(model),
    )


@dataclass
class _Failure:
    version: str
    error: str
    attempts: int
    retry_at: float


class ModelStore:
    """Holds the current snapshot and refreshes it from the registry.

    `resolve` and `load` default to the MLflow registry; tests pass fakes. `connect` runs
    once in the refresher thread before the first look-up (it imports mlflow, which the
    service must not pay for at import time).
    """

    def __init__(
        self,
        model_name: str,
        canary_share: float,
        *,
        resolve: Resolver = resolve_from_registry,
        load: Loader = load_from_registry,
        connect: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot = ServingSnapshot(model_name=model_name, canary_share=canary_share)
        self._resolve, self._load, self._connect, self._clock = resolve, load, connect, clock
        self._connected = connect is None
        self._failures: dict[str, _Failure] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = 2.0
        self.last_refresh: str | None = None
        # Unix time both aliases were last resolved in the registry (None: not yet), and who
        # hears of it (the service's metrics).
        self.last_resolved_at: float | None = None
        self.on_resolved: Callable[[float], None] | None = None
        self._resolve_failed = False
        self.errors: dict[str, str] = {}

    # ------------------------------------------------------------------ refreshing

    def refresh(self) -> bool:
        """Re-resolve both aliases once and swap in a new snapshot if a version changed.

        Never raises: a failed look-up or load keeps the model that serves the alias now.
        Returns whether the snapshot changed.
        """
        if not self._connected:
            try:
                assert self._connect is not None
                self._connect()
                self._connected = True
            except Exception as exc:
                self.errors["registry"] = f"cannot connect to the registry: {exc}"
                log.exception("connecting to the model registry failed; retrying")
                return False
        current = self.snapshot
        self._resolve_failed = False
        chosen = {alias: self._choose(alias, current) for alias in ALIASES}
        self.last_refresh = _now()
        if not self._resolve_failed:
            self.last_resolved_at = time.time()
            if self.on_resolved is not None:
                self.on_resolved(self.last_resolved_at)
        if all(chosen[a] is current.model_for(a) for a in ALIASES):
            return False
        self.snapshot = ServingSnapshot(
            model_name=current.model_name,
            canary_share=current.canary_share,
            champion=chosen[CHAMPION],
            canary=chosen[CANARY],
        )
        for alias in ALIASES:
            before, after = current.model_for(alias), chosen[alias]
            if before is not after:
                log.info(
                    "%s %s: now serving version %s (was %s)",
                    current.model_name,
                    alias,
                    after.version if after else None,
                    before.version if before else None,
                )
        return True

    def _choose(self, alias: str, current: ServingSnapshot) -> ServedModel | None:
        serving = current.model_for(alias)
        name = current.model_name
        try:
            version = self._resolve(name, alias)
        except Exception as exc:
            self._resolve_failed = True
            self.errors[alias] = f"resolving alias {alias!r} failed: {exc}"
            log.warning("resolving %s@%s failed; keeping what serves now: %s", name, alias, exc)
            return serving
        self.errors.pop("registry", None)
        if version is None:
            self._failures.pop(alias, None)
            if alias == CHAMPION and serving is not None:
                # Never stop serving: a missing champion alias is an operator error.
                self.errors[alias] = (
                    f"alias {alias!r} is not set on {name}; still serving version {serving.version}"
                )
                return serving
            self.errors.pop(alias, None)
            return None
        if serving is not None and serving.version == version:
            self.errors.pop(alias, None)
            return serving
        # A canary promoted to champion (or back) is already loaded.
        for other in (current.champion, current.canary):
            if other is not None and other.version == version:
                self.errors.pop(alias, None)
                return other
        return self._load_or_keep(alias, version, serving, name)

    def _load_or_keep(
        self, alias: str, version: str, serving: ServedModel | None, name: str
    ) -> ServedModel | None:
        failure = self._failures.get(alias)
        if failure and failure.version == version and self._clock() < failure.retry_at:
            return serving
        try:
            loaded = self._load(name, version)
        except Exception as exc:
            attempts = failure.attempts + 1 if failure and failure.version == version else 1
            delay = min(MAX_RETRY_SECONDS, self._interval * 2**attempts)
            self._failures[alias] = _Failure(version, str(exc), attempts, self._clock() + delay)
            keep = serving.version if serving else "nothing"
            self.errors[alias] = f"loading {name} version {version} ({alias}) failed: {exc}"
            log.error(
                "loading %s version %s for %s failed (attempt %d, next in %.0f s); "
                "still serving %s: %s",
                name, version, alias, attempts, delay, keep, exc,
            )  # fmt: skip
            return serving
        self._failures.pop(alias, None)
        self.errors.pop(alias, None)
        return loaded

    # ------------------------------------------------------------------ background thread

    def start(self, interval: float) -> None:
        """Refresh now (in the background) and then every `interval` seconds."""
        if interval <= 0:
            raise ValueError(f"refresh interval must be > 0 seconds, got {interval}")
        if self._thread is not None:
            return
        self._interval = interval
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="evergreen-model-refresher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # refresh() catches everything it expects; belt and braces
                log.exception("model refresh failed")
            self._stop.wait(self._interval)

    def readiness(self) -> tuple[bool, str]:
        """Whether a champion serves, and why not."""
        snap = self.snapshot
        if snap.champion is not None:
            return True, f"champion version {snap.champion.version} loaded"
        if CHAMPION in self.errors:
            return False, self.errors[CHAMPION]
        if "registry" in self.errors:
            return False, self.errors["registry"]
        if self.last_refresh is None:
            return False, "loading models from the registry"
        return False, f"no version of {snap.model_name} has the alias {CHAMPION!r}"


def _now() -> str:
    return datetime.now(UTC).isoformat()
