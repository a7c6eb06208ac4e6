"""The snapshot store works one canonical column at a time and copies only what changes;
the digest and the stored file are those of the canonical frame (see test_snapshot.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evergreen.engines.snapshot import (
    _canonical_columns,
    _digest_canonical,
    canonicalize,
    dataset_digest,
    snapshot_dataset,
)


def _mixed(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "i64": rng.integers(-5, 5, n),
            "i8": rng.integers(-5, 5, n).astype("int8"),
            "f64": rng.normal(size=n),
            "whole": rng.integers(0, 9, n).astype(float),
            "nan": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "f32": rng.normal(size=n).astype(np.float32),
            "nullable": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(0, 9, n)), dtype="Int64"),
            "str": pd.array(rng.choice(["a", "bé", "", "ccc"], n), dtype="str"),
            "str_na": pd.array(np.where(rng.random(n) < 0.3, None, rng.choice(["x", "yy"], n)), dtype="str"),
            "all_na": pd.array([None] * n, dtype="str"),
            "object": np.array(rng.choice(["a", "b"], n), dtype=object),
            "category": pd.Categorical(rng.choice(["p", "q"], n)),
            "python_str": pd.array(rng.choice(["m", None], n), dtype="string[python]"),
            "bool": rng.random(n) < 0.5,
            "bool_na": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5), dtype="boolean"),
            "ts": pd.date_range("2024-01-01", periods=n, freq="min"),
            "ts_paris": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
        }
    ).set_axis(np.arange(n) * 3 + 1)


def test_streamed_digest_is_the_digest_of_the_canonical_frame() -> None:
    df = _mixed()
    assert dataset_digest(df) == _digest_canonical(canonicalize(df))


def test_negative_zero_is_zero() -> None:
    a = pd.DataFrame({"x": [-0.0, 1.5]})
    b = pd.DataFrame({"x": [0.0, 1.5]})
    assert dataset_digest(a) == dataset_digest(b)
    assert not np.signbit(canonicalize(a)["x"].iloc[0])


def test_canonical_columns_share_memory_with_the_input() -> None:
    df = _mixed().reset_index(drop=True)
    columns = dict(_canonical_columns(df))
    for name in ("i64", "f64", "nan"):
        assert np.shares_memory(columns[name].to_numpy(), df[name].to_numpy()), name
    # Text already in pandas' "str" dtype keeps its Arrow buffers.
    import pyarrow as pa

    def data_address(s: pd.Series) -> int:
        arr = pa.array(s.array)
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        return arr.buffers()[2].address

    assert data_address(columns["str"]) == data_address(df["str"])
    # ...while the input itself is never modified.
    pd.testing.assert_frame_equal(df, _mixed().reset_index(drop=True))


def test_stored_file_reads_back_as_the_canonical_frame(tmp_path: Path) -> None:
    df = _mixed()
    info = snapshot_dataset(df, str(tmp_path), ["b"], "ts")
    assert info.digest == dataset_digest(df)
    pd.testing.assert_frame_equal(pd.read_parquet(info.uri), canonicalize(df))
