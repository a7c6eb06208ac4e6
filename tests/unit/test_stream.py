"""Stream writer: layout, day naming, label delay, no target in batches, drift window."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evergreen.adapters.io import list_batches, read_labels, read_table
from evergreen.engines.training import TrainedModel
from evergreen.simulation.stream import StreamError, write_stream_from_frames

FEATURES = ["x1", "x2", "color", "flag"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def frames(toy_frame):
    reference = toy_frame(1000, seed=0)
    analysis = toy_frame(1050, seed=2)
    analysis["timestamp"] = analysis["timestamp"] + pd.Timedelta(days=30)
    # Serving columns of an older model must not leak into the stream.
    analysis["y_pred_proba"] = 0.5
    analysis["y_pred"] = 1
    return reference, analysis.sample(frac=1.0, random_state=0)  # any row order


def _day(i: int) -> str:
    return (date(2024, 3, 1) + timedelta(days=i)).isoformat()


def test_stream_layout(frames, toy_config, tmp_path):
    cfg = toy_config()
    reference, analysis = frames
    info = write_stream_from_frames(cfg, reference, analysis, str(tmp_path), seed=0)

    assert info.days == [_day(i) for i in range(11)]
    assert [b.day for b in list_batches(str(tmp_path / "batches"))] == info.days
    ref = read_table(str(tmp_path / "reference.parquet"))
    assert len(ref) == 1000 and list(ref.columns) == ["id", "timestamp", *FEATURES, "target"]
    assert pd.api.types.is_datetime64_any_dtype(ref["timestamp"])

    monitor = read_table(str(tmp_path / "monitor_reference.parquet"))
    assert len(monitor) == 300  # the latest 30% of the reference by time
    assert monitor["timestamp"].min() > reference["timestamp"].sort_values().iloc[699]
    assert {"y_pred", "y_pred_proba", "target", "model_version"} <= set(monitor.columns)
    assert (monitor["model_version"] == info.model_version).all()
    assert info.holdout_metric["roc_auc"] > 0.8

    model = TrainedModel.load(str(tmp_path / "model"))
    ids: list[int] = []
    for i, day in enumerate(info.days):
        batch = read_table(str(tmp_path / "batches" / f"{day}.parquet"))
        assert list(batch.columns) == [
            "id",
            "timestamp",
            *FEATURES,
            "y_pred",
            "y_pred_proba",
            "model_version",
        ]
        assert len(batch) == (50 if i == 10 else 100)
        assert pd.api.types.is_datetime64_any_dtype(batch["timestamp"])
        assert batch["timestamp"].is_monotonic_increasing
        assert (batch["timestamp"].dt.strftime("%Y-%m-%d") == day).all()
        assert batch["timestamp"].iloc[-1] - batch["timestamp"].iloc[0] > pd.Timedelta(hours=20)
        np.testing.assert_allclose(batch["y_pred_proba"], model.predict(batch).probability)
        labels = read_table(str(tmp_path / "labels" / f"{_day(i + 2)}.parquet"))
        assert (
            list(labels.columns) == ["id", "target"]
            and labels["id"].tolist() == batch["id"].tolist()
        )
        ids += batch["id"].tolist()
    # Batches follow the source's time order, every row exactly once.
    assert ids == analysis.sort_values("timestamp")["id"].tolist()

    # On day 3 only the labels of days 0 and 1 have arrived (delay 2).
    arrived = read_labels(str(tmp_path / "labels"), up_to_day=_day(3))
    assert len(arrived) == 200
    truth = analysis.set_index("id")["target"]
    assert (arrived.set_index("id")["target"] == truth.loc[arrived["id"]]).all()

    meta = json.loads((tmp_path / "stream.json").read_text())
    assert meta["days"] == info.days and meta["drift"] == "none" and meta["seed"] == 0


@pytest.mark.parametrize(("drift_start", "index"), [(4, 4), ("2024-03-06", 5), ("7", 7), (None, 5)])
def test_drift_changes_only_days_from_start(frames, toy_config, tmp_path, drift_start, index):
    cfg = toy_config()
    reference, analysis = frames
    clean = write_stream_from_frames(cfg, reference, analysis, str(tmp_path / "clean"))
    info = write_stream_from_frames(
        cfg,
        reference,
        analysis,
        str(tmp_path / "drift"),
        "covariate",
        drift_start,
        drift_params={"features": ["x1"]},
    )
    assert info.drift_start_index == index and info.drift_start_date == _day(index)
    assert info.features_shifted == ["x1"]
    for i, day in enumerate(info.days):
        before = read_table(str(tmp_path / "clean" / "batches" / f"{day}.parquet"))
        after = read_table(str(tmp_path / "drift" / "batches" / f"{day}.parquet"))
        if i < index:
            pd.testing.assert_frame_equal(before, after)
        else:
            assert after["x1"].mean() > before["x1"].mean()
    assert clean.drift_start_index is None


def test_default_covariate_features_are_the_most_important(frames, toy_config, tmp_path):
    reference, analysis = frames
    info = write_stream_from_frames(
        toy_config(), reference, analysis, str(tmp_path), "covariate", 5
    )
    model = TrainedModel.load(str(tmp_path / "model"))
    gain = model.feature_importance()
    assert info.features_shifted == sorted(gain, key=gain.get, reverse=True)[:2]


def test_concept_drift_lowers_realized_auc(frames, toy_config, tmp_path):
    from sklearn.metrics import roc_auc_score

    reference, analysis = frames
    write_stream_from_frames(toy_config(), reference, analysis, str(tmp_path), "concept", 0)
    batches = pd.concat(read_table(b.path) for b in list_batches(str(tmp_path / "batches")))
    scored = batches.merge(read_labels(str(tmp_path / "labels")), on="id")
    clean = analysis.set_index("id").loc[scored["id"]]
    drop = roc_auc_score(clean["target"], scored["y_pred_proba"]) - roc_auc_score(
        scored["target"], scored["y_pred_proba"]
    )
    assert drop >= 0.05


def test_bad_data_strings_are_written(frames, toy_config, tmp_path):
    reference, analysis = frames
    info = write_stream_from_frames(
        toy_config(),
        reference,
        analysis,
        str(tmp_path),
        "bad",
        9,
        drift_params={"bad_data_kind": "strings"},
    )
    assert info.drift == "bad_data"
    assert info.features_shifted == ["x1"]
    assert pd.api.types.is_float_dtype(
        read_table(str(tmp_path / "batches" / f"{_day(8)}.parquet"))["x1"]
    )
    late = read_table(str(tmp_path / "batches" / f"{_day(9)}.parquet"))
    assert late["x1"].map(type).eq(str).all()


def test_rerun_removes_stale_days(frames, toy_config, tmp_path):
    reference, analysis = frames
    write_stream_from_frames(toy_config(), reference, analysis, str(tmp_path))
    info = write_stream_from_frames(toy_config(), reference, analysis.head(500), str(tmp_path))
    assert (
        [b.day for b in list_batches(str(tmp_path / "batches"))]
        == info.days
        == [_day(i) for i in range(5)]
    )
    assert [b.day for b in list_batches(str(tmp_path / "labels"))] == [
        _day(i + 2) for i in range(5)
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drift": "earthquake"}, "earthquake"),
        ({"drift": "covariate", "drift_start": 11}, "0..10"),
        ({"drift": "covariate", "drift_start": "2023-12-01"}, "2024-03-01..2024-03-11"),
        ({"drift": "covariate", "drift_start": "soon"}, "soon"),
    ],
)
def test_bad_parameters_are_named(frames, toy_config, tmp_path, change, message):
    reference, analysis = frames
    with pytest.raises(StreamError, match=message):
        write_stream_from_frames(toy_config(), reference, analysis, str(tmp_path), **change)


def test_missing_feature_is_named(frames, toy_config, tmp_path):
    reference, analysis = frames
    with pytest.raises(StreamError, match="analysis frame lacks columns \\['x2'\\]"):
        write_stream_from_frames(
            toy_config(), reference, analysis.drop(columns="x2"), str(tmp_path)
        )


@pytest.mark.slow
def test_demo_stream_on_car_loan_data(tmp_path):
    from sklearn.metrics import roc_auc_score

    from evergreen.config import load_config
    from evergreen.simulation.stream import write_demo_stream

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    info = write_demo_stream(cfg, str(tmp_path), drift="covariate", drift_start=10, seed=0)
    assert (
        len(info.days) == 20
        and info.days[0] == "2019-01-01"
        and info.drift_start_date == "2019-01-11"
    )
    for name in (
        "reference.parquet",
        "monitor_reference.parquet",
        "stream.json",
        "model/model.ubj",
    ):
        assert (tmp_path / name).exists(), name
    assert len(list((tmp_path / "labels").iterdir())) == 20
    monitor = read_table(str(tmp_path / "monitor_reference.parquet"))
    assert len(monitor) == 15_000
    assert roc_auc_score(monitor["repaid"], monitor["y_pred_proba"]) > 0.85
    batch = read_table(str(tmp_path / "batches" / "2019-01-01.parquet"))
    assert "repaid" not in batch.columns and len(batch) == 2500
    assert read_table(str(tmp_path / "reference.parquet"))["repaid"].isin([0, 1]).all()


@pytest.mark.slow
def test_demo_drift_defaults_are_visible_to_nannyml(tmp_path):
    """Default covariate shift alerts NannyML on the shifted features (from a quiet day on);
    default concept drift lowers the realized ROC AUC by at least 0.05."""
    import nannyml as nml
    from nannyml.datasets import load_synthetic_car_loan_dataset
    from sklearn.metrics import roc_auc_score

    from evergreen.config import load_config
    from evergreen.simulation.stream import load_car_loan_frames, write_stream_from_frames

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    frames = load_car_loan_frames(cfg)
    reference, analysis, targets = load_synthetic_car_loan_dataset()
    pd.testing.assert_frame_equal(frames.reference, reference)  # our fast read == nannyml's loader
    assert len(frames.analysis) == len(analysis) == len(targets)

    info = write_stream_from_frames(
        cfg, frames.reference, frames.analysis, str(tmp_path / "cov"), "covariate", 5
    )
    monitor = read_table(str(tmp_path / "cov" / "monitor_reference.parquet"))
    stream = pd.concat(read_table(b.path) for b in list_batches(str(tmp_path / "cov" / "batches")))
    feats = cfg.columns.features
    with pd.option_context("future.infer_string", False):
        ref, ana = monitor.copy(), stream.copy()
        for col in cfg.columns.categorical:
            ref[col], ana[col] = (
                ref[col].astype(str).astype(object),
                ana[col].astype(str).astype(object),
            )
        calc = nml.UnivariateDriftCalculator(
            column_names=feats, timestamp_column_name="timestamp", chunk_size=2500
        ).fit(ref)
        result = calc.calculate(ana).filter(period="analysis").to_df()
    for feature in info.features_shifted:
        alerts = result[(feature, "jensen_shannon", "alert")].to_numpy()
        assert alerts[5:].all(), feature

    write_stream_from_frames(
        cfg, frames.reference, frames.analysis, str(tmp_path / "concept"), "concept", 10
    )
    labels = read_labels(str(tmp_path / "concept" / "labels"))
    late = [b for b in list_batches(str(tmp_path / "concept" / "batches")) if b.index >= 10]
    scored = pd.concat(read_table(b.path) for b in late).merge(labels, on="id")
    clean = frames.analysis.set_index("id").loc[scored["id"], "repaid"]
    drop = roc_auc_score(clean, scored["y_pred_proba"]) - roc_auc_score(
        scored["repaid"], scored["y_pred_proba"]
    )
    assert drop >= 0.05
