"""Reading and writing tables on any fsspec path (local disk by default).

Small, explicit adapters: the core never opens files anywhere else.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pandas as pd


class DataReadError(ValueError):
    """A data file that cannot be read; the message names the file and why."""


def _fs(path: str) -> tuple[Any, str]:
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs, paths[0]


def read_table(path: str) -> pd.DataFrame:
    """Read a Parquet or CSV table; errors name the file and what is wrong with it."""
    fs, p = _fs(path)
    if not fs.exists(p):
        raise DataReadError(f"{path}: file not found")
    suffix = PurePosixPath(p).suffix.lower()
    try:
        with fs.open(p, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataReadError(f"{path}: cannot open ({exc})") from exc
    if not raw:
        raise DataReadError(f"{path}: file is empty (0 bytes)")
    try:
        if suffix == ".csv":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataReadError(f"{path}: not valid UTF-8 text at byte {exc.start}") from exc
            return pd.read_csv(io.StringIO(text))
        return pd.read_parquet(io.BytesIO(raw))
    except DataReadError:
        raise
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise DataReadError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {exc})") from exc


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
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    return [
        BatchFile(path=prefix + n, day=PurePosixPath(n).stem, index=i) for i, n in enumerate(names)
    ]


def read_labels(directory: str, up_to_day: str | None = None) -> pd.DataFrame | None:
    """All label files delivered on or before `up_to_day` (inclusive), concatenated.

    Label files are named by the day they are delivered; None when none has arrived.
    """
    files = [b for b in list_batches(directory) if up_to_day is None or b.day <= up_to_day]
    if not files:
        return None
    frames = [read_table(b.path) for b in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)
