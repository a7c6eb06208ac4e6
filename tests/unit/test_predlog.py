"""The prediction log: buffered, atomic part files per day; read back and compacted."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evergreen.adapters.io import read_table
from evergreen.adapters.predlog import (
    LOG_ONLY_COLUMNS,
    PredictionLogWriter,
    compact_day,
    list_log_days,
    read_prediction_log,
)


def _rows(ids: list[int], day: str = "2024-03-01", version: str = "1") -> pd.DataFrame:
    n = len(ids)
    ts = pd.Timestamp(day) + pd.to_timedelta(np.arange(n), unit="s")
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="int64"),
            "timestamp": pd.Series(ts, dtype="datetime64[us]"),
            "x1": np.linspace(0, 1, n),
            "color": ["red"] * n,
            "y_pred": np.ones(n, dtype=np.int64),
            "y_pred_proba": np.full(n, 0.7),
            "model_version": version,
            "alias": "champion",
            "served_at": pd.Series([pd.Timestamp("2024-03-05")] * n, dtype="datetime64[us]"),
            "request_id": "r1",
        }
    )


def _parts(root: Path) -> list[Path]:
    return sorted(root.rglob("part-*.parquet"))


def test_rows_are_buffered_until_flush_rows(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path), flush_rows=10, flush_seconds=60)
    writer.append(_rows(list(range(6))))
    assert _parts(tmp_path) == []
    writer.append(_rows(list(range(6, 12))))  # 12 >= 10: flushed inline (no thread)
    assert len(_parts(tmp_path)) == 1
    assert writer.buffered_rows == 0
    assert sorted(read_prediction_log(str(tmp_path))["id"]) == list(range(12))


def test_background_thread_flushes_after_flush_seconds(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path), flush_rows=1000, flush_seconds=0.2)
    writer.start()
    try:
        writer.append(_rows([1, 2, 3]))
        deadline = time.monotonic() + 5
        while not _parts(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_parts(tmp_path)) == 1
    finally:
        writer.close()
    assert read_prediction_log(str(tmp_path))["id"].tolist() == [1, 2, 3]


def test_close_writes_the_rest_exactly_once(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path), flush_rows=1000, flush_seconds=60)
    writer.start()
    for k in range(5):
        writer.append(_rows(list(range(k * 10, k * 10 + 10))))
    writer.close()
    writer.close()  # idempotent: nothing left, nothing written twice
    ids = read_prediction_log(str(tmp_path))["id"].tolist()
    assert sorted(ids) == list(range(50))
    assert writer.rows_written == 50


def test_rows_are_partitioned_by_their_timestamp_day(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path), flush_rows=1000)
    writer.append(pd.concat([_rows([1, 2], "2024-03-01"), _rows([3], "2024-03-02")]))
    written = writer.flush()
    assert len(written) == 2
    assert list_log_days(str(tmp_path)) == ["2024-03-01", "2024-03-02"]
    part = _parts(tmp_path / "2024-03-02")[0]
    assert part.name.startswith("part-") and part.suffix == ".parquet"
    assert read_prediction_log(str(tmp_path), "2024-03-01")["id"].tolist() == [1, 2]
    assert read_prediction_log(str(tmp_path), "2024-03-02")["id"].tolist() == [3]
    # No temporary files are left next to the parts.
    assert [p.name for p in tmp_path.rglob(".*")] == []


def test_failed_write_keeps_rows_for_the_next_flush(tmp_path: Path, monkeypatch) -> None:
    import evergreen.adapters.predlog as predlog

    writer = PredictionLogWriter(str(tmp_path), flush_rows=1000)
    writer.append(_rows([1, 2]))
    real = predlog.write_table

    def broken(df, path):
        raise OSError("disk full")

    monkeypatch.setattr(predlog, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    assert writer.buffered_rows == 2 and "disk full" in (writer.last_error or "")
    writer.append(_rows([3]))
    monkeypatch.setattr(predlog, "write_table", real)
    writer.flush()
    assert sorted(read_prediction_log(str(tmp_path))["id"]) == [1, 2, 3]
    assert writer.last_error is None


def test_mixed_int_and_text_ids_are_written_as_text(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path))
    text_ids = _rows([1]).assign(id=pd.Series(["abc"], dtype=object))
    writer.append(_rows([7]))
    writer.append(text_ids)
    writer.flush()
    assert sorted(read_prediction_log(str(tmp_path))["id"].tolist()) == ["7", "abc"]


def test_read_orders_by_timestamp_and_handles_empty(tmp_path: Path) -> None:
    assert read_prediction_log(str(tmp_path / "nothing")).empty
    writer = PredictionLogWriter(str(tmp_path))
    late, early = _rows([1]), _rows([2])
    late["timestamp"] = pd.Series([pd.Timestamp("2024-03-01 12:00")], dtype="datetime64[us]")
    writer.append(late)
    writer.flush()
    writer.append(early)
    writer.flush()
    assert read_prediction_log(str(tmp_path))["id"].tolist() == [2, 1]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        read_prediction_log(str(tmp_path), "03/01/2024")


def test_compact_day_writes_the_monitor_batch(tmp_path: Path) -> None:
    log_dir, batches = tmp_path / "log", tmp_path / "batches"
    writer = PredictionLogWriter(str(log_dir), flush_rows=3)
    writer.append(_rows([1, 2], version="1"))
    writer.append(_rows([3, 4], version="2"))
    writer.append(_rows([5], day="2024-03-02"))
    writer.flush()
    path = compact_day(str(log_dir), "2024-03-01", str(batches))
    assert path == f"{batches}/2024-03-01.parquet"
    batch = read_table(path)
    assert batch.columns.tolist() == [
        "id", "timestamp", "x1", "color", "y_pred", "y_pred_proba", "model_version",
    ]  # fmt: skip
    assert not set(LOG_ONLY_COLUMNS) & set(batch.columns)
    assert sorted(batch["id"]) == [1, 2, 3, 4]
    assert dict(zip(batch["id"], batch["model_version"], strict=True)) == {
        1: "1",
        2: "1",
        3: "2",
        4: "2",
    }
    assert pd.api.types.is_datetime64_any_dtype(batch["timestamp"])
    assert batch["timestamp"].is_monotonic_increasing
    with pytest.raises(FileNotFoundError, match="2024-03-09"):
        compact_day(str(log_dir), "2024-03-09", str(batches))
