"""The snapshot store works one canonical column at a time and copies only what changes;
the digest and the stored file are those of the canonical frame (see test_snapshot.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


# ----------------------------------------------------------------------------- from chunks


@pytest.mark.parametrize("size", [1, 7, 64, 199, 200, 1000])
def test_a_table_staged_from_chunks_has_the_digest_and_data_of_the_whole(tmp_path: Path, size: int) -> None:
    from evergreen.engines.snapshot import (
        commit_snapshot,
        load_snapshot,
        stage_snapshot,
        stage_snapshot_chunks,
    )

    df = _mixed().reset_index(drop=True)
    chunks = [df.iloc[i : i + size] for i in range(0, len(df), size)]
    staged = stage_snapshot_chunks(chunks, str(tmp_path / "a"), ["b1"], "ts")
    whole = stage_snapshot(df, str(tmp_path / "b"), ["b1"], "ts")
    assert staged.info.digest == whole.info.digest == dataset_digest(df)
    for key in ("rows", "columns", "dtypes", "time_min", "time_max", "sources"):
        assert staged.meta[key] == whole.meta[key], key
    info = commit_snapshot(staged)
    pd.testing.assert_frame_equal(load_snapshot(str(tmp_path / "a"), info.digest), canonicalize(df))
    assert not list((tmp_path / "a" / ".staging").iterdir())  # moved into its folder


def test_chunks_whose_types_differ_are_typed_as_their_concatenation(tmp_path: Path) -> None:
    """Whole numbers in one chunk and fractions in another are float64; a chunk where a
    column is all missing takes the other chunks' type; bools with a missing value are nullable."""
    from evergreen.engines.snapshot import stage_snapshot_chunks

    a = pd.DataFrame({"x": [1, 2, 3], "s": pd.array([None] * 3, dtype="str"), "b": [True, False, True], "e": [np.nan] * 3})
    b = pd.DataFrame(
        {
            "x": [1.5, np.nan, 3.0],
            "s": pd.array(["a", None, "c"], dtype="str"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "e": [np.nan] * 3,
        }
    )
    c = pd.DataFrame({"x": [7, 8, 9], "s": pd.array(["z", "y", "c"], dtype="str"), "b": [True] * 3, "e": [np.nan] * 3})
    staged = stage_snapshot_chunks([a, b, c], str(tmp_path))
    assert staged.info.digest == dataset_digest(pd.concat([a, b, c], ignore_index=True))
    assert staged.meta["dtypes"] == {"b": "boolean", "e": "float64", "s": "str", "x": "float64"}


def test_chunks_of_mixed_kinds_are_refused_naming_the_column(tmp_path: Path) -> None:
    from evergreen.engines.snapshot import SnapshotError, stage_snapshot_chunks

    a = pd.DataFrame({"v": pd.array(["a", "b"], dtype="str")})
    b = pd.DataFrame({"v": [1.5, 2.5]})
    with pytest.raises(SnapshotError, match="'v'"):
        stage_snapshot_chunks([a, b], str(tmp_path))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing left behind


@pytest.mark.parametrize("cuts", [(1,), (2, 3), (1, 2, 3, 4, 5)])
def test_the_golden_digest_streams_from_chunks(tmp_path: Path, cuts: tuple[int, ...]) -> None:
    from evergreen.engines.snapshot import stage_snapshot_chunks
    from tests.unit.test_snapshot import GOLDEN_DIGEST, golden_frame

    frame = golden_frame()
    bounds = [0, *cuts, len(frame)]
    chunks = [frame.iloc[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert stage_snapshot_chunks(chunks, str(tmp_path)).info.digest == GOLDEN_DIGEST


def test_snapshot_rows_are_read_a_row_group_at_a_time_skipping_unneeded_ones(tmp_path: Path) -> None:
    from evergreen.engines.snapshot import (
        commit_snapshot,
        read_snapshot_rows,
        stage_snapshot_chunks,
    )

    df = _mixed(1000).reset_index(drop=True)
    info = commit_snapshot(stage_snapshot_chunks([df.iloc[i : i + 300] for i in range(0, 1000, 300)], str(tmp_path)))
    needed = np.zeros(1000, dtype=bool)
    needed[[5, 950]] = True
    read = list(read_snapshot_rows(info.uri, ["f64", "str"], needed, dictionary=["str"]))
    assert [start for start, _ in read] == [0, 900]
    assert isinstance(read[0][1]["str"].dtype, pd.CategoricalDtype)
    assert read[1][1]["f64"].tolist() == df["f64"].iloc[900:].tolist()
