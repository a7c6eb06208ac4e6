"""The loop's ports: every external system the loop steps touch, as a small interface.

Each port has the real implementation users run and an in-memory one for tests and replays
(`evergreen.adapters.wiring` picks the set):

| port | real | in memory |
|---|---|---|
| `ModelRegistry` | MLflow (`registry.Registry` on an `MlflowClient`) | `registry.Registry` on `memory.MemoryRegistryClient` |
| `EventSink` | Prefect events (`tasks.events.PrefectEvents`) | `memory.MemoryEvents` |
| `BatchStore` | files on any fsspec path (`store.FileStore`) | the same on fsspec's `memory://` |
| `SnapshotStore` | content-addressed files (`store.FileSnapshots`) | the same on `memory://` |
| `PredictionLog` | Parquet part files (`store.FilePredictionLog`) | the same on `memory://` |
| `RunLog` | MLflow runs and Prefect artifacts (`tasks.publish.TrackedRuns`) | `memory.MemoryRunLog` |
| `Lock` | a Prefect global concurrency limit per model (`tasks.registry.PrefectLock`) | a thread lock |

The file-backed ports run unchanged on fsspec's in-memory filesystem: the replay exercises
the very code users run, without touching disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from evergreen.adapters.io import BatchFile
    from evergreen.adapters.ledger import BatchLedger, BatchRecord
    from evergreen.adapters.registry import AliasMove, LoadedModel, VersionInfo
    from evergreen.engines.snapshot import SnapshotInfo, StagedSnapshot


class EventSink(Protocol):
    """Where the loop's events go (DESIGN.md "Events")."""

    def emit(self, event: str, payload: dict[str, Any]) -> str | None:
        """Emit `event` for the model's resource; returns the event id (None if dropped)."""
        ...


class BatchStore(Protocol):
    """One model's production data: batches, delayed labels, the monitor's ledger and the
    reference tables."""

    def list_batches(self) -> list[BatchFile]: ...

    def read_batch(
        self, batch: BatchFile, columns: Sequence[str] | None = None, datetime_columns: Sequence[str] = ()
    ) -> pd.DataFrame: ...

    def iter_batch(
        self, batch: BatchFile, rows: int, datetime_columns: Sequence[str] = ()
    ) -> Iterable[pd.DataFrame]:
        """One batch's rows in order, `rows` at a time (as `read_batch` types them)."""
        ...

    def batch_rows(self, batch: BatchFile) -> int | None:
        """A batch's row count without reading its data (None: not known before reading it)."""
        ...

    def read_labels(self, up_to_day: str | None = None) -> pd.DataFrame | None: ...

    def list_label_files(self) -> list[BatchFile]: ...

    def read_label_file(self, labels: BatchFile) -> pd.DataFrame: ...

    def read_ledger(self) -> BatchLedger: ...

    def record_batch(self, record: BatchRecord, episode: dict | None = None) -> None:
        """Record one batch (and the alert episode as it stands after it)."""
        ...

    def record_episode(self, episode: dict) -> None:
        """Replace the alert episode (a retrain requested between batches)."""
        ...


class SnapshotStore(Protocol):
    """Content-addressed training snapshots: staged, then published or discarded."""

    def stage(self, frame: pd.DataFrame, sources: list[str], time_column: str) -> StagedSnapshot: ...

    def stage_chunks(
        self, chunks: Callable[[], Iterable[pd.DataFrame]], sources: list[str], time_column: str
    ) -> StagedSnapshot:
        """`stage` of the table whose rows `chunks()` yields in order, a chunk in memory at a time."""
        ...

    def read_rows(
        self, uri: str, columns: list[str], needed: Any = None, dictionary: Sequence[str] = ()
    ) -> Iterable[tuple[int, pd.DataFrame]]:
        """A snapshot's rows, a row group at a time: (first row's position, frame of `columns`)."""
        ...

    def publish(self, staged: StagedSnapshot) -> SnapshotInfo: ...

    def discard(self, staged: StagedSnapshot) -> None: ...


class PredictionLog(Protocol):
    """Every prediction served, once (the canary review's evidence)."""

    def read(self, since: str | None = None) -> pd.DataFrame: ...

    def append(self, frame: pd.DataFrame) -> None: ...


class ModelRegistry(Protocol):
    """One registered model: versions, aliases, status tags and the alias history."""

    name: str

    def list_versions(self) -> list[VersionInfo]: ...

    def get_version(self, version: str) -> VersionInfo: ...

    def version_by_alias(self, alias: str) -> VersionInfo | None: ...

    def alias_history(self) -> list[AliasMove]: ...

    def load_version(self, version: str) -> LoadedModel: ...

    def load_alias(self, alias: str) -> LoadedModel | None: ...

    def champion_reference(self) -> tuple[str, pd.DataFrame] | None: ...

    def previous_champion(self) -> str | None: ...


class RunLog(Protocol):
    """Where runs are recorded for people to read: a training run holds the model the
    registry versions; a monitor run holds what one batch showed."""

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
    ) -> Any:
        """Returns a `tracking.LoggedCandidate` (run id, model URI)."""
        ...

    def name_training_run(self, config: Any, run_id: str, version: str, bootstrap: bool) -> None:
        """Names the training run after the version it registered (known only then)."""
        ...

    def publish_monitor(
        self, config: Any, result: Any, index: int, report: Any, chunks: list[dict], flow_run_id: str | None
    ) -> tuple[str | None, str | None]:
        """Records one monitored batch (`report`: its MonitorReport, None when rejected);
        returns the run's id and a link to it."""
        ...


class Lock(Protocol):
    """Serializes one model's registry writes (a Prefect global concurrency limit in
    production, a thread lock in memory)."""

    def __call__(self) -> AbstractContextManager[Any]: ...


@dataclass
class Ports:
    """The set of ports one model's loop runs on (see `evergreen.adapters.wiring`)."""

    store: BatchStore
    snapshots: SnapshotStore
    predictions: PredictionLog
    registry: ModelRegistry
    events: EventSink
    runs: RunLog
    lock: Lock
