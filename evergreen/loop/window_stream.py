"""A retrain's training window held by reference and read in chunks: memory for a few
numbers per row, not for the window's rows.

`plan_training_window` reads only the id and timestamp of each batch file (and the
reference's timestamp and target), joins the labels, and lets the retrain policy
(`decisions.window.assemble_window`, unchanged) choose the rows on these narrow frames,
each row carrying its file and position as its key. `WindowPlan.chunks` then reads the
chosen rows' ids and features from their files, a piece at a time, and yields the window's
rows in the window's order with the same values as the in-memory window
(`sources.assemble_training_window`): the snapshot, its validation and the training read
them from there.

Bytes per row held for the whole window: the key, the timestamp and the target (~24), and
while the rows are chosen a few copies of those. A file whose rows the window takes out of
file order (a batch not written in time order) is read whole when first needed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evergreen.adapters import io, ledger
from evergreen.config import ColumnRoles, ModelConfig
from evergreen.decisions.window import (
    LabelledBatch,
    TrainingWindow,
    assemble_window,
    join_labels,
    window_columns,
)

ROW_KEY = "__evergreen_row"
_POSITION = "__evergreen_position"
_SHIFT = 40  # a key is (file index << 40) | row position in the file: 2^40 rows per file
_MASK = (1 << _SHIFT) - 1
CHUNK_ROWS = io.STREAM_ROWS


@dataclass(frozen=True)
class WindowPlan:
    """A training window by reference: the rows the retrain policy chose, in order, as keys
    into `files`, with their (UTC) timestamps and targets. Carries a `TrainingWindow`'s
    description (`rows`, `sources`, `excluded`, ...) but no `frame`: read it with `chunks`."""

    keyed: TrainingWindow
    files: list[str]
    columns: ColumnRoles
    max_batch_rows: int | None = None  # a production batch's limit (not the reference's)
    reference_files: frozenset[int] = frozenset()  # indices into `files` the limit spares
    chunk_rows: int = CHUNK_ROWS
    keep_rows: int = 0
    _kept: dict[int, list[pd.DataFrame]] = field(default_factory=dict, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return self.keyed.rows

    @property
    def sources(self) -> list[str]:
        return self.keyed.sources

    @property
    def excluded(self) -> dict[str, str]:
        return self.keyed.excluded

    @property
    def reference_rows(self) -> int:
        return self.keyed.reference_rows

    @property
    def batch_rows(self) -> int:
        return self.keyed.batch_rows

    @property
    def time_min(self) -> pd.Timestamp | None:
        return self.keyed.time_min

    @property
    def time_max(self) -> pd.Timestamp | None:
        return self.keyed.time_max

    @property
    def window_start(self) -> pd.Timestamp | None:
        return self.keyed.window_start

    @property
    def timestamps(self) -> pd.Series:
        """The window's timestamps (UTC), in window order."""
        return self.keyed.frame[self.columns.timestamp]

    def chunks(self, rows: int | None = None) -> Iterator[pd.DataFrame]:
        """The window's rows in order, `rows` (default `chunk_rows`) at a time, with the
        window's columns (id, timestamp, features, target): what `frame` would hold, in
        pieces. Always at least one frame (empty for an empty window). A window of at most
        `keep_rows` rows is read once and its chunks kept for the next readers (the retrain
        reads it twice side by side: its validation and its snapshot)."""
        if self.rows <= self.keep_rows:
            size = rows or self.chunk_rows
            with self._lock:
                if size not in self._kept:
                    self._kept[size] = list(self._read_chunks(size))
            yield from self._kept[size]
            return
        yield from self._read_chunks(rows)

    def _read_chunks(self, rows: int | None) -> Iterator[pd.DataFrame]:
        cols = self.columns
        wanted = window_columns(cols)
        size = rows or self.chunk_rows
        keys = self.keyed.frame[ROW_KEY].to_numpy()
        times = self.keyed.frame[cols.timestamp]
        target = self.keyed.frame[cols.target]
        if not len(keys):
            yield _empty_window(cols)
            return
        fetch = [cols.id, *cols.features]
        readers: dict[int, _FileRows] = {}
        try:
            for start in range(0, len(keys), size):
                part = keys[start : start + size]
                files, positions = part >> _SHIFT, part & _MASK
                pieces, where = [], []
                for index in pd.unique(files):
                    chosen = np.flatnonzero(files == index)
                    if index not in readers:
                        limit = None if index in self.reference_files else self.max_batch_rows
                        readers[index] = _FileRows(self.files[index], fetch, size, limit)
                    pieces.append(readers[index].take(positions[chosen]))
                    where.append(chosen)
                frame = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0].reset_index(drop=True)
                if len(pieces) > 1:
                    frame = frame.iloc[np.argsort(np.concatenate(where), kind="stable")].reset_index(drop=True)
                frame[cols.timestamp] = times.iloc[start : start + size].array
                frame[cols.target] = target.iloc[start : start + size].array
                yield frame[wanted]
        finally:
            for reader in readers.values():
                reader.close()

    def release(self) -> None:
        """Forget the kept chunks (a window small enough to keep is read again if asked)."""
        with self._lock:
            self._kept.clear()

    def take(self, positions: np.ndarray) -> pd.DataFrame:
        """The window's rows at these positions (window order, ascending), as one frame."""
        positions = np.asarray(positions, dtype=np.int64)
        out, start = [], 0
        for chunk in self.chunks():
            end = start + len(chunk)
            lo, hi = np.searchsorted(positions, [start, end])
            if hi > lo:
                out.append(chunk.iloc[positions[lo:hi] - start])
            start = end
        return pd.concat(out, ignore_index=True) if out else _empty_window(self.columns)


