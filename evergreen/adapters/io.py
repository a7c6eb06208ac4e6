"""Reading and writing tables on any fsspec path (local disk by default).

Small, explicit adapters: the core never opens files anywhere else.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

READABLE_EXPECTATION = "expect_file_to_be_readable"
ROW_COUNT_EXPECTATION = "expect_table_row_count_to_be_between"
_OTHER_DELIMITERS = (";", "\t", "|")


class DataReadError(ValueError):
    """A data file that cannot be read; the message names the file and why.

    `expectation` and `column` say which check the file failed, in the same words the
    validation report uses (a file that cannot be read fails `expect_file_to_be_readable`).
    """

    def __init__(
        self,
        message: str,
        *,
        expectation: str = READABLE_EXPECTATION,
        column: str | None = None,
        observed: Any = None,
        expected: Any = None,
    ) -> None:
        super().__init__(message)
        self.expectation = expectation
        self.column = column
        self.observed = observed
        self.expected = expected


class TableTooLargeError(DataReadError):
    """A table with more rows than allowed, found before its data is read."""

    def __init__(self, path: str, rows: int | None, max_rows: int) -> None:
        counted = f"{rows:,} rows" if rows is not None else f"more than {max_rows:,} rows"
        super().__init__(
            f"{path}: {counted}; at most {max_rows:,} allowed (data.max_batch_rows) — split the "
            "batch upstream or raise the limit",
            expectation=ROW_COUNT_EXPECTATION,
            observed=rows,
            expected={"max_value": max_rows},
        )


def release_unused_memory() -> None:
    """Hand the memory Arrow's allocator keeps cached back to the operating system.

    Parquet reads, pandas' Arrow-backed string columns and Arrow tables allocate through
    Arrow's pool (mimalloc here), which keeps freed pages for reuse: after assembling a
    1M-row training window ~230 MB of it stayed resident, and whether it had been given back
    by the time training started decided a peak of ~1,070 or ~1,250 MB. Called after the
    steps that churn the most (window assembly, snapshot staging, validation); takes a few
    milliseconds.
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    _malloc_trim()


LARGE_BUFFER_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


@functools.cache
def map_large_buffers() -> bool:
    """Have glibc give every buffer of 1 MiB or more its own memory mapping (process-wide,
    set once; False where the C library is not glibc).

    By default glibc raises its mapping threshold to as much as 32 MB each time such a
    buffer is freed, after which the 1M-element arrays pandas and NumPy make by the hundred
    come from the heap (or a thread's heap), and the holes they leave behind stay resident.
    Measured on the 1M-row training window: validation beside snapshot staging left ~45 MB
    more resident than run one after the other, and the time-ordered hold-out ~70 MB; with
    a fixed 1 MiB threshold both left ~0, the training peak fell by ~40 MB and the run took
    no longer. Called where the retrain starts reading its window.
    """
    lib = _libc()
    return bool(lib is not None and lib.mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))


@functools.cache
def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # glibc has both; elsewhere (macOS, musl) there is nothing to tune or trim.
    return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


def _malloc_trim() -> None:
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)


def _fs(path: str) -> tuple[Any, str]:
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs, paths[0]


def _protocol(fs: Any) -> str:  # noqa: ANN401 - an fsspec filesystem
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def is_local(fs: Any) -> bool:  # noqa: ANN401 - an fsspec filesystem
    """Whether an fsspec filesystem is the local disk."""
    return _protocol(fs) in ("file", "local")


