"""XGBoost training core: fixed categories, determinism, time split, safe save/load."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from evergreen.engines.training import (
    METADATA_FILE,
    MODEL_FILE,
    SEARCH_ETA,
    SEARCH_MAX_DEPTH,
    TrainedModel,
    TrainingError,
    fit_categories,
    prepare_features,
    split_by_time,
    train_model,
)


@pytest.fixture
def frame(toy_frame):
    return toy_frame(1500, seed=1)


@pytest.fixture
def model(frame, toy_config) -> TrainedModel:
    return train_model(frame, toy_config())


def test_fit_categories_are_sorted_strings(frame, toy_config):
    cats = fit_categories(frame, toy_config().columns)
    assert cats == {"color": ["amber", "blue", "green", "red"], "flag": ["False", "True"]}


def test_prepare_features_uses_fixed_categories_and_keeps_input(frame, toy_config):
    cfg = toy_config()
    cats = fit_categories(frame, cfg.columns)
    batch = frame.head(6).copy()
    batch["color"] = ["red", "violet", None, "amber", "blue", "green"]
    batch["x1"] = ["1.5", "oops", 2, None, 3.0, -1]
    before = batch.copy()
    x = prepare_features(batch, cfg.columns, cats)
    assert list(x.columns) == ["x1", "x2", "color", "flag"]
    assert list(x["color"].cat.categories) == ["amber", "blue", "green", "red"]
    assert x["color"].isna().tolist() == [False, True, True, False, False, False]
    assert x["x1"].dtype == float and np.isnan(x["x1"].iloc[1]) and x["x1"].iloc[0] == 1.5
    assert x["flag"].astype(str).isin(["True", "False"]).all()
    pd.testing.assert_frame_equal(batch, before)


def test_prepare_features_names_missing_column(frame, toy_config):
    with pytest.raises(KeyError, match="x2"):
        prepare_features(frame.drop(columns="x2"), toy_config().columns, {})


def test_category_order_and_unseen_values_do_not_change_predictions(model, toy_frame):
    batch = toy_frame(300, seed=5)
    expected = model.predict(batch)
    reordered = batch.copy()
    reordered["color"] = pd.Categorical(
        reordered["color"], categories=["red", "green", "blue", "amber", "teal"]
    )
    reordered["flag"] = reordered["flag"].map({True: "True", False: "False"})
    np.testing.assert_array_equal(model.predict(reordered).probability, expected.probability)
    # A row's prediction does not depend on what else is in the batch (first rows only).
    np.testing.assert_array_equal(
        model.predict(batch.head(7)).probability, expected.probability[:7]
    )
    unseen, missing = batch.head(50).copy(), batch.head(50).copy()
    unseen["color"] = "teal"
    missing["color"] = None
    np.testing.assert_array_equal(
        model.predict(unseen).probability, model.predict(missing).probability
    )


def test_training_is_deterministic(frame, toy_config, tmp_path):
    a, b = train_model(frame, toy_config()), train_model(frame, toy_config())
    assert a.to_bytes() == b.to_bytes()
    a.save(str(tmp_path / "a"))
    b.save(str(tmp_path / "b"))
    for name in (MODEL_FILE, METADATA_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert train_model(frame, toy_config(seed=43)).to_bytes() != a.to_bytes()


def test_save_load_round_trip_without_pickle(model, toy_frame, tmp_path, monkeypatch):
    model.save(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MODEL_FILE, METADATA_FILE])
    raw = (tmp_path / MODEL_FILE).read_bytes()
    assert raw[:1] == b"{" and not raw.startswith(b"\x80")  # UBJSON object, not a pickle stream
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    assert meta["features"] == ["x1", "x2", "color", "flag"]
    assert meta["categories"]["color"] == ["amber", "blue", "green", "red"]
    assert meta["problem_type"] == "binary_classification" and meta["threshold"] == 0.5

    def no_pickle(*args, **kwargs):
        raise AssertionError("TrainedModel.load must not unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = TrainedModel.load(str(tmp_path))
    batch = toy_frame(200, seed=9)
    np.testing.assert_array_equal(
        loaded.predict(batch).probability, model.predict(batch).probability
    )
    np.testing.assert_array_equal(loaded.predict(batch).prediction, model.predict(batch).prediction)
    assert loaded.to_bytes() == model.to_bytes()
    assert loaded.best_iteration == model.best_iteration


def test_load_reads_mlflow_layout(model, toy_frame, tmp_path):
    """mlflow.xgboost.log_model(extra_files=[...]) keeps the metadata in extra_files/."""
    model.save(str(tmp_path))
    (tmp_path / "extra_files").mkdir()
    (tmp_path / METADATA_FILE).rename(tmp_path / "extra_files" / METADATA_FILE)
    batch = toy_frame(50, seed=4)
    np.testing.assert_array_equal(
        TrainedModel.load(str(tmp_path)).predict(batch).probability,
        model.predict(batch).probability,
    )


def test_load_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=MODEL_FILE):
        TrainedModel.load(str(tmp_path))


def test_binary_predictions_are_thresholded_ints(model, toy_frame):
    out = model.predict(toy_frame(300, seed=3))
    assert out.prediction.dtype == np.int64
    np.testing.assert_array_equal(out.prediction, (out.probability >= 0.5).astype(int))
    assert set(np.unique(out.prediction)) == {0, 1}


def test_model_learns_the_rule(model, toy_frame):
    from sklearn.metrics import roc_auc_score

    holdout = toy_frame(1000, seed=7)
    assert roc_auc_score(holdout["target"], model.predict(holdout).probability) > 0.8


def test_split_by_time_holds_out_the_latest_rows(frame):
    shuffled = frame.sample(frac=1.0, random_state=3)
    split = split_by_time(shuffled, "timestamp", 0.2)
    assert len(split.validation) == 300 and len(split.train) == 1200
    assert split.train["timestamp"].max() < split.validation["timestamp"].min()
    assert split.validation["timestamp"].is_monotonic_increasing


def test_train_model_validates_on_latest_rows(frame, toy_config):
    cfg = toy_config()
    shuffled = frame.sample(frac=1.0, random_state=4)
    model = train_model(shuffled, cfg, refit_full=False)
    assert (model.n_train, model.n_validation) == (1200, 300)
    # The early-stopping score is the logloss of the last 20% by time, whatever the row order.
    expected = train_model(frame, cfg, refit_full=False)
    assert model.to_bytes() == expected.to_bytes()
    assert model.validation_metric == "logloss"


@pytest.mark.parametrize("refit_full", [True, False])
def test_booster_keeps_best_iteration_trees(frame, toy_config, refit_full):
    model = train_model(frame, toy_config(), refit_full=refit_full)
    assert model.booster.num_boosted_rounds() == model.best_iteration + 1


def test_unlabelled_rows_are_ignored(frame, toy_config):
    partly = frame.assign(target=frame["target"].astype(float))
    partly.loc[partly.index[:100], "target"] = np.nan
    model = train_model(partly, toy_config())
    assert model.n_train + model.n_validation == len(frame) - 100


def test_regression_model(toy_frame, toy_config):
    frame = toy_frame(1200, seed=2, regression=True)
    model = train_model(frame, toy_config("regression"))
    out = model.predict(frame.head(100))
    assert out.probability is None and out.prediction.dtype == float
    assert np.corrcoef(out.prediction, frame["target"].head(100))[0, 1] > 0.8
    assert model.params["objective"] == "reg:squarederror"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(target=f["target"] * 2), "0/1"),
        (lambda f: f.assign(target=f["target"].astype(str).replace("1", "yes")), "non-numeric"),
        (lambda f: f.assign(x1=f["x1"].astype(str)), "'x1'.*columns.categorical"),
        (lambda f: f.drop(columns="x2"), "x2"),
    ],
)
def test_bad_training_data_is_named(frame, toy_config, change, message):
    with pytest.raises((TrainingError, KeyError), match=message):
        train_model(change(frame), toy_config())


def test_search_stays_within_grid(frame, toy_config):
    model = train_model(frame, toy_config(search_budget_seconds=0.5))
    assert model.search, "the base parameters are always evaluated"
    best = min(model.search, key=lambda t: t.score)
    assert model.params["max_depth"] == best.params["max_depth"]
    for trial in model.search[1:]:
        assert trial.params["max_depth"] in SEARCH_MAX_DEPTH and trial.params["eta"] in SEARCH_ETA
    assert not train_model(frame, toy_config()).search
