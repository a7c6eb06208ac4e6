"""Content-addressed snapshots: what counts as the same data, store-once, verified reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evergreen.adapters import io
from evergreen.engines.snapshot import (
    STALE_STAGING_SECONDS,
    SnapshotError,
    SnapshotIntegrityError,
    SnapshotNotFoundError,
    canonicalize,
    commit_snapshot,
    dataset_digest,
    discard_snapshot,
    load_snapshot,
    snapshot_dataset,
    snapshot_dir,
    stage_snapshot,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(6, dtype=np.int64),
            "timestamp": pd.date_range("2019-01-01", periods=6, freq="6h"),
            "car_value": [39811.0, 12679.0, 19325.5, 22558.0, 46075.25, 11008.0],
            "ratio": [0.1, 0.2, 0.3, 0.41, 0.55, 0.7],
            "salary_range": [
                "40K - 60K €",
                "20K - 40K €",
                "0 - 20K €",
                "20K - 40K €",
                None,
                "60K+ €",
            ],
            "repaid_loan_on_prev_car": [True, False, True, True, False, True],
            "repaid": [1, 0, 1, 1, 0, 1],
        }
    )


def _files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- digest


def test_digest_is_sha256_hex() -> None:
    digest = dataset_digest(_frame())
    assert len(digest) == 64 and int(digest, 16) >= 0


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda df: df[list(reversed(df.columns))], id="column-order"),
        pytest.param(lambda df: df.set_axis([10, 11, 12, 13, 14, 15]), id="index-values"),
        pytest.param(lambda df: df.set_index("id", drop=False), id="named-index"),
        pytest.param(lambda df: df.astype({"id": "int32", "repaid": "int8"}), id="int-widths"),
        pytest.param(lambda df: df.astype({"id": "uint16"}), id="unsigned"),
        pytest.param(lambda df: df.astype({"id": "Int64"}), id="nullable-int"),
        pytest.param(lambda df: df.astype({"ratio": "float32"}), id="float32-same-values"),
        pytest.param(lambda df: df.astype({"car_value": "float32"}), id="float32-exact"),
        pytest.param(lambda df: df.astype({"id": "float64"}), id="whole-floats-vs-ints"),
        pytest.param(lambda df: df.astype({"salary_range": object}), id="object-vs-str"),
        pytest.param(lambda df: df.astype({"salary_range": "category"}), id="category"),
        pytest.param(lambda df: df.astype({"salary_range": "string[python]"}), id="string-dtype"),
        pytest.param(lambda df: df.astype({"repaid_loan_on_prev_car": object}), id="object-bools"),
        pytest.param(
            lambda df: df.assign(timestamp=df["timestamp"].dt.tz_localize("UTC")), id="naive-vs-utc"
        ),
        pytest.param(
            lambda df: df.assign(
                timestamp=df["timestamp"].dt.tz_localize("UTC").dt.tz_convert("Europe/Paris")
            ),
            id="other-timezone",
        ),
        pytest.param(
            lambda df: df.assign(timestamp=df["timestamp"].astype("datetime64[s]")), id="time-unit"
        ),
    ],
)
def test_digest_ignores_representation(variant) -> None:
    df = _frame()
    changed = variant(df.copy())
    assert dataset_digest(changed) == dataset_digest(df)


def test_float32_widens_through_its_decimal_form() -> None:
    as32 = pd.DataFrame({"x": np.array([0.1, 1 / 3, 2.675], dtype=np.float32)})
    as64 = pd.DataFrame({"x": [0.1, 0.33333334, 2.675]})
    assert dataset_digest(as32) == dataset_digest(as64)


def test_missing_values_are_the_same_whatever_the_dtype() -> None:
    nullable = pd.DataFrame({"x": pd.array([1, None, 3], dtype="Int64"), "s": ["a", None, "c"]})
    floats = pd.DataFrame(
        {"x": [1.0, np.nan, 3.0], "s": np.array(["a", np.nan, "c"], dtype=object)}
    )
    assert dataset_digest(nullable) == dataset_digest(floats)


@pytest.mark.parametrize(
    ("column", "row", "value"),
    [
        ("car_value", 2, 19325.500001),
        ("ratio", 0, -0.1),
        ("id", 5, 6),
        ("salary_range", 1, "20K - 40K"),
        ("salary_range", 4, "0 - 20K €"),  # missing -> a value
        ("salary_range", 0, None),  # a value -> missing
        ("repaid_loan_on_prev_car", 3, False),
        ("timestamp", 0, pd.Timestamp("2019-01-01 00:00:00.000001")),
        ("repaid", 0, 0),
    ],
)
def test_any_single_value_change_changes_the_digest(column: str, row: int, value) -> None:
    df = _frame()
    changed = df.copy()
    changed[column] = changed[column].astype(object)
    changed.loc[row, column] = value
    changed[column] = changed[column].infer_objects()
    assert dataset_digest(changed) != dataset_digest(df)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda df: df.iloc[::-1], id="row-order"),
        pytest.param(lambda df: df.iloc[:-1], id="dropped-row"),
        pytest.param(lambda df: df.rename(columns={"ratio": "ratio2"}), id="renamed-column"),
        pytest.param(lambda df: df.drop(columns="ratio"), id="dropped-column"),
        pytest.param(lambda df: df.assign(repaid=df["repaid"].astype(bool)), id="int-to-bool"),
        pytest.param(lambda df: df.assign(id=df["id"].astype(str)), id="int-to-string"),
    ],
)
def test_structural_changes_change_the_digest(change) -> None:
    df = _frame()
    assert dataset_digest(change(df)) != dataset_digest(df)


def test_strings_are_not_confused_by_concatenation() -> None:
    a = pd.DataFrame({"s": ["ab", "c"]})
    b = pd.DataFrame({"s": ["a", "bc"]})
    assert dataset_digest(a) != dataset_digest(b)


def test_canonicalize_normalizes_dtypes_and_does_not_touch_the_input() -> None:
    df = _frame().astype({"id": "int32", "ratio": "float32", "salary_range": "category"})
    before = df.copy()
    canon = canonicalize(df.set_axis(list("abcdef")))
    pd.testing.assert_frame_equal(df, before)
    assert list(canon.columns) == sorted(df.columns)
    assert canon["id"].dtype == np.int64
    assert canon["car_value"].dtype == np.float64
    assert canon["ratio"].dtype == np.float64 and canon["ratio"].iloc[0] == 0.1
    assert pd.api.types.is_string_dtype(canon["salary_range"].dtype)
    assert canon["repaid_loan_on_prev_car"].dtype == bool
    assert str(canon["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert isinstance(canon.index, pd.RangeIndex) and canon.index[0] == 0
    assert dataset_digest(canon) == dataset_digest(df)


def test_mixed_type_object_column_is_rejected_by_name() -> None:
    df = pd.DataFrame({"weird": np.array([1, "a", 2.5], dtype=object)})
    with pytest.raises(SnapshotError, match="'weird'"):
        dataset_digest(df)


def test_duplicate_column_names_are_rejected() -> None:
    df = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(SnapshotError, match="duplicate column"):
        dataset_digest(df)


# --------------------------------------------------------------------------- store


def test_snapshot_writes_data_and_meta_under_the_digest(tmp_path: Path) -> None:
    df = _frame()
    info = snapshot_dataset(
        df, str(tmp_path), sources=["2019-01-01", "ref"], time_column="timestamp"
    )
    assert info.created is True
    assert info.digest == dataset_digest(df)
    folder = tmp_path / info.digest[:2] / info.digest
    assert info.uri == str(folder / "data.parquet")
    assert sorted(p.name for p in folder.iterdir()) == ["data.parquet", "meta.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["rows"] == info.rows == 6
    assert meta["columns"] == info.columns == sorted(df.columns)
    assert meta["sources"] == ["2019-01-01", "ref"]
    assert meta["time_min"] == info.time_min == "2019-01-01T00:00:00+00:00"
    assert meta["time_max"] == info.time_max == "2019-01-02T06:00:00+00:00"
    assert meta["created_at"]


def test_same_data_is_stored_once(tmp_path: Path) -> None:
    df = _frame()
    first = snapshot_dataset(df, str(tmp_path), ["a"], "timestamp")
    files = _files(tmp_path)
    again = snapshot_dataset(
        df[list(reversed(df.columns))].astype({"id": "int32"}), str(tmp_path), ["b"], "timestamp"
    )
    assert again.created is False
    assert again.digest == first.digest and again.uri == first.uri
    assert again.sources == ["a"]  # what the store holds
    assert _files(tmp_path) == files  # nothing new, nothing rewritten


def test_different_data_gets_its_own_snapshot(tmp_path: Path) -> None:
    first = snapshot_dataset(_frame(), str(tmp_path))
    second = snapshot_dataset(_frame().iloc[:3], str(tmp_path))
    assert second.created is True and second.digest != first.digest
    assert len(list(tmp_path.rglob("meta.json"))) == 2


def test_load_returns_the_canonical_frame(tmp_path: Path) -> None:
    df = _frame().astype({"ratio": "float32", "salary_range": "category"})
    info = snapshot_dataset(df, str(tmp_path))
    loaded = load_snapshot(str(tmp_path), info.digest)
    pd.testing.assert_frame_equal(loaded, canonicalize(df))
    assert dataset_digest(loaded) == info.digest


def test_load_detects_modified_data(tmp_path: Path) -> None:
    info = snapshot_dataset(_frame(), str(tmp_path))
    tampered = _frame()
    tampered.loc[0, "car_value"] = 1.0
    # Replace the stored file behind the store's back.
    io.write_table(canonicalize(tampered), info.uri)
    with pytest.raises(SnapshotIntegrityError, match=info.digest):
        load_snapshot(str(tmp_path), info.digest)


def test_load_detects_a_corrupt_file(tmp_path: Path) -> None:
    info = snapshot_dataset(_frame(), str(tmp_path))
    Path(info.uri).write_bytes(b"not parquet")
    with pytest.raises(SnapshotIntegrityError, match="damaged"):
        load_snapshot(str(tmp_path), info.digest)


def test_load_of_an_unknown_digest_says_so(tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFoundError, match="no snapshot"):
        load_snapshot(str(tmp_path), "0" * 64)


@pytest.mark.parametrize("digest", ["../../etc", "ABC", "0" * 63])
def test_malformed_digests_are_rejected(tmp_path: Path, digest: str) -> None:
    with pytest.raises(SnapshotError, match="not a snapshot digest"):
        load_snapshot(str(tmp_path), digest)


def test_interrupted_write_counts_as_absent_and_is_completed(tmp_path: Path) -> None:
    """A killed write leaves data without meta.json: it is not a snapshot yet."""
    df = _frame()
    digest = dataset_digest(df)
    folder = Path(snapshot_dir(str(tmp_path), digest))
    folder.mkdir(parents=True)
    (folder / "data.parquet").write_bytes(b"half a file")
    (folder / ".data.parquet.deadbeef.tmp").write_bytes(b"temp")
    with pytest.raises(SnapshotNotFoundError):
        load_snapshot(str(tmp_path), digest)
    info = snapshot_dataset(df, str(tmp_path))
    assert info.created is True
    pd.testing.assert_frame_equal(load_snapshot(str(tmp_path), digest), canonicalize(df))


def test_no_temporary_files_are_left_after_a_write(tmp_path: Path) -> None:
    snapshot_dataset(_frame(), str(tmp_path))
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_staged_snapshot_is_invisible_until_committed(tmp_path: Path) -> None:
    staged = stage_snapshot(_frame(), str(tmp_path), ["a"], "timestamp")
    digest = staged.info.digest
    assert digest == dataset_digest(_frame())
    # Only a temporary file: no data.parquet, no meta.json, so nothing reads it as stored.
    assert [Path(f).name.startswith(".data.parquet.") for f in _all_files(tmp_path)] == [True]
    with pytest.raises(SnapshotNotFoundError):
        load_snapshot(str(tmp_path), digest)
    info = commit_snapshot(staged)
    assert info.created is True and info.sources == ["a"]
    assert _all_files(tmp_path) == [f"{digest[:2]}/{digest}/data.parquet", f"{digest[:2]}/{digest}/meta.json"]
    pd.testing.assert_frame_equal(load_snapshot(str(tmp_path), digest), canonicalize(_frame()))


def test_a_discarded_snapshot_leaves_nothing(tmp_path: Path) -> None:
    staged = stage_snapshot(_frame(), str(tmp_path))
    discard_snapshot(staged)
    discard_snapshot(staged)  # twice is harmless
    assert _all_files(tmp_path) == []
    assert snapshot_dataset(_frame(), str(tmp_path)).created is True  # still storable


def test_staging_a_stored_digest_writes_nothing_and_discarding_it_keeps_the_snapshot(tmp_path: Path) -> None:
    first = snapshot_dataset(_frame(), str(tmp_path), ["first"])
    before = _all_files(tmp_path)
    again = stage_snapshot(_frame(), str(tmp_path), ["second"])
    assert again.staged is None and again.info.created is False and again.info.sources == ["first"]
    discard_snapshot(again)
    assert commit_snapshot(again) == again.info
    assert _all_files(tmp_path) == before
    assert load_snapshot(str(tmp_path), first.digest) is not None


def test_staging_removes_copies_a_dead_writer_left_but_not_a_live_writers(tmp_path: Path) -> None:
    dead = stage_snapshot(_frame(), str(tmp_path))  # then killed: never committed or discarded
    dead_file = Path(dead.staged)
    old = dead_file.stat().st_mtime - STALE_STAGING_SECONDS - 60
    os.utime(dead_file, (old, old))
    live = stage_snapshot(_frame(), str(tmp_path))  # a writer staging the same data right now
    again = stage_snapshot(_frame(), str(tmp_path))
    assert not dead_file.exists()
    assert Path(live.staged).exists()  # fresh: left to its writer
    assert commit_snapshot(again).created is True
    discard_snapshot(live)
    digest = again.info.digest
    assert _all_files(tmp_path) == [f"{digest[:2]}/{digest}/data.parquet", f"{digest[:2]}/{digest}/meta.json"]


def test_two_writers_staging_the_same_data_store_it_once(tmp_path: Path) -> None:
    one = stage_snapshot(_frame(), str(tmp_path), ["one"])
    two = stage_snapshot(_frame(), str(tmp_path), ["two"])  # before `one` commits
    assert commit_snapshot(one).created is True
    second = commit_snapshot(two)
    assert second.created is False and second.sources == ["one"]
    digest = one.info.digest
    assert _all_files(tmp_path) == [f"{digest[:2]}/{digest}/data.parquet", f"{digest[:2]}/{digest}/meta.json"]


def test_works_on_any_fsspec_path() -> None:
    store = f"memory://evergreen-test-{os.getpid()}/datasets"
    info = snapshot_dataset(_frame(), store, ["x"], "timestamp")
    assert info.uri.startswith("memory://")
    assert snapshot_dataset(_frame(), store).created is False
    pd.testing.assert_frame_equal(load_snapshot(store, info.digest), canonicalize(_frame()))


def test_unknown_time_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="'when'"):
        snapshot_dataset(_frame(), str(tmp_path), time_column="when")
    assert not any(tmp_path.iterdir())


def test_digest_of_a_fixed_table_never_changes() -> None:
    """Content addressing across versions: a snapshot stored by an earlier release must be
    found again by the digest this one computes. Every canonical column kind is here, with
    missing values, -0.0, float32, timezone-aware times, whole floats and categoricals; the
    value was computed before the hashing stopped copying arrays (2026-11-27)."""
    assert dataset_digest(golden_frame()) == GOLDEN_DIGEST


GOLDEN_DIGEST = "b1d9b495e4c953c0e91b817eb68184382deeec1e22c5efd117c0d826af98d799"


def golden_frame() -> pd.DataFrame:
    """The fixed table of the golden digest (also streamed in test_snapshot_streaming.py)."""
    return pd.DataFrame(
        {
            "id": np.arange(6, dtype=np.int32),
            "ts": pd.date_range("2024-01-01", periods=6, freq="h", tz="Europe/Paris").where(
                [True, True, False, True, True, True]
            ),
            "x": [0.1, -0.0, np.nan, 2.5, 1e300, -3.0],
            "whole": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "f32": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=np.float32),
            "s": pd.Series(["a", None, "ü", "", "long text", "b"], dtype="str"),
            "obj": pd.Series(["x", "y", None, "z", "x", "y"], dtype=object),
            "cat": pd.Categorical(["m", "n", "m", None, "n", "m"]),
            "flag": [True, False, True, True, False, False],
            "nflag": pd.array([True, None, False, True, None, False], dtype="boolean"),
            "big": np.array([1, 2**40, -5, 0, 7, 9], dtype=np.int64),
        }
    )
