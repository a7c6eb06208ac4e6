"""Reading tables: errors that name the file, the check and (where there is one) the column."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from evergreen.adapters.io import (
    READABLE_EXPECTATION,
    ROW_COUNT_EXPECTATION,
    DataReadError,
    TableTooLargeError,
    read_table,
    table_columns,
    write_table,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": range(50),
            "timestamp": pd.date_range("2024-01-01", periods=50, freq="h"),
            "band": ["a", "b"] * 25,
            "x": [float(i) for i in range(50)],
        }
    )


def test_good_csv_reads_with_its_timestamps_parsed(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    frame.to_csv(path, index=False)
    back = read_table(str(path), datetime_columns=["timestamp"])
    assert pd.api.types.is_datetime64_any_dtype(back["timestamp"])
    assert back["timestamp"].tolist() == frame["timestamp"].tolist()
    assert table_columns(str(path)) == list(frame.columns)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_csv_with_another_delimiter_is_named(frame: pd.DataFrame, tmp_path: Path, sep: str) -> None:
    path = tmp_path / "b.csv"
    frame.to_csv(path, index=False, sep=sep)
    with pytest.raises(DataReadError, match="-delimited; Evergreen reads comma-separated") as err:
        read_table(str(path))
    assert str(path) in str(err.value) and err.value.expectation == READABLE_EXPECTATION


def test_non_utf8_csv_names_line_and_column(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    frame.assign(band=["a", "é"] * 25).to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(DataReadError) as err:
        read_table(str(path))
    assert "line 3, column 'band'" in str(err.value)
    assert err.value.column == "band" and err.value.expectation == READABLE_EXPECTATION


def test_row_limit_is_checked_before_reading(frame: pd.DataFrame, tmp_path: Path) -> None:
    parquet, csv = str(tmp_path / "b.parquet"), tmp_path / "b.csv"
    write_table(frame, parquet)
    frame.to_csv(csv, index=False)
    with pytest.raises(TableTooLargeError, match="50 rows; at most 10 allowed") as err:
        read_table(parquet, max_rows=10)
    assert err.value.expectation == ROW_COUNT_EXPECTATION and err.value.observed == 50
    with pytest.raises(TableTooLargeError, match="more than 10 rows"):
        read_table(str(csv), max_rows=10)
    assert len(read_table(parquet, max_rows=50)) == 50


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda raw: b"", "file is empty (0 bytes)"),
        (lambda raw: raw[: len(raw) // 2], "not a readable Parquet file"),
        (lambda raw: b"not parquet at all", "not a readable Parquet file"),
    ],
)
def test_damaged_parquet_is_named(frame: pd.DataFrame, tmp_path: Path, damage, needle: str) -> None:  # noqa: ANN001
    path = tmp_path / "b.parquet"
    write_table(frame, str(path))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataReadError, match=re.escape(needle)) as err:
        read_table(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


class _CountingFile:
    """A file object that counts the bytes read through it."""

    def __init__(self, inner, counter: list[int]) -> None:  # noqa: ANN001
        self._inner, self._counter = inner, counter

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._counter[0] += len(data)
        return data

    def __getattr__(self, name: str):  # noqa: ANN204 - seek, tell, close, ...
        return getattr(self._inner, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


def test_parquet_columns_are_read_without_the_rest_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The monitor and the retrain read one or two columns of batches of millions of rows:
    # only their column chunks (and the footer) may be read, never the whole file.
    import fsspec
    import numpy as np

    from evergreen.adapters import io as io_module

    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.normal(size=(50_000, 8)), columns=[f"x{i}" for i in range(8)])
    wide.insert(0, "id", np.arange(len(wide)))
    path = tmp_path / "wide.parquet"
    write_table(wide, str(path))
    local = fsspec.filesystem("file")
    counter = [0]

    class Counting(type(local)):  # type: ignore[misc]
        def open(self, p, mode="rb", **kwargs):  # noqa: ANN001, ANN202
            return _CountingFile(local.open(p, mode, **kwargs), counter)

    monkeypatch.setattr(io_module, "_fs", lambda p: (Counting(), p))
    ids = read_table(str(path), columns=["id"])
    assert ids["id"].tolist() == wide["id"].tolist()
    assert counter[0] < path.stat().st_size / 4, (counter[0], path.stat().st_size)
    counter[0] = 0
    pd.testing.assert_frame_equal(read_table(str(path), max_rows=50_000), wide)
    assert counter[0] >= path.stat().st_size * 0.9
