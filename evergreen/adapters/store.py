"""The file-backed ports: one model's batches, labels and ledger (`FileStore`) on any fsspec
path, local disk by default (`evergreen.adapters.ports.BatchStore`). On fsspec's `memory://`
the same code is the in-memory store of tests and replays."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from evergreen.adapters import io, ledger
from evergreen.config import ModelConfig


class FileStore:
    """Batches under `data.batches`, labels files under `data.labels`, the monitor's ledger
    under `data.state`."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        # Labels files read so far, by (path, size, modification time): a monitor or a
        # replay reads the same delivered files again and again; a replaced file is read anew.
        self._labels: dict[tuple[str, Any, Any], pd.DataFrame] = {}

    def list_batches(self) -> list[io.BatchFile]:
        return io.list_batches(self.config.data.path("batches"))

    def read_batch(
        self, batch: io.BatchFile, columns: Sequence[str] | None = None, datetime_columns: Sequence[str] = ()
    ) -> pd.DataFrame:
        """One batch (only `columns` when given); DataReadError names an unreadable file, or
        one of more than `data.max_batch_rows` rows before its data is read."""
        return io.read_table(
            batch.path, columns=columns, max_rows=self.config.data.max_batch_rows, datetime_columns=datetime_columns
        )

    def iter_batch(
        self, batch: io.BatchFile, rows: int, datetime_columns: Sequence[str] = ()
    ) -> Iterable[pd.DataFrame]:
        """One batch's rows in order, `rows` at a time (`io.iter_table`); DataReadError as
        `read_batch` raises it."""
        return io.iter_table(
            batch.path, rows=rows, max_rows=self.config.data.max_batch_rows, datetime_columns=datetime_columns
        )

    def batch_rows(self, batch: io.BatchFile) -> int | None:
        return io.table_rows(batch.path)

    def read_labels(self, up_to_day: str | None = None) -> pd.DataFrame | None:
        """Labels delivered on or before `up_to_day` (all delivered so far when None)."""
        return io.read_labels(self.config.data.path("labels"), up_to_day, read=self.read_label_file)

    def list_label_files(self) -> list[io.BatchFile]:
        """The labels files delivered so far, in name (delivery day) order."""
        return io.list_batches(self.config.data.path("labels"))

    def read_label_file(self, labels: io.BatchFile) -> pd.DataFrame:
        """One labels file (DataReadError names it when it cannot be read)."""
        key = (labels.path, *io.file_stamp(labels.path))
        if key not in self._labels:
            self._labels[key] = io.read_table(labels.path)
        return self._labels[key]

    def read_ledger(self) -> ledger.BatchLedger:
        return ledger.read_ledger(self.config.data.path("state"))

    def record_batch(self, record: ledger.BatchRecord, episode: dict | None = None) -> None:
        ledger.record_batch(self.config.data.path("state"), record, episode)

    def record_episode(self, episode: dict) -> None:
        ledger.record_episode(self.config.data.path("state"), episode)


class FileSnapshots:
    """Content-addressed training snapshots under `data.dataset_store`
    (`evergreen.adapters.ports.SnapshotStore`)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def stage(self, frame: pd.DataFrame, sources: Sequence[str], time_column: str) -> Any:
        from evergreen.engines import snapshot

        return snapshot.stage_snapshot(
            frame, self.config.data.path("dataset_store"), sources=list(sources), time_column=time_column
        )

    def stage_chunks(self, chunks: Callable[[], Iterable[pd.DataFrame]], sources: Sequence[str], time_column: str) -> Any:
        from evergreen.engines import snapshot

        return snapshot.stage_snapshot_chunks(
            chunks(), self.config.data.path("dataset_store"), sources=list(sources), time_column=time_column
        )

    def read_rows(
        self, uri: str, columns: list[str], needed: Any = None, dictionary: Sequence[str] = ()
    ) -> Iterable[tuple[int, pd.DataFrame]]:
        from evergreen.engines import snapshot

        return snapshot.read_snapshot_rows(uri, columns, needed, dictionary)

    def publish(self, staged: Any) -> Any:
        from evergreen.engines import snapshot

        return snapshot.commit_snapshot(staged)

    def discard(self, staged: Any) -> None:
        from evergreen.engines import snapshot

        snapshot.discard_snapshot(staged)


class FilePredictionLog:
    """The scoring service's prediction log under `data.predictions_log`
    (`evergreen.adapters.ports.PredictionLog`): Parquet part files per day."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def read(self, since: str | None = None) -> pd.DataFrame:
        """Every logged prediction (served at or after `since`, when given)."""
        from evergreen.adapters.predlog import SERVED_AT_COLUMN, read_prediction_log

        log = read_prediction_log(self.config.data.path("predictions_log"))
        if len(log) and since and SERVED_AT_COLUMN in log.columns:
            log = log[pd.to_datetime(log[SERVED_AT_COLUMN], utc=True) >= pd.Timestamp(since)]
        return log

    def append(self, frame: pd.DataFrame) -> None:
        """Log served rows at once (the replay's scoring service; the real service buffers
        through `predlog.PredictionLogWriter`)."""
        from evergreen.adapters.predlog import PredictionLogWriter

        writer = PredictionLogWriter(
            self.config.data.path("predictions_log"), timestamp_column=self.config.columns.timestamp,
            flush_rows=max(len(frame), 1),
        )
        writer.append(frame)
        writer.close()