def plan_training_window(config: ModelConfig) -> WindowPlan:
    """The retrain's training window (`sources.assemble_training_window`: the training
    reference and the labelled production batches, by the retrain policy), by reference."""
    io.map_large_buffers()
    cols = config.columns
    keyed_cols = cols.model_copy(update={"id": ROW_KEY, "features": [], "categorical": [], "slices": []})
    files: list[str] = []
    reference = _keyed_reference(config, files)
    batches = _keyed_batches(config, files)
    keyed = assemble_window(reference, batches, config.retrain, keyed_cols)
    io.release_unused_memory()
    return WindowPlan(
        keyed=keyed, files=files, columns=cols, max_batch_rows=config.data.max_batch_rows,
        reference_files=frozenset() if reference is None else frozenset({0}), keep_rows=config.data.memory_rows,
    )


def _keyed_reference(config: ModelConfig, files: list[str]) -> pd.DataFrame | None:
    """The reference's timestamps and targets, keyed (None: left out or absent)."""
    cols = config.columns
    path = config.data.path("training_reference")
    if not config.retrain.include_reference or not io.exists(path):
        return None
    names = io.table_columns(path)
    # The window's own check of the reference's columns (and its error), on no rows.
    assemble_window(pd.DataFrame(columns=names), [], config.retrain, cols)
    frame = io.read_table(path, columns=[c for c in (cols.timestamp, cols.target) if c in names])
    files.append(path)
    return frame.assign(**{ROW_KEY: _keys(len(files) - 1, np.arange(len(frame)))})


def _keyed_batches(config: ModelConfig, files: list[str]) -> list[LabelledBatch]:
    """Each batch as `sources.read_labelled_batches` gives it, narrowed to its keys,
    timestamps and joined targets: rejected, unreadable or lacking a window column, it is
    left out for the same reason."""
    cols = config.columns
    labels = io.read_labels(config.data.path("labels"))
    rejected = ledger.read_ledger(config.data.path("state")).rejected()
    out: list[LabelledBatch] = []
    for b in io.list_batches(config.data.path("batches")):
        if b.day in rejected:
            out.append(LabelledBatch(b.day, pd.DataFrame(), valid=False, reason=rejected[b.day]))
            continue
        if labels is None:
            continue
        try:
            names = _columns(b.path)
            frame = io.read_table(b.path, columns=[c for c in (cols.id, cols.timestamp) if c in names])
        except io.DataReadError as exc:
            out.append(LabelledBatch(b.day, pd.DataFrame(), valid=False, reason=str(exc)))
            continue
        joined = join_labels(frame.assign(**{_POSITION: np.arange(len(frame))}), labels, cols)
        reason = _missing_columns(b.day, [*names, cols.target], config)
        if reason:
            out.append(LabelledBatch(b.day, pd.DataFrame(), valid=False, reason=reason))
            continue
        files.append(b.path)
        keys = _keys(len(files) - 1, joined.pop(_POSITION).to_numpy())
        out.append(LabelledBatch(b.day, joined.drop(columns=[cols.id]).assign(**{ROW_KEY: keys})))
    return out