def read_table(
    path: str,
    *,
    max_rows: int | None = None,
    datetime_columns: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a Parquet or CSV table; errors name the file and what is wrong with it.

    `max_rows` refuses a larger table before its data is read (from the Parquet footer; a
    CSV is parsed no further than one row past the limit). CSV must be comma-separated
    UTF-8; `datetime_columns` of a CSV are parsed as ISO 8601 datetimes (Parquet keeps
    its types). `columns` reads only those columns (all must exist).
    """
    fs, p = _fs(path)
    if not fs.exists(p):
        raise DataReadError(f"{path}: file not found")
    suffix = PurePosixPath(p).suffix.lower()
    # A Parquet file is read through its handle: only the footer and the column chunks wanted
    # (reading the whole file first cost ~1.3 GB for the id column of a 10M-row batch); a
    # CSV is read whole.
    csv = suffix == ".csv"
    try:
        fh = fs.open(p, "rb")
    except OSError as exc:
        raise DataReadError(f"{path}: cannot open ({exc})") from exc
    try:
        with fh:
            try:
                raw = fh.read() if csv else None
                empty = not raw if csv else fs.size(p) == 0
            except OSError as exc:
                raise DataReadError(f"{path}: cannot open ({exc})") from exc
            if empty:
                raise DataReadError(f"{path}: file is empty (0 bytes)")
            if raw is not None:
                return _read_csv(path, raw, max_rows, datetime_columns, columns)
            return _read_parquet(path, fh, max_rows, columns)
    except DataReadError:
        raise
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
        kind = "CSV" if suffix == ".csv" else "Parquet"
        why = " ".join(str(exc).split())  # one line: pyarrow's messages end in newlines
        raise DataReadError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {why})") from exc


def _read_parquet(
    path: str, fh: Any, max_rows: int | None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    if max_rows is not None:
        import pyarrow.parquet as pq

        # The footer holds the row count: a huge batch is refused before it is decoded.
        rows = pq.ParquetFile(fh).metadata.num_rows
        if rows > max_rows:
            raise TableTooLargeError(path, rows, max_rows)
        fh.seek(0)
    return pd.read_parquet(fh, columns=None if columns is None else list(columns))


def _read_csv(
    path: str,
    raw: bytes,
    max_rows: int | None,
    datetime_columns: Sequence[str],
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, raw, exc) from exc
    header = text.split("\n", 1)[0]
    if "," not in header:
        found = [d for d in _OTHER_DELIMITERS if d in header]
        if found:
            shown = "tab" if found[0] == "\t" else repr(found[0])
            raise DataReadError(
                f"{path}: the header has no ',' but {header.count(found[0])} {shown}: the file is "
                f"{shown}-delimited; Evergreen reads comma-separated CSV — re-export it with ','",
                observed=found[0],
                expected=",",
            )
    nrows = None if max_rows is None else max_rows + 1
    usecols = None if columns is None else list(columns)
    frame = pd.read_csv(io.StringIO(text), nrows=nrows, usecols=usecols)
    if max_rows is not None and len(frame) > max_rows:
        raise TableTooLargeError(path, None, max_rows)
    for name in datetime_columns:
        if name in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame[name]):
            # Text that does not parse stays text: validation names the column and its type.
            with contextlib.suppress(ValueError, TypeError):
                frame[name] = pd.to_datetime(frame[name], format="ISO8601")
    return frame


def _not_utf8(path: str, raw: bytes, exc: UnicodeDecodeError) -> DataReadError:
    """Where the first byte that is not UTF-8 is: line, and column by the header's names."""
    at = exc.start
    line = raw.count(b"\n", 0, at) + 1
    line_start = raw.rfind(b"\n", 0, at) + 1
    names = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r").split(",")
    field = raw[line_start:at].count(b",")
    column = names[field] if field < len(names) else None
    where = f"line {line}" + (f", column {column!r}" if column else "")
    return DataReadError(
        f"{path}: not valid UTF-8 text at byte {at} ({where}: {raw[at:at + 4]!r}); Evergreen "
        "reads UTF-8 — re-export the file as UTF-8",
        column=column,
        observed=f"byte {at}",
        expected="utf-8",
    )


def table_columns(path: str) -> list[str]:
    """Column names of a Parquet (from its schema) or CSV (from its header) table."""
    fs, p = _fs(path)
    try:
        with fs.open(p, "rb") as fh:
            if PurePosixPath(p).suffix.lower() == ".csv":
                header = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n")
                return header.split(",") if header else []
            import pyarrow.parquet as pq

            return list(pq.read_schema(fh).names)
    except Exception as exc:
        raise DataReadError(f"{path}: cannot read its columns ({type(exc).__name__}: {exc})") from exc


def file_stamp(path: str) -> tuple[Any, Any]:
    """(size, modification time) of a file, to tell a file read before from a replaced one."""
    fs, p = _fs(path)
    try:
        info = fs.info(p)
    except (FileNotFoundError, OSError):
        return (None, None)
    return (info.get("size"), info.get("mtime") or info.get("created") or info.get("LastModified"))


def parquet_column_max(path: str, column: str) -> Any:
    """The largest value of `column` from a Parquet file's row-group statistics, without
    reading its data; None when the file is not Parquet or carries no such statistics."""
    if PurePosixPath(path).suffix.lower() != ".parquet":
        return None
    import pyarrow.parquet as pq

    fs, p = _fs(path)
    try:
        with fs.open(p, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
            index = meta.schema.to_arrow_schema().get_field_index(column)
            if index < 0:
                return None
            highs = []
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(index).statistics
                if stats is None or not stats.has_min_max:
                    return None
                highs.append(stats.max)
            return max(highs) if highs else None
    except Exception:  # noqa: BLE001 - no statistics: the caller reads the column instead
        return None


def write_table(df: pd.DataFrame, path: str) -> None:
    """Write a Parquet table atomically (write to a temporary name, then rename)."""
    fs, p = _fs(path)
    parent = str(PurePosixPath(p).parent)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{PurePosixPath(p).name}.{uuid.uuid4().hex}.tmp"
    with fs.open(tmp, "wb") as fh:
        df.to_parquet(fh, index=False)
    fs.mv(tmp, p)


def write_json(obj: Any, path: str) -> None:
    """Write JSON atomically."""
    fs, p = _fs(path)
    parent = str(PurePosixPath(p).parent)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{PurePosixPath(p).name}.{uuid.uuid4().hex}.tmp"
    with fs.open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
    fs.mv(tmp, p)


def read_json(path: str, default: Any = None) -> Any:
    fs, p = _fs(path)
    if not fs.exists(p):
        return default
    with fs.open(p, "r") as fh:
        return json.load(fh)


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return bool(fs.exists(p))


@dataclass(frozen=True)
class BatchFile:
    """One production batch file; `day` is its date stem (YYYY-MM-DD) and `index` its position."""

    path: str
    day: str
    index: int


def list_batches(directory: str) -> list[BatchFile]:
    """Batch files of a stream directory, in day order."""
    fs, p = _fs(directory)
    if not fs.exists(p):
        return []
    names = sorted(
        str(f) for f in fs.ls(p, detail=False) if str(f).endswith((".parquet", ".csv"))
    )
    prefix = "" if is_local(fs) else f"{_protocol(fs)}://"
    return [
        BatchFile(path=prefix + n, day=PurePosixPath(n).stem, index=i) for i, n in enumerate(names)
    ]


def read_labels(
    directory: str, up_to_day: str | None = None, read: Callable[[BatchFile], pd.DataFrame] | None = None
) -> pd.DataFrame | None:
    """All label files delivered on or before `up_to_day` (inclusive), concatenated.

    Label files are named by the day they are delivered; None when none has arrived.
    `read` reads one file (default: `read_table` of its path).
    """
    files = [b for b in list_batches(directory) if up_to_day is None or b.day <= up_to_day]
    if not files:
        return None
    frames = [read(b) if read is not None else read_table(b.path) for b in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


STREAM_ROWS = 262_144
"""Rows per piece where a table is read in pieces (`iter_table`)."""


def iter_table(
    path: str,
    *,
    columns: Sequence[str] | None = None,
    rows: int = STREAM_ROWS,
    datetime_columns: Sequence[str] = (),
    max_rows: int | None = None,
) -> Iterator[pd.DataFrame]:
    """A Parquet table's rows in order, `rows` at a time, typed as `read_table` types them
    (only `columns`, when given): the memory of one piece, however large the file. A CSV
    file is read whole (its types are inferred from all of its rows) and yielded in pieces.
    Errors name the file, as `read_table`'s do."""
    fs, p = _fs(path)
    if PurePosixPath(p).suffix.lower() == ".csv":
        frame = read_table(path, max_rows=max_rows, datetime_columns=datetime_columns, columns=columns)
        for start in range(0, max(len(frame), 1), rows):
            yield frame.iloc[start : start + rows]
        return
    if not fs.exists(p):
        raise DataReadError(f"{path}: file not found")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        fh = fs.open(p, "rb")
    except OSError as exc:
        raise DataReadError(f"{path}: cannot open ({exc})") from exc
    with fh:
        try:
            pf = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
            if max_rows is not None and pf.metadata.num_rows > max_rows:
                raise TableTooLargeError(path, pf.metadata.num_rows, max_rows)
            if columns is not None:
                missing = [c for c in columns if c not in pf.schema_arrow.names]
                if missing:
                    raise DataReadError(f"{path}: no column(s) {missing}; it has {pf.schema_arrow.names}")
            batches = pf.iter_batches(batch_size=rows, columns=None if columns is None else list(columns))
            empty = True
            for batch in batches:
                empty = False
                yield pa.Table.from_batches([batch]).to_pandas(split_blocks=True)
            if empty:  # no rows: the columns and their types still
                yield pf.schema_arrow.empty_table().select(list(columns) if columns is not None else pf.schema_arrow.names).to_pandas()
        except DataReadError:
            raise
        except Exception as exc:  # pyarrow raises many types for corrupt files
            why = " ".join(str(exc).split())
            raise DataReadError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {why})") from exc


def table_rows(path: str) -> int | None:
    """A Parquet file's row count from its footer (None for CSV or an unreadable file)."""
    if PurePosixPath(path).suffix.lower() != ".parquet":
        return None
    import pyarrow.parquet as pq

    fs, p = _fs(path)
    try:
        with fs.open(p, "rb") as fh:
            return int(pq.ParquetFile(fh).metadata.num_rows)
    except Exception:  # noqa: BLE001 - unknown: the caller reads the file
        return None
