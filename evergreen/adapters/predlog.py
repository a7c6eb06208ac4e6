"""The production prediction log: every served row, once, as Parquet part files.

Layout (contract with the monitor and the canary review):

    <predictions_log>/<YYYY-MM-DD>/part-<UTC time>-<writer>-<random>.parquet

Rows carry the config's id, timestamp, feature, prediction, probability and model-version
columns (a multiclass model: the predicted class and one probability column per class, named
by `columns.probability`) plus `alias` (champion/canary), `served_at` (request time) and
`request_id`. The day
directory is the day of the row's timestamp (naive UTC), so `compact_day` turns one day of
the log into the batch file `batches/<day>.parquet` the monitor reads.

Part files are written atomically (temporary name, then rename): a reader never sees half a
file. Rows buffered in memory are lost if the process is killed before a flush; a normal
shutdown flushes them. Each process writes its own part files (`<writer>` is `p<pid>` unless
named), so the workers of one service never write the same file.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from evergreen.adapters.column_batch import ColumnBatch, concat_frame
from evergreen.adapters.io import read_table, write_table

# The log's own columns, also importable from here (the scoring service, the backtest).
from evergreen.columns import ALIAS_COLUMN as ALIAS_COLUMN
from evergreen.columns import LOG_ONLY_COLUMNS as LOG_ONLY_COLUMNS
from evergreen.columns import REQUEST_ID_COLUMN as REQUEST_ID_COLUMN
from evergreen.columns import SERVED_AT_COLUMN as SERVED_AT_COLUMN

PART_PREFIX = "part-"

log = logging.getLogger("evergreen.adapters.predlog")


class PredictionLogWriter:
    """Buffers logged rows and writes them as part files every `flush_rows` rows or
    `flush_seconds` seconds (whichever comes first), and on `close()`.

    Thread-safe. `start()` runs the time-based flushes in a background thread; without it,
    `append` flushes inline once the buffer is full and `close()` writes the rest.
    A failed write keeps its rows in the buffer for the next flush, so no row is dropped
    and none is written twice. `on_written(rows)` / `on_error()` are called after each
    successful / failed write (the service's metrics).
    """

    def __init__(
        self,
        directory: str,
        *,
        timestamp_column: str = "timestamp",
        flush_rows: int = 1000,
        flush_seconds: float = 5.0,
        writer_id: str | None = None,
        on_written: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        if flush_rows < 1 or flush_seconds <= 0:
            raise ValueError("flush_rows must be >= 1 and flush_seconds > 0")
        self.directory = directory.rstrip("/")
        self.timestamp_column = timestamp_column
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._buffer: list[pd.DataFrame | ColumnBatch] = []
        self._rows = 0
        self._lock = threading.Lock()  # guards the buffer
        self._write_lock = threading.Lock()  # one flush at a time, in buffer order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.last_error: str | None = None
        self.writer_id = writer_id
        self._on_written, self._on_error = on_written, on_error

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="evergreen-predlog-flusher", daemon=True
        )
        self._thread.start()

    def append(self, rows: pd.DataFrame | ColumnBatch) -> None:
        """Queue rows for the log (not modified here, and must not be afterwards).

        The service appends columnar batches: they become one frame per flush, in the
        background, instead of one frame per request."""
        if len(rows) == 0:
            return
        with self._lock:
            self._buffer.append(rows)
            self._rows += len(rows)
            full = self._rows >= self.flush_rows
        if full:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    def flush(self) -> list[str]:
        """Write everything buffered now; returns the part files written."""
        with self._write_lock:
            with self._lock:
                frames, self._buffer, self._rows = self._buffer, [], 0
            if not frames:
                return []
            writer = self.writer_id or f"p{os.getpid()}"  # at write time: a forked child is another
            try:
                written = _write_parts(frames, self.directory, self.timestamp_column, writer)
            except Exception as exc:
                with self._lock:
                    self._buffer = frames + self._buffer
                    self._rows += sum(len(f) for f in frames)
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._on_error is not None:
                    self._on_error()
                raise
            rows = sum(len(f) for f in frames)
            self.rows_written += rows
            self.last_error = None
            if self._on_written is not None:
                self._on_written(rows)
            return written

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:
                log.exception(
                    "writing the prediction log under %s failed; %d rows stay buffered",
                    self.directory,
                    self._rows,
                )


def _write_parts(
    parts: list[pd.DataFrame | ColumnBatch], directory: str, timestamp_column: str, writer: str
) -> list[str]:
    frame = _parquet_safe(concat_frame(parts))
    # Floor to the day and format once per day (strftime on every row costs more than the
    # rest of a flush).
    days = pd.to_datetime(frame[timestamp_column]).dt.floor("D")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    written = []
    for day, rows in frame.groupby(days, sort=True):
        path = (
            f"{directory}/{day.strftime('%Y-%m-%d')}/"
            f"{PART_PREFIX}{stamp}-{writer}-{uuid.uuid4().hex[:12]}.parquet"
        )
        write_table(rows.reset_index(drop=True), path)
        written.append(path)
    return written


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns that ended up mixing types across requests (e.g. int and text ids) as text."""
    out = frame
    for name in frame.columns:
        if frame[name].dtype == object:
            kinds = {type(v) for v in frame[name].dropna()}
            if len(kinds) > 1:
                if out is frame:
                    out = frame.copy()
                out[name] = frame[name].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
    return out


# --------------------------------------------------------------------------------- reading


def list_log_days(directory: str) -> list[str]:
    """The days (YYYY-MM-DD) that have part files, in order."""
    fs, root = _fs(directory)
    if not fs.exists(root):
        return []
    days = []
    for entry in fs.ls(root, detail=True):
        name = PurePosixPath(str(entry["name"])).name
        if entry.get("type") == "directory" and _is_day(name):
            days.append(name)
    return sorted(days)


def read_prediction_log(
    directory: str, day: str | None = None, *, timestamp_column: str | None = None
) -> pd.DataFrame:
    """Logged predictions (all days, or one `day` YYYY-MM-DD), ordered by row timestamp and
    then by write order; an empty frame when nothing is logged.

    `timestamp_column` defaults to the log's one datetime column other than `served_at`.
    """
    if day is not None and not _is_day(day):
        raise ValueError(f"day must look like YYYY-MM-DD, got {day!r}")
    days = [day] if day is not None else list_log_days(directory)
    paths = [p for d in days for p in _part_files(directory, d)]
    frames = [f for f in (read_table(p) for p in paths) if len(f)]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    ts = timestamp_column or _timestamp_column(frame)
    if ts is not None:
        frame = frame.sort_values(ts, kind="mergesort").reset_index(drop=True)
    return frame


def compact_day(log_dir: str, day: str, batches_dir: str) -> str:
    """Write one day of the log as the monitor's batch file `batches_dir/<day>.parquet`
    (id, timestamp, features, prediction, probability column(s), model version); returns its
    path.

    Re-running it after more rows arrived for the day rewrites the file with all of them.
    """
    frame = read_prediction_log(log_dir, day)
    if frame.empty:
        raise FileNotFoundError(
            f"no predictions logged for {day} under {log_dir}; nothing to compact"
        )
    batch = frame.drop(columns=[c for c in LOG_ONLY_COLUMNS if c in frame.columns])
    path = f"{batches_dir.rstrip('/')}/{day}.parquet"
    write_table(batch, path)
    return path


def _part_files(directory: str, day: str) -> list[str]:
    fs, root = _fs(directory)
    folder = f"{root.rstrip('/')}/{day}"
    if not fs.exists(folder):
        return []
    names = sorted(
        str(p)
        for p in fs.ls(folder, detail=False)
        if PurePosixPath(str(p)).name.startswith(PART_PREFIX) and str(p).endswith(".parquet")
    )
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    return [prefix + n for n in names]


def _timestamp_column(frame: pd.DataFrame) -> str | None:
    """The row-timestamp column: the one datetime column that is not `served_at`."""
    for name in frame.columns:
        if name != SERVED_AT_COLUMN and pd.api.types.is_datetime64_any_dtype(frame[name]):
            return str(name)
    return None


def _is_day(text: str) -> bool:
    try:
        return datetime.strptime(text, "%Y-%m-%d").strftime("%Y-%m-%d") == text
    except ValueError:
        return False


def _fs(path: str) -> tuple[Any, str]:
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs, paths[0]
