"""Content-addressed snapshots of training data.

A snapshot's address is the sha256 of a canonical serialization of the table, so the same
data gets the same digest however it was loaded, and is stored once:

    <store>/<digest[:2]>/<digest>/data.parquet
    <store>/<digest[:2]>/<digest>/meta.json

What "the same data" means (the canonical form, see `canonicalize`):

- column order does not matter (columns are sorted by name); the index does not matter;
- row order DOES matter: rows are data (a time-ordered training window in another order
  is another training set, and early stopping / validation splits depend on it);
- numbers are compared by value, not by dtype: int8..int64, uint, float16/32/64 and the
  nullable variants become int64 when every value is a whole number and none is missing,
  otherwise float64 (missing -> NaN, -0.0 -> 0.0). float16/32 values are widened through
  their shortest decimal form, so float32(0.1) equals float64 0.1;
- strings (object, "str", string[pyarrow], category of strings) become plain strings;
- booleans stay booleans (nullable "boolean" when something is missing);
- datetimes become UTC datetime64[ns] (tz-naive values are taken as UTC).

The stored data.parquet holds the canonical frame, so `load_snapshot` returns the same
frame (same dtypes, same column order) whoever wrote it first. `meta.json` is written
last: a folder without it is an interrupted write and counts as absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from evergreen.adapters import io

FORMAT_VERSION = 1
_HEADER = b"evergreen.snapshot.v1\n"
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
# Whole-number floats become int64 only inside the range int64 holds exactly.
_WHOLE_PROBE = 1024  # leading values checked first: most float columns are not whole
_INT64_LIMIT = float(2**63)
# pandas' default string dtype ("str"), the canonical one for text.
_STR = pd.api.types.pandas_dtype("str")


class SnapshotError(ValueError):
    """A snapshot that cannot be made or read; the message names the digest or column."""


class SnapshotNotFoundError(SnapshotError, FileNotFoundError):
    """No complete snapshot with that digest in the store."""


class SnapshotIntegrityError(SnapshotError):
    """The stored data no longer hashes to its digest."""


@dataclass(frozen=True)
class SnapshotInfo:
    """Where a snapshot lives and what it holds. `created` is False when it already existed."""

    digest: str
    uri: str
    rows: int
    columns: list[str]
    time_min: str | None
    time_max: str | None
    sources: list[str] = field(default_factory=list)
    created: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- canonical form


def canonicalize(df: pd.DataFrame) -> pd.DataFrame:
    """The canonical form of a table: sorted string column names, normalized dtypes, 0..n-1 index.

    Row order is kept. Raises SnapshotError naming the column when a column cannot be
    represented (mixed Python types in an object column, timedeltas, complex numbers).
    """
    columns = dict(_canonical_columns(df))
    out = pd.DataFrame(columns)
    out.index = pd.RangeIndex(len(df))
    return out


def _canonical_columns(df: pd.DataFrame) -> Iterator[tuple[str, pd.Series]]:
    """(name, canonical column) in name order, one column at a time (see `canonicalize`);
    a column that is canonical already is passed through without a copy."""
    names = [str(c) for c in df.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SnapshotError(f"cannot snapshot a table with duplicate column names: {duplicated}")
    for i in sorted(range(len(names)), key=names.__getitem__):
        yield names[i], _canonical_column(names[i], df.iloc[:, i].reset_index(drop=True))


def _canonical_column(name: str, s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.CategoricalDtype):
        # The categories' own values decide the type; category codes are not data.
        s = s.astype(object)
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return _canonical_bool(s)
    if pd.api.types.is_complex_dtype(dtype):
        raise SnapshotError(f"column {name!r}: complex numbers are not supported in snapshots")
    if pd.api.types.is_numeric_dtype(dtype):
        return _canonical_numeric(s)
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        return _canonical_datetime(s)
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        return _canonical_object(name, s)
    raise SnapshotError(
        f"column {name!r} has dtype {dtype}, which snapshots do not support; "
        "convert it to numbers, strings, booleans or datetimes first"
    )


def _canonical_object(name: str, s: pd.Series) -> pd.Series:
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind == "string":
        return _canonical_string(s)
    if kind == "empty":
        # All missing: the same whatever dtype pandas happened to give it.
        return pd.Series(np.full(len(s), np.nan), dtype="float64")
    if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
        return _canonical_numeric(pd.to_numeric(s))
    if kind == "boolean":
        return _canonical_bool(s)
    if kind in ("datetime", "datetime64", "date"):
        return _canonical_datetime(pd.to_datetime(s, utc=True))
    raise SnapshotError(
        f"column {name!r} holds values of mixed or unsupported types ({kind}); "
        "make it one type (e.g. all strings) before snapshotting"
    )


def _canonical_string(s: pd.Series) -> pd.Series:
    if s.dtype == _STR:  # already pandas' default string dtype: no object per value
        return s
    values = s.astype(object).where(s.notna(), None)
    return pd.Series(values.to_numpy(), dtype="str")


def _canonical_bool(s: pd.Series) -> pd.Series:
    missing = s.isna().to_numpy()
    if missing.any():
        return pd.Series(s.astype(object).where(~missing, None).to_numpy(), dtype="boolean")
    return pd.Series(s.astype(bool).to_numpy(), dtype="bool")


def _canonical_numeric(s: pd.Series) -> pd.Series:
    dtype = s.dtype
    missing = s.isna().to_numpy()
    if pd.api.types.is_integer_dtype(dtype) and not missing.any():
        values = s.to_numpy()
        if values.dtype == np.uint64 and len(values) and values.max() > np.iinfo(np.int64).max:
            return pd.Series(values.astype(np.float64), dtype="float64")
        if values.dtype == np.int64:
            return s if dtype == np.int64 else pd.Series(values, dtype="int64")
        return pd.Series(values.astype(np.int64), dtype="int64")
    numpy_dtype = getattr(dtype, "numpy_dtype", dtype)
    if numpy_dtype in (np.float16, np.float32):
        # Widen through the shortest decimal form: float32(0.1) -> 0.1, not 0.100000001.
        narrow = s.to_numpy(dtype=numpy_dtype, na_value=np.nan)
        values = narrow.astype(str).astype(np.float64)
    elif dtype == np.float64:
        values = s.to_numpy()  # NaN is already its missing value: no copy
    else:
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    unchanged = dtype == np.float64
    if (np.signbit(values) & (values == 0)).any():
        values = values + 0.0  # -0.0 -> 0.0 (a copy only when there is one)
        unchanged = False
    missing = np.isnan(values)
    if not missing.any() and len(values) and _all_whole(values):
        return pd.Series(values.astype(np.int64), dtype="int64")
    return s if unchanged else pd.Series(values, dtype="float64")


def _all_whole(values: np.ndarray) -> bool:
    """Finite whole numbers within int64 (NaN is never passed in)."""
    head = values[:_WHOLE_PROBE]
    if not (head == np.floor(head)).all():  # a measured feature answers here, in a few µs
        return False
    return bool((np.abs(values) < _INT64_LIMIT).all() and (values == np.floor(values)).all())


def _canonical_datetime(s: pd.Series) -> pd.Series:
    out = pd.to_datetime(s, utc=True)
    return out.dt.as_unit("ns").reset_index(drop=True)


# --------------------------------------------------------------------------- digest


def dataset_digest(df: pd.DataFrame) -> str:
    """sha256 hex digest of the table's canonical form (see module docstring).

    Streams column by column: at most one canonical column exists at a time."""
    h = _digest_start(len(df), df.shape[1])
    for name, column in _canonical_columns(df):
        _hash_named_column(h, name, column)
    return h.hexdigest()


def _digest_canonical(frame: pd.DataFrame) -> str:
    h = _digest_start(len(frame), frame.shape[1])
    for name in frame.columns:
        _hash_named_column(h, name, frame[name])
    return h.hexdigest()


def _digest_start(rows: int, columns: int) -> Any:
    h = hashlib.sha256(_HEADER)
    h.update(struct.pack("<qq", rows, columns))
    return h


def _hash_named_column(h: Any, name: str, column: pd.Series) -> None:
    _update(h, name.encode("utf-8"))
    _hash_column(h, column)


def _update(h: Any, chunk: bytes | memoryview) -> None:
    # Every piece is length-prefixed so no two layouts feed the same bytes.
    h.update(struct.pack("<q", len(chunk)))
    h.update(chunk)


def _buffer(values: np.ndarray, dtype: str) -> memoryview:
    """The array's bytes in `dtype`, without a copy when it already is (hashlib reads the
    buffer directly, and releases the GIL while it hashes a large one)."""
    return memoryview(np.ascontiguousarray(values, dtype=dtype)).cast("B")


def _hash_column(h: Any, s: pd.Series) -> None:
    dtype = s.dtype
    missing = s.isna().to_numpy()
    if dtype == np.int64:
        _update(h, b"int64")
        _update(h, _buffer(s.to_numpy(), "<i8"))
    elif dtype == np.float64:
        values = s.to_numpy()
        _update(h, b"float64")
        _update(h, np.packbits(missing).tobytes())
        _update(h, _buffer(np.where(missing, 0.0, values) if missing.any() else values, "<f8"))
    elif dtype == np.bool_ or isinstance(dtype, pd.BooleanDtype):
        values = s.astype(object).where(~missing, False).to_numpy().astype(bool)
        _update(h, b"bool")
        _update(h, np.packbits(missing).tobytes())
        _update(h, values.astype(np.uint8).tobytes())
    elif isinstance(dtype, pd.DatetimeTZDtype):
        ns = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view("<i8")
        _update(h, b"datetime64[ns,UTC]")
        _update(h, np.packbits(missing).tobytes())
        _update(h, _buffer(np.where(missing, 0, ns) if missing.any() else ns, "<i8"))
    elif pd.api.types.is_string_dtype(dtype):
        _update(h, b"string")
        _update(h, np.packbits(missing).tobytes())
        lengths, data = _string_buffers(s)
        _update(h, _buffer(lengths, "<i8"))
        _update(h, data)
    else:  # canonicalize() produces only the dtypes above
        raise SnapshotError(f"column {s.name!r}: unexpected canonical dtype {dtype}")


def _string_buffers(s: pd.Series) -> tuple[np.ndarray, bytes | memoryview]:
    """Byte length of each value (0 when missing) and the concatenated UTF-8 bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(s) == 0:
        return np.zeros(0, dtype=np.int64), b""
    if s.dtype == _STR:  # Arrow-backed already: its UTF-8 buffers, no object per value
        arr = pa.array(s.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arr = arr.cast(pa.large_string())
    else:
        arr = pa.array(s.astype(object).to_numpy(), type=pa.large_string(), from_pandas=True)
    arr = pc.fill_null(arr, "")
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i8")[arr.offset : arr.offset + len(arr) + 1]
    data_buffer = arr.buffers()[2]
    data = b"" if data_buffer is None else memoryview(data_buffer)[offsets[0] : offsets[-1]]
    return np.diff(offsets), data


# --------------------------------------------------------------------------- store


def snapshot_dir(store: str, digest: str) -> str:
    """Folder of one snapshot in a store (any fsspec path)."""
    _check_digest(digest)
    return f"{store.rstrip('/')}/{digest[:2]}/{digest}"


def snapshot_dataset(
    df: pd.DataFrame,
    store: str,
    sources: Sequence[str] = (),
    time_column: str | None = None,
) -> SnapshotInfo:
    """Store the table once under its digest; return where it is and what it holds.

    If a complete snapshot with the same digest exists, nothing is written and the
    stored metadata is returned with created=False (its `sources` are those recorded by
    the first writer). `time_column` (optional) gives the time range in meta.json.
    """
    return commit_snapshot(stage_snapshot(df, store, sources, time_column))


@dataclass(frozen=True)
class StagedSnapshot:
    """A snapshot whose data is written under a temporary name: nothing in the store shows
    it until `commit_snapshot`; `discard_snapshot` removes it. `staged` is None when the
    store already held the digest at staging time (then there is nothing to commit)."""

    info: SnapshotInfo
    folder: str
    meta: dict[str, Any] | None = None
    staged: str | None = None


def stage_snapshot(
    df: pd.DataFrame,
    store: str,
    sources: Sequence[str] = (),
    time_column: str | None = None,
) -> StagedSnapshot:
    """Hash the table and, unless the store holds its digest already, write its canonical
    form under a temporary name in the snapshot's folder (same arguments as
    `snapshot_dataset`). Lets a caller check the data while it is being written and publish
    it only if the check passes."""
    import pyarrow as pa

    # One canonical column at a time: hashed, then kept as an Arrow array for the Parquet
    # file. Columns already canonical (int64, float64, str: most of a training window) are
    # not copied, so the store costs little more memory than the window itself.
    h = _digest_start(len(df), df.shape[1])
    names: list[str] = []
    arrays: list[Any] = []
    dtypes: dict[str, str] = {}
    empty: dict[str, pd.Series] = {}
    time_range: tuple[str | None, str | None] = (None, None)
    for name, column in _canonical_columns(df):
        _hash_named_column(h, name, column)
        if name == time_column:
            time_range = _time_range(pd.DataFrame({name: column}), time_column)
        names.append(name)
        arrays.append(pa.Array.from_pandas(column))
        dtypes[name] = str(column.dtype)
        empty[name] = column.iloc[:0]
    if time_column is not None and time_column not in dtypes:
        raise SnapshotError(
            f"time column {time_column!r} is not in the table; columns are {names}"
        )
    digest = h.hexdigest()
    folder = snapshot_dir(store, digest)
    existing = io.read_json(f"{folder}/meta.json", default=None)
    if existing is not None:
        return StagedSnapshot(_info_from_meta(existing, f"{folder}/data.parquet", created=False), folder)
    meta = {
        "format": FORMAT_VERSION,
        "digest": digest,
        "rows": len(df),
        "columns": names,
        "dtypes": dtypes,
        "time_column": time_column,
        "time_min": time_range[0],
        "time_max": time_range[1],
        "sources": [str(s) for s in sources],
        "created_at": datetime.now(UTC).isoformat(),
    }
    # The schema (and pandas metadata) `DataFrame.to_parquet` would write for the canonical
    # frame, so the file reads back with the canonical dtypes.
    schema = pa.Schema.from_pandas(pd.DataFrame(empty), preserve_index=False)
    table = pa.Table.from_arrays(
        [a if a.type == f.type else a.cast(f.type) for a, f in zip(arrays, schema, strict=True)],
        schema=schema,
    )
    del arrays
    _remove_stale_staging(folder)
    staged = _stage_parquet(table, f"{folder}/data.parquet")
    del table  # the canonical copy (its string columns) and the writer's buffers: give them back
    io.release_unused_memory()
    return StagedSnapshot(_info_from_meta(meta, f"{folder}/data.parquet", created=True), folder, meta, staged)


def commit_snapshot(staged: StagedSnapshot) -> SnapshotInfo:
    """Publish a staged snapshot: data renamed into place, then meta.json (a snapshot only
    exists once meta.json does, and each file arrives whole, so a killed commit leaves
    nothing that looks complete). If another writer committed the same digest meanwhile,
    its snapshot stands and the staged copy is dropped."""
    if staged.staged is None or staged.meta is None:
        return staged.info
    meta_path = f"{staged.folder}/meta.json"
    existing = io.read_json(meta_path, default=None)
    if existing is not None:
        discard_snapshot(staged)
        return _info_from_meta(existing, staged.info.uri, created=False)
    fs, data_path = io._fs(staged.info.uri)
    fs.makedirs(io._fs(staged.folder)[1], exist_ok=True)  # a streamed snapshot is staged elsewhere
    fs.mv(staged.staged, data_path)
    io.write_json(staged.meta, meta_path)
    return staged.info


def discard_snapshot(staged: StagedSnapshot) -> None:
    """Remove a staged snapshot's data (nothing else was written); safe to call twice."""
    if staged.staged is None:
        return
    fs, _ = io._fs(staged.info.uri)
    if fs.exists(staged.staged):
        fs.rm(staged.staged)


# A staged copy older than this was left by a writer that died between staging and commit
# (a live writer commits or discards within the time its check takes).
STALE_STAGING_SECONDS = 3600.0


def _remove_stale_staging(
    folder: str, older_than: float = STALE_STAGING_SECONDS, pattern: str = ".data.parquet.*.tmp"
) -> list[str]:
    """Delete staged data files in a snapshot's folder (or the store's staging folder) that
    a dead writer left behind; the next writer finds them. Returns what it removed."""
    fs, p = io._fs(folder)
    removed = []
    try:
        candidates = fs.glob(f"{p}/{pattern}")
    except (FileNotFoundError, NotImplementedError):
        return removed
    now = datetime.now(UTC).timestamp()
    for path in candidates:
        try:
            modified = fs.modified(path)
        except (FileNotFoundError, NotImplementedError):
            continue
        stamp = (modified if modified.tzinfo else modified.replace(tzinfo=UTC)).timestamp()
        if now - stamp > older_than:
            fs.rm(path)
            removed.append(path)
    return removed


def _stage_parquet(table: Any, path: str) -> str:
    """Write an Arrow table as Parquet under a temporary name beside `path` (in the
    filesystem's own path form), for a rename into place, as `io.write_table` does."""
    import uuid
    from pathlib import PurePosixPath

    import pyarrow.parquet as pq

    fs, p = io._fs(path)
    parent = str(PurePosixPath(p).parent)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{PurePosixPath(p).name}.{uuid.uuid4().hex}.tmp"
    try:
        # A local path goes to Arrow's own file: a Python file object takes the GIL for each
        # of its ~2,300 writes per million rows, and waits for it while the validation runs
        # beside.
        sink = contextlib.nullcontext(tmp) if io.is_local(fs) else fs.open(tmp, "wb")
        with sink as target:
            pq.write_table(table, target, use_dictionary=_dictionary_columns(table.schema))
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    return tmp


def _dictionary_columns(schema: Any) -> list[str]:
    """Columns worth dictionary-encoding: all but numbers and times. Arrow tries a dictionary
    for every column by default and gives up on high-cardinality ones only after building
    one: for a window of float features that is half the write time (0.9 s -> 0.45 s per
    million rows x 20 features), for files ~2 % larger."""
    import pyarrow as pa

    plain = (pa.types.is_floating, pa.types.is_integer, pa.types.is_temporal, pa.types.is_decimal)
    return [f.name for f in schema if not any(is_type(f.type) for is_type in plain)]


def load_snapshot(store: str, digest: str) -> pd.DataFrame:
    """Read a snapshot and check it still hashes to `digest`.

    Raises SnapshotNotFoundError when no complete snapshot exists, and
    SnapshotIntegrityError when the stored data no longer matches its digest.
    """
    folder = snapshot_dir(store, digest)
    if not io.exists(f"{folder}/meta.json"):
        raise SnapshotNotFoundError(
            f"no snapshot {digest} in {store} (missing {folder}/meta.json); "
            "check the store path and the digest tagged on the model version"
        )
    data_path = f"{folder}/data.parquet"
    try:
        frame = canonicalize(io.read_table(data_path))
    except io.DataReadError as exc:
        raise SnapshotIntegrityError(f"snapshot {digest} is damaged: {exc}") from exc
    actual = _digest_canonical(frame)
    if actual != digest:
        raise SnapshotIntegrityError(
            f"snapshot {data_path} no longer matches its digest: expected {digest}, "
            f"content hashes to {actual}; the file was modified after it was stored — "
            "restore it or retrain from a fresh snapshot"
        )
    return frame


def _check_digest(digest: str) -> None:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise SnapshotError(f"not a snapshot digest (64 lowercase hex characters): {digest!r}")


def _time_range(frame: pd.DataFrame, time_column: str | None) -> tuple[str | None, str | None]:
    if time_column is None:
        return None, None
    if time_column not in frame.columns:
        raise SnapshotError(
            f"time column {time_column!r} is not in the table; columns are {list(frame.columns)}"
        )
    try:
        times = pd.to_datetime(frame[time_column], utc=True).dropna()
    except (ValueError, TypeError) as exc:
        raise SnapshotError(f"time column {time_column!r} does not hold datetimes ({exc})") from exc
    if times.empty:
        return None, None
    return times.min().isoformat(), times.max().isoformat()


def _info_from_meta(meta: dict[str, Any], uri: str, created: bool) -> SnapshotInfo:
    return SnapshotInfo(
        digest=meta["digest"],
        uri=uri,
        rows=int(meta["rows"]),
        columns=list(meta["columns"]),
        time_min=meta.get("time_min"),
        time_max=meta.get("time_max"),
        sources=list(meta.get("sources", [])),
        created=created,
    )


# --------------------------------------------------------------------------- streaming
#
# A window too large for memory is snapshotted from its rows in chunks (in order): each
# chunk is canonicalized on its own and written as a row group, and the digest is then read
# back column by column, so it is the digest of the canonical form of all the rows
# together (`dataset_digest` of their concatenation) with only one row group in memory.
#
# A chunk's canonical type of a column can differ from the whole column's: a numeric column
# whose values in one chunk are whole numbers (int64 there) has fractions in another
# (float64 for the whole column); a chunk where a column is all missing takes the type of
# the others. `_reconcile` gives the whole column's type; when it changes after rows were
# written, the rows written so far are cast to it (rare: written in parts, joined at the end).

CHUNK_ROWS = 262_144
"""Rows per chunk where a snapshot is written or read in chunks (one Parquet row group)."""
STAGING_DIR = ".staging"
_EMPTY = "empty"  # a column all missing in a chunk: it takes the type of the other chunks
_KINDS = ("int64", "float64", "bool", "boolean", "datetime64[ns, UTC]", "str")


def stage_snapshot_chunks(
    chunks: Iterable[pd.DataFrame],
    store: str,
    sources: Sequence[str] = (),
    time_column: str | None = None,
) -> StagedSnapshot:
    """`stage_snapshot` of the table whose rows `chunks` yields in order (every chunk with
    the same columns; at least one, possibly empty): the same digest and stored content as
    `stage_snapshot(pd.concat(chunks))`, with one chunk in memory at a time. The data is
    staged under `<store>/.staging/` and moved into its digest's folder by `commit_snapshot`."""
    import uuid

    staging = f"{store.rstrip('/')}/{STAGING_DIR}"
    fs, root = io._fs(staging)
    fs.makedirs(root, exist_ok=True)
    _remove_stale_staging(staging, pattern="*.parquet.tmp")
    writer = _PartWriter(f"{root}/{uuid.uuid4().hex}", fs)
    try:
        for chunk in chunks:
            writer.write(canonicalize(chunk), time_column)
        if writer.names is None:
            raise SnapshotError("no rows and no columns to snapshot: pass at least one (empty) chunk")
        if time_column is not None and time_column not in writer.names:
            raise SnapshotError(f"time column {time_column!r} is not in the table; columns are {writer.names}")
        path = writer.finish()
        digest = file_digest(path, fs)
    except BaseException:
        writer.remove()
        raise
    folder = snapshot_dir(store, digest)
    existing = io.read_json(f"{folder}/meta.json", default=None)
    if existing is not None:
        fs.rm(path)
        return StagedSnapshot(_info_from_meta(existing, f"{folder}/data.parquet", created=False), folder)
    meta = {
        "format": FORMAT_VERSION,
        "digest": digest,
        "rows": writer.rows,
        "columns": writer.names,
        "dtypes": {n: _pandas_dtype(k) for n, k in writer.kinds.items()},
        "time_column": time_column,
        "time_min": None if writer.time_min is None else writer.time_min.isoformat(),
        "time_max": None if writer.time_max is None else writer.time_max.isoformat(),
        "sources": [str(s) for s in sources],
        "created_at": datetime.now(UTC).isoformat(),
    }
    io.release_unused_memory()
    info = _info_from_meta(meta, f"{folder}/data.parquet", created=True)
    return StagedSnapshot(info, folder, meta, path)


def read_snapshot_rows(
    uri: str,
    columns: Sequence[str],
    needed: np.ndarray | None = None,
    dictionary: Sequence[str] = (),
) -> Iterator[tuple[int, pd.DataFrame]]:
    """The rows of a stored (or staged) snapshot's data file in order, one row group at a
    time, as (position of its first row, canonical frame of `columns`). With `needed` (a
    boolean per row) a row group none of whose rows is needed is not read. `dictionary`
    columns (text) come as pandas Categoricals of their values, read as Parquet stores them
    (no string per row)."""
    import pyarrow.parquet as pq

    fs, p = io._fs(uri)
    with fs.open(p, "rb") as fh:
        pf = pq.ParquetFile(fh, read_dictionary=list(dictionary) or None)
        start = 0
        for g in range(pf.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if needed is None or needed[start : start + rows].any():
                yield start, pf.read_row_group(g, columns=list(columns)).to_pandas(split_blocks=True)
            start += rows


def file_digest(path: str, fs: Any = None) -> str:
    """The digest of a Parquet file holding a canonical table (as `stage_snapshot_chunks`
    writes it), read one column and row group at a time: `dataset_digest` of its table."""
    import pyarrow.parquet as pq

    if fs is None:
        fs, path = io._fs(path)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        meta = pf.metadata
        names = list(pf.schema_arrow.names)
        h = _digest_start(meta.num_rows, len(names))
        for j, name in enumerate(names):
            _update(h, name.encode("utf-8"))
            _hash_file_column(h, pf, j, meta.num_rows)
    return h.hexdigest()


class _PartWriter:
    """Canonical chunks written as row groups of one Parquet file, or of several parts when
    a column's type changes along the way (joined, cast to the final types, by `finish`)."""

    def __init__(self, base: str, fs: Any) -> None:
        self.base, self.fs = base, fs
        self.parts: list[str] = []
        self.names: list[str] | None = None
        self.kinds: dict[str, str] = {}
        self.rows = 0
        self.time_min: pd.Timestamp | None = None
        self.time_max: pd.Timestamp | None = None
        self._writer: Any = None
        self._schema: Any = None
        self._joined: list[str] = []

    def write(self, canon: pd.DataFrame, time_column: str | None) -> None:
        import pyarrow as pa

        names = list(canon.columns)
        if self.names is None:
            self.names = names
        elif names != self.names:
            raise SnapshotError(f"a chunk has columns {names}, the first chunk {self.names}: every chunk needs the same")
        kinds = {n: _reconcile(n, self.kinds.get(n), _chunk_kind(canon[n])) for n in names}
        if self._writer is None or kinds != self.kinds:
            self._open(kinds)
        self.kinds = kinds
        arrays = [_cast(pa.Array.from_pandas(canon[n]), f.type) for n, f in zip(names, self._schema, strict=True)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema), row_group_size=max(len(canon), 1))
        self.rows += len(canon)
        if time_column is not None and time_column in canon.columns:
            times = canon[time_column]
            if str(times.dtype) == "datetime64[ns, UTC]" and times.notna().any():
                lo, hi = times.min(), times.max()
                self.time_min = lo if self.time_min is None else min(self.time_min, lo)
                self.time_max = hi if self.time_max is None else max(self.time_max, hi)

    def _open(self, kinds: dict[str, str], name: str | None = None) -> None:
        import pyarrow.parquet as pq

        self._close()
        self._schema = _schema_of(kinds)
        path = f"{self.base}.{name or len(self.parts)}.parquet.tmp"
        self.parts.append(path)
        sink = path if io.is_local(self.fs) else self.fs.open(path, "wb")
        self._writer = pq.ParquetWriter(sink, self._schema, use_dictionary=_dictionary_columns(self._schema))
        self._sink = sink

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if not isinstance(self._sink, str):
                self._sink.close()
            self._writer = None

    def finish(self) -> str:
        """The path of the one file holding every row, in the final types."""
        self._close()
        if len(self.parts) == 1:
            return self.parts[0]
        import pyarrow as pa
        import pyarrow.parquet as pq

        written, self.parts = self.parts, []
        self._joined = written
        self._open(self.kinds, "joined")
        for part in written:
            with self.fs.open(part, "rb") as fh:
                pf = pq.ParquetFile(fh)
                for g in range(pf.num_row_groups):
                    table = pf.read_row_group(g)
                    arrays = [_cast(table.column(i).combine_chunks(), f.type) for i, f in enumerate(self._schema)]
                    self._writer.write_table(
                        pa.Table.from_arrays(arrays, schema=self._schema), row_group_size=max(table.num_rows, 1)
                    )
        self._close()
        for part in written:
            self.fs.rm(part)
        self._joined = []
        return self.parts[0]

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        for part in [*self.parts, *self._joined]:
            if self.fs.exists(part):
                self.fs.rm(part)


def _chunk_kind(column: pd.Series) -> str:
    """The canonical type of a chunk's column; `_EMPTY` when every value is missing."""
    kind = str(column.dtype)
    if kind == "float64" and not column.notna().any():
        return _EMPTY
    if kind not in _KINDS:  # canonicalize() makes only these
        raise SnapshotError(f"column {column.name!r}: unexpected canonical dtype {kind}")
    return kind


def _reconcile(name: str, whole: str | None, chunk: str) -> str:
    """The canonical type of a column so far (`whole`) and one more chunk of it, as
    `canonicalize` types the concatenation: whole numbers with fractions are float64, bools
    with missing values nullable, and a chunk where it is all missing adopts the other type
    (numbers then have missing values: float64)."""
    if whole is None or whole == chunk:
        return chunk
    pair = {whole, chunk}
    if _EMPTY in pair:
        other = (pair - {_EMPTY}).pop()
        return {"int64": "float64", "bool": "boolean"}.get(other, other)
    if pair == {"int64", "float64"}:
        return "float64"
    if pair == {"bool", "boolean"}:
        return "boolean"
    raise SnapshotError(
        f"column {name!r} holds values of mixed or unsupported types ({whole} in some rows, {chunk} in "
        "others); make it one type (e.g. all strings) before snapshotting"
    )


def _pandas_dtype(kind: str) -> str:
    return "float64" if kind == _EMPTY else kind


def _schema_of(kinds: dict[str, str]) -> Any:
    """The Arrow schema (with pandas' metadata) of a canonical frame with these types."""
    import pyarrow as pa

    empty = {n: pd.Series([], dtype=_pandas_dtype(k)) for n, k in kinds.items()}
    return pa.Schema.from_pandas(pd.DataFrame(empty), preserve_index=False)


def _cast(array: Any, to: Any) -> Any:
    import pyarrow as pa

    if array.type == to:
        return array
    if array.null_count == len(array):
        return pa.nulls(len(array), to)
    return array.cast(to)


def _hash_file_column(h: Any, pf: Any, index: int, rows: int) -> None:
    """`_hash_column` of one column of a canonical Parquet file, fed row group by row group
    (a column with missing values, or text, is read more than once: every piece of the
    digest is length-prefixed, and a column's missing-value bits come before its values)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    field = pf.schema_arrow.field(index)
    kind = field.type

    def pieces() -> Iterator[Any]:
        for g in range(pf.num_row_groups):
            yield pf.read_row_group(g, columns=[field.name]).column(0).combine_chunks()

    if pa.types.is_integer(kind):
        _update(h, b"int64")
        h.update(struct.pack("<q", rows * 8))
        for arr in pieces():
            h.update(_buffer(arr.to_numpy(), "<i8"))
        return
    if pa.types.is_floating(kind):
        tag, fill, width = b"float64", 0.0, "<f8"
    elif pa.types.is_boolean(kind):
        tag, fill, width = b"bool", False, "u1"
    elif pa.types.is_timestamp(kind):
        tag, fill, width = b"datetime64[ns,UTC]", 0, "<i8"
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        tag, fill, width = b"string", None, None
    else:  # stage_snapshot_chunks writes only the types above
        raise SnapshotError(f"column {field.name!r}: unexpected type {kind} in a snapshot file")
    _update(h, tag)
    nulls = _null_counts(pf, index)
    text_bytes = 0
    h.update(struct.pack("<q", (rows + 7) // 8))
    if nulls == 0 and width is not None:
        h.update(bytes((rows + 7) // 8))
    else:
        bits = _Bits()
        for arr in pieces():
            h.update(bits.add(arr.is_null().to_numpy(zero_copy_only=False)))
            if width is None:
                text_bytes += int(pc.sum(pc.binary_length(arr)).as_py() or 0)
        h.update(bits.finish())
    if width is not None:
        h.update(struct.pack("<q", rows * np.dtype(width).itemsize))
        for arr in pieces():
            if pa.types.is_timestamp(kind):
                arr = arr.cast(pa.int64())
            values = pc.fill_null(arr, fill) if arr.null_count else arr
            h.update(_buffer(values.to_numpy(zero_copy_only=False), width))
        return
    h.update(struct.pack("<q", rows * 8))
    for arr in pieces():
        lengths = pc.fill_null(pc.binary_length(arr), 0).cast(pa.int64())
        h.update(_buffer(lengths.to_numpy(zero_copy_only=False), "<i8"))
    h.update(struct.pack("<q", text_bytes))
    for arr in pieces():
        h.update(_string_data(arr))


def _string_data(arr: Any) -> bytes | memoryview:
    """The concatenated UTF-8 bytes of a text array's values (missing ones are empty)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    if len(arr) == 0:
        return b""
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i8")[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    return b"" if data is None else memoryview(data)[offsets[0] : offsets[-1]]


def _null_counts(pf: Any, index: int) -> int | None:
    """Missing values of a column from the row groups' statistics (None: not recorded)."""
    total = 0
    for g in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(g).column(index).statistics
        if stats is None or not stats.has_null_count:
            return None
        total += stats.null_count
    return total


class _Bits:
    """`np.packbits` of a boolean array given in pieces: each `add` returns the whole bytes
    it completes, `finish` the last (zero-padded) one."""

    def __init__(self) -> None:
        self._rest = np.zeros(0, dtype=bool)

    def add(self, mask: np.ndarray) -> bytes:
        bits = np.concatenate([self._rest, np.asarray(mask, dtype=bool)])
        whole = len(bits) // 8 * 8
        self._rest = bits[whole:]
        return np.packbits(bits[:whole]).tobytes()

    def finish(self) -> bytes:
        return np.packbits(self._rest).tobytes() if len(self._rest) else b""
