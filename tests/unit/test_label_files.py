"""Labels files checked one by one before a retrain joins them (sources.check_label_files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from evergreen.adapters import io
from evergreen.config import ModelConfig
from evergreen.loop.sources import check_label_files


@pytest.fixture
def stream(tmp_path: Path, toy_config: Callable[..., ModelConfig], toy_frame) -> ModelConfig:  # noqa: ANN001
    """Two batches of 100 rows and their labels, one file each."""
    cfg = toy_config()
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(tmp_path)})})
    frame = toy_frame(200)
    for i, day in enumerate(["2024-03-01", "2024-03-02"]):
        part = frame.iloc[i * 100 : (i + 1) * 100]
        io.write_table(part.drop(columns=["target", "p_true"]), f"{cfg.data.path('batches')}/{day}.parquet")
        io.write_table(part[["id", "target"]], f"{cfg.data.path('labels')}/2024-03-0{i + 3}.parquet")
    return cfg


def _labels(cfg: ModelConfig, day: str) -> str:
    return f"{cfg.data.path('labels')}/{day}.parquet"


def test_good_labels_pass(stream: ModelConfig) -> None:
    reports = check_label_files(stream)
    assert len(reports) == 2 and all(r.success for r in reports)


def test_impossible_targets_name_the_file_and_column(stream: ModelConfig) -> None:
    path = _labels(stream, "2024-03-03")
    labels = io.read_table(path)
    io.write_table(labels.assign(target=labels["target"].where(labels.index % 4 > 0, 2)), path)
    [bad] = [r for r in check_label_files(stream) if not r.success]
    assert bad.batch_id == path
    [failure] = bad.failures
    assert failure.column == "target" and failure.expectation_type == "expect_column_values_to_be_in_set"
    assert "25 targets are not 0/1" in failure.message


def test_unknown_ids_beyond_the_tolerance_fail(stream: ModelConfig) -> None:
    path = _labels(stream, "2024-03-05")
    labels = io.read_table(_labels(stream, "2024-03-03"))
    io.write_table(labels.assign(id=labels["id"] + 10_000), path)
    [bad] = [r for r in check_label_files(stream) if not r.success]
    assert bad.batch_id == path and bad.failures[0].column == "id"
    assert "100 labels (100.00%) name ids no batch served" in bad.summary()

def test_a_few_unknown_ids_are_tolerated(stream: ModelConfig) -> None:
    """Up to data.max_unknown_label_fraction (10%): labels of other traffic happen."""
    path = _labels(stream, "2024-03-04")
    labels = io.read_table(path)
    io.write_table(labels.assign(id=labels["id"].where(labels.index % 20 > 0, labels["id"] + 10_000)), path)
    assert all(r.success for r in check_label_files(stream))
    strict = stream.model_copy(update={"data": stream.data.model_copy(update={"max_unknown_label_fraction": 0.0})})
    [bad] = [r for r in check_label_files(strict) if not r.success]
    assert "5 labels (5.00%) name ids no batch served" in bad.summary()


def test_unknown_ids_of_an_unreadable_batch_say_so(stream: ModelConfig) -> None:
    Path(f"{stream.data.path('batches')}/2024-03-02.parquet").write_bytes(b"garbage")
    [bad] = [r for r in check_label_files(stream) if not r.success]
    assert "batches ['2024-03-02'] cannot be read" in bad.summary()


def test_labels_delivered_twice_fail_the_later_file(stream: ModelConfig) -> None:
    path = _labels(stream, "2024-03-06")
    io.write_table(io.read_table(_labels(stream, "2024-03-03")), path)
    [bad] = [r for r in check_label_files(stream) if not r.success]
    assert bad.batch_id == path
    assert bad.failures[0].expectation_type == "expect_column_values_to_be_unique"
    assert "100 labels repeat ids an earlier labels file already labelled" in bad.failures[0].message


def test_unreadable_labels_file_is_rejected(stream: ModelConfig) -> None:
    path = _labels(stream, "2024-03-07")
    Path(path).write_bytes(b"")
    [bad] = [r for r in check_label_files(stream) if not r.success]
    assert bad.batch_id == path and bad.failures[0].expectation_type == "expect_file_to_be_readable"


def test_an_id_counts_as_labelled_again_only_after_an_earlier_file() -> None:
    import numpy as np
    import pandas as pd

    from evergreen.loop.sources import labelled_before

    files = [
        pd.Series([1, 2, 2, 3]),  # 2 twice within the first file: not "again"
        pd.Series([4, 1, None, 5, 4]),  # 1 from the first file; 4 repeats within this one
        pd.Series([None, 4, 6, 3, 3]),  # 4 from the second file, 3 (twice) from the first
    ]
    masks = labelled_before(files)
    assert [m.tolist() for m in masks] == [
        [False, False, False, False],
        [False, True, False, False, False],
        [False, True, False, True, True],
    ]
    assert [m.tolist() for m in labelled_before(files[:1])] == [[False] * 4]
    text = labelled_before([pd.Series(["a", "b"]), pd.Series(["b", "c"])])
    assert np.array_equal(text[1], [True, False])