def _columns(path: str) -> list[str]:
    """A table's column names; a file whose schema cannot be read is read whole, so that it
    fails as reading it whole fails (the same DataReadError)."""
    try:
        return io.table_columns(path)
    except io.DataReadError:
        return list(io.read_table(path).columns)


def _missing_columns(day: str, names: list[str], config: ModelConfig) -> str | None:
    """The window's reason to leave out a batch lacking a window column (None: it has them
    all), from the window's own check on a batch of no rows with these columns."""
    wanted = window_columns(config.columns)
    if all(c in names for c in wanted):
        return None
    probe = LabelledBatch(day, pd.DataFrame(columns=list(dict.fromkeys(names))))
    return assemble_window(None, [probe], config.retrain, config.columns).excluded.get(day)


def _keys(file_index: int, positions: np.ndarray) -> np.ndarray:
    return (np.int64(file_index) << _SHIFT) | positions.astype(np.int64)


def _empty_window(columns: ColumnRoles) -> pd.DataFrame:
    """The window of no rows, as `assemble_window` makes it."""
    from evergreen.config import RetrainPolicyConfig

    expanding = RetrainPolicyConfig(window="expanding", include_reference=False)
    return assemble_window(None, [], expanding, columns).frame


class _FileRows:
    """The rows of one file at increasing positions, read a piece at a time; when asked for
    a position behind the last one read, the file is read whole (once)."""

    def __init__(self, path: str, columns: list[str], rows: int, max_rows: int | None) -> None:
        self.path, self.columns, self.rows, self.max_rows = path, columns, rows, max_rows
        self._pieces: Iterator[pd.DataFrame] | None = None
        self._buffer = pd.DataFrame()
        self._start = 0  # file position of the buffer's first row
        self._whole: pd.DataFrame | None = None

    def release(self) -> None:
        """Forget the kept chunks (a window small enough to keep is read again if asked)."""
        with self._lock:
            self._kept.clear()

    def take(self, positions: np.ndarray) -> pd.DataFrame:
        if self._whole is None and (positions[0] < self._start or (np.diff(positions) < 0).any()):
            self.close()
            self._whole = io.read_table(self.path, columns=self.columns).reset_index(drop=True)
        if self._whole is not None:
            return self._whole.iloc[positions]
        if self._pieces is None:
            self._pieces = io.iter_table(self.path, columns=self.columns, rows=self.rows, max_rows=self.max_rows)
        base, parts = self._start, [self._buffer]
        end = base + len(self._buffer)
        if end <= positions[0]:  # none of what is buffered is wanted
            base, parts = end, []
        while end <= positions[-1]:
            piece = next(self._pieces, None)
            if piece is None:
                raise io.DataReadError(
                    f"{self.path}: has {end} rows but the window wants row {positions[-1]}; was the file "
                    "replaced while the retrain read it? Run the retrain again"
                )
            if end + len(piece) <= positions[0]:
                base = end + len(piece)  # rows the window skips: not kept
            else:
                parts.append(piece)
            end += len(piece)
        buffer = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
        taken = buffer.iloc[positions - base]
        self._buffer, self._start = buffer.iloc[positions[-1] + 1 - base :], int(positions[-1]) + 1
        return taken

    def close(self) -> None:
        if self._pieces is not None:
            self._pieces.close()  # type: ignore[attr-defined]
            self._pieces = None
        self._buffer = pd.DataFrame()

