"""A training window held by reference and read in chunks (`loop.window_stream`) holds the
rows the in-memory window (`sources.assemble_training_window`) holds, in its order, with
its values; the time split by roles matches `hold_out_recent` / `train_model`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evergreen.adapters import io, ledger
from evergreen.config import ModelConfig, parse_config
from evergreen.engines.training import FIT, VALIDATE, split_by_time
from evergreen.loop import sources, window_stream
from evergreen.loop.retraining import EVALUATE, hold_out_recent, hold_out_rows, split_rows


def _rows(n: int, day: str, seed: int, id_start: int, shuffle: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": np.arange(id_start, id_start + n),
            "timestamp": pd.Timestamp(day) + pd.to_timedelta(np.sort(rng.uniform(0, 86_400 * 1.5, n)), unit="s"),
            "x1": rng.normal(size=n),
            "x2": rng.integers(0, 5, n).astype(float),  # whole numbers in a float column
            "color": pd.array(rng.choice(["red", "green", "blue"], n), dtype="str"),
            "y_pred": rng.integers(0, 2, n),
        }
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True) if shuffle else frame


def _world(tmp_path: Path, **retrain: object) -> ModelConfig:
    """Reference (out of time order), five daily batches overlapping in time (one written out
    of time order, one rejected by the monitor, one lacking a feature), labels for most rows."""
    cfg = parse_config(
        {
            "name": "ws",
            "problem_type": "binary_classification",
            "metric": "roc_auc",
            "columns": {"target": "target", "features": ["x1", "x2", "color"], "categorical": ["color"]},
            "data": {"root": str(tmp_path), "rows_per_batch": 500},
            "retrain": {"window": "expanding", "include_reference": True, **retrain},
            "mlflow": {"model_name": "ws"},
        }
    )
    reference = _rows(700, "2024-01-01", 1, 0, shuffle=True).drop(columns="y_pred")
    reference["target"] = np.random.default_rng(2).integers(0, 2, len(reference))
    io.write_table(reference, cfg.data.path("training_reference"))
    labels = []
    for i in range(5):
        day = f"2024-02-0{i + 1}"
        frame = _rows(600 + 50 * i, day, 10 + i, 10_000 * (i + 1), shuffle=(i == 2))
        if i == 4:
            frame = frame.drop(columns="x2")
        io.write_table(frame, f"{cfg.data.path('batches')}/{day}.parquet")
        keep = frame.sample(frac=0.8, random_state=i)
        labels.append(pd.DataFrame({"id": keep["id"], "target": np.random.default_rng(i).integers(0, 2, len(keep))}))
    io.write_table(pd.concat(labels[:3]), f"{cfg.data.path('labels')}/2024-02-04.parquet")
    io.write_table(pd.concat(labels[3:]), f"{cfg.data.path('labels')}/2024-02-07.parquet")
    ledger.record_batch(
        cfg.data.path("state"), ledger.BatchRecord(day="2024-02-02", path="x", valid=False, message="bad ids")
    )
    return cfg


POLICIES = [
    {"window": "expanding"},
    {"window": "expanding", "include_reference": False},
    {"window": "sliding", "window_days": 2},
    {"window": "sliding", "window_days": None, "window_batches": 2},
    {"window": "sliding", "window_days": None, "window_rows": 900},
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
@pytest.mark.parametrize("chunk", [64, 1000])
def test_the_planned_window_reads_the_rows_of_the_in_memory_window(tmp_path: Path, policy, chunk) -> None:
    cfg = _world(tmp_path, **policy)
    expected = sources.assemble_training_window(cfg)
    plan = window_stream.plan_training_window(cfg)
    chunks = list(plan.chunks(chunk))
    assert all(len(c) <= chunk for c in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), expected.frame)
    for name in ("rows", "sources", "excluded", "time_min", "time_max", "reference_rows", "batch_rows", "window_start"):
        assert getattr(plan, name) == getattr(expected, name), name
    assert plan.excluded["2024-02-02"] == "bad ids"
    assert "missing column" in plan.excluded["2024-02-05"]
    positions = np.array([0, 5, 6, len(expected.frame) - 1])
    pd.testing.assert_frame_equal(plan.take(positions), expected.frame.iloc[positions].reset_index(drop=True))


def test_an_empty_window_is_one_empty_chunk_with_the_window_columns(tmp_path: Path) -> None:
    cfg = _world(tmp_path, include_reference=False)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"labels": "no-labels"})})
    plan = window_stream.plan_training_window(cfg)
    (only,) = list(plan.chunks())
    assert plan.rows == 0 and only.empty
    assert list(only.columns) == list(sources.assemble_training_window(cfg).frame.columns)


def test_a_reference_without_the_window_columns_fails_as_the_in_memory_window_fails(tmp_path: Path) -> None:
    from evergreen.decisions.window import WindowError

    cfg = _world(tmp_path)
    io.write_table(io.read_table(cfg.data.path("training_reference")).drop(columns="x1"), cfg.data.path("training_reference"))
    with pytest.raises(WindowError) as in_memory:
        sources.assemble_training_window(cfg)
    with pytest.raises(WindowError) as planned:
        window_stream.plan_training_window(cfg)
    assert str(planned.value) == str(in_memory.value)


@pytest.mark.parametrize("with_times", [True, False])
def test_roles_split_the_rows_as_hold_out_recent_and_train_model_do(tmp_path: Path, with_times: bool) -> None:
    cfg = _world(tmp_path)
    window = sources.assemble_training_window(cfg).frame
    if not with_times:  # a reference without times: its rows sort last
        window.loc[:300, "timestamp"] = pd.NaT
    window.loc[400:420, "timestamp"] = window.loc[400, "timestamp"]  # ties keep their order
    roles = split_rows(window["timestamp"], cfg)
    holdout = hold_out_recent(window, cfg)
    fit = split_by_time(holdout.train, "timestamp", cfg.training.validation_fraction)
    assert sorted(window.index[roles == EVALUATE]) == sorted(holdout.evaluation.index)
    assert sorted(window.index[roles == VALIDATE]) == sorted(fit.validation.index)
    assert sorted(window.index[roles == FIT]) == sorted(fit.train.index)
    held = hold_out_rows(window["timestamp"], lambda p: window.iloc[p].reset_index(drop=True), cfg)
    pd.testing.assert_frame_equal(held.evaluation, holdout.evaluation.reset_index(drop=True))
    assert held.train_end == holdout.train["timestamp"].max()
    assert (held.train_rows, held.evaluation_rows) == (holdout.train_rows, holdout.evaluation_rows)


def test_the_snapshot_of_the_planned_window_has_the_digest_of_the_in_memory_window(tmp_path: Path) -> None:
    from evergreen.engines.snapshot import dataset_digest, stage_snapshot_chunks

    cfg = _world(tmp_path, window="sliding", window_days=3)
    plan = window_stream.plan_training_window(cfg)
    staged = stage_snapshot_chunks(plan.chunks(100), str(tmp_path / "snapshots"), plan.sources, "timestamp")
    assert staged.info.digest == dataset_digest(sources.assemble_training_window(cfg).frame)
    assert staged.info.rows == plan.rows
