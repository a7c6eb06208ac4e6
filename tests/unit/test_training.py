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
from tests.rows import frame_reader


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


# ----------------------------------------------------------------------------- in chunks


def _roles(frame: pd.DataFrame, cfg) -> np.ndarray:
    from evergreen.loop.retraining import split_rows

    return split_rows(frame["timestamp"], cfg)


def test_training_in_chunks_matches_training_in_memory_on_the_bench_data() -> None:
    """Same rows, same settings: the DataIter/QuantileDMatrix path scores the held-out rows
    as the DMatrix path does (AUC within 0.002), on the benchmark's data and config."""
    from sklearn.metrics import roc_auc_score

    from bench.common import bench_config, synthetic_frame
    from evergreen.engines.training import train_model_chunks
    from evergreen.loop.retraining import EVALUATE, hold_out_recent

    cfg = bench_config("/tmp/unused", 60_000)
    frame = synthetic_frame(60_000, 11, "2024-01-01", days=3)
    holdout = hold_out_recent(frame, cfg)
    in_memory = train_model(holdout.train, cfg)
    roles = _roles(frame, cfg)
    chunked = train_model_chunks(frame_reader(frame, 7_000), roles, cfg)
    evaluation = frame[roles == EVALUATE]
    assert len(evaluation) == len(holdout.evaluation)
    auc = [roc_auc_score(evaluation["target"], m.predict(evaluation).probability) for m in (in_memory, chunked)]
    assert abs(auc[0] - auc[1]) <= 0.002, auc
    assert chunked.categories == in_memory.categories
    assert (chunked.n_train, chunked.n_validation) == (in_memory.n_train, in_memory.n_validation)
    assert chunked.params["refit_full"] and chunked.best_iteration > 0


@pytest.mark.parametrize("size", [97, 400, 5000])
def test_training_in_chunks_is_deterministic_and_independent_of_nothing_but_the_rows(frame, toy_config, size) -> None:
    from evergreen.engines.training import train_model_chunks

    cfg = toy_config()
    roles = _roles(frame, cfg)
    a = train_model_chunks(frame_reader(frame, size), roles, cfg)
    b = train_model_chunks(frame_reader(frame, size), roles, cfg)
    assert a.to_bytes() == b.to_bytes()
    assert a.categories == fit_categories(frame[roles != 2], cfg.columns)


def test_training_in_chunks_fixes_categories_from_the_training_rows_only(frame, toy_config) -> None:
    """A category seen only in held-out rows is unknown to the model (as in `train_model`)."""
    from evergreen.engines.training import train_model_chunks

    cfg = toy_config()
    roles = _roles(frame, cfg)
    frame = frame.copy()
    frame.loc[roles == 2, "color"] = "violet"
    model = train_model_chunks(frame_reader(frame, 300), roles, cfg)
    assert "violet" not in model.categories["color"]
    assert model.predict(frame[roles == 2]).probability.shape == ((roles == 2).sum(),)


def test_training_in_chunks_multiclass_and_regression(toy_frame, toy_config) -> None:
    from evergreen.engines.training import train_model_chunks

    reg = toy_config("regression")
    frame = toy_frame(1200, seed=4, regression=True)
    model = train_model_chunks(frame_reader(frame, 250), _roles(frame, reg), reg)
    assert model.problem_type == "regression" and model.predict(frame.head(5)).probability is None

    from tests.unit.test_multiclass import make_frame, mc_config

    mc = mc_config()
    frame = make_frame(1500, seed=2)
    model = train_model_chunks(frame_reader(frame, 333), _roles(frame, mc), mc)
    assert model.classes == train_model(frame, mc).classes
    assert model.predict(frame.head(7)).probability.shape == (7, len(mc.classes))


def test_training_in_chunks_checks_targets_over_all_chunks(frame, toy_config) -> None:
    from evergreen.engines.training import train_model_chunks

    cfg = toy_config()
    bad = frame.assign(target=frame["target"].where(frame.index != 700, 3))
    with pytest.raises(TrainingError, match="0/1"):
        train_model_chunks(frame_reader(bad, 200), _roles(bad, cfg), cfg)
    with pytest.raises(TrainingError, match="more rows"):
        train_model_chunks(frame_reader(frame, 200), _roles(frame, cfg)[:100], cfg)


def test_categories_from_text_or_categoricals_encode_as_the_strings_do(toy_config) -> None:
    """The dictionary-encoded fast path of `prepare_features` gives the same categories."""
    from evergreen.engines.training import _as_categorical, _as_category_strings

    dtype = pd.CategoricalDtype(["1", "a", "b", "True"])
    columns = [
        pd.Series(["a", "b", None, "z", "a"], dtype="str"),
        pd.Series(pd.Categorical(["a", None, "q", "b"])),
        pd.Series(pd.Categorical([1.0, 2.0, None])),
        pd.Series(pd.Categorical([True, False])),
        pd.Series(["a", "1"], dtype=object),
    ]
    for col in columns:
        col.index = col.index * 3 + 1
        expected = pd.Series(pd.Categorical(_as_category_strings(col), dtype=dtype), index=col.index)
        pd.testing.assert_series_equal(_as_categorical(col, dtype), expected, check_names=False)


def test_the_final_model_is_refit_on_the_hold_out_and_keeps_its_probe(frame, toy_config, tmp_path) -> None:
    """`final` roles: the model is refit on every row, the evaluation hold-out included, for
    the rounds early stopping chose; the fit without the hold-out is kept as its probe,
    identical to the model trained without `final`, and survives save/load."""
    from evergreen.engines.training import FIT, PROBE_FILE, VALIDATE, train_model_chunks
    from evergreen.loop.retraining import EVALUATE

    cfg = toy_config()
    roles = _roles(frame, cfg)
    plain = train_model_chunks(frame_reader(frame, 400), roles, cfg)
    final = train_model_chunks(frame_reader(frame, 400), roles, cfg, final=(FIT, VALIDATE, EVALUATE))
    assert plain.probe is None and plain.held_out() is plain
    assert final.probe is not None and final.best_iteration == plain.best_iteration
    assert final.held_out().to_bytes() == plain.to_bytes()  # the probe is the plain model
    assert final.to_bytes() != plain.to_bytes()  # the final one learned the hold-out too
    held = frame[roles == EVALUATE]
    assert not np.allclose(final.predict(held).probability, plain.predict(held).probability)
    final.save(str(tmp_path / "m"))
    assert (tmp_path / "m" / PROBE_FILE).exists() and json.loads((tmp_path / "m" / METADATA_FILE).read_text())["probe"]
    loaded = TrainedModel.load(str(tmp_path / "m"))
    assert loaded.to_bytes() == final.to_bytes() and loaded.held_out().to_bytes() == plain.to_bytes()
    plain.save(str(tmp_path / "p"))
    assert not (tmp_path / "p" / PROBE_FILE).exists() and TrainedModel.load(str(tmp_path / "p")).probe is None
    # nothing to add (no row outside FIT and VALIDATE): no probe
    assert train_model_chunks(frame_reader(frame, 400), np.where(roles == EVALUATE, FIT, roles), cfg, final=(FIT, VALIDATE, EVALUATE)).probe is None


def test_refit_on_more_rows_keeps_the_rounds_categories_and_the_probe(frame, toy_config) -> None:
    """The in-memory refit (the benchmarks' baselines) works as `train_model_chunks(final=...)`."""
    from evergreen.engines.training import refit_on

    cfg = toy_config()
    split = split_by_time(frame, "timestamp", 0.2)
    first = train_model(split.train, cfg)
    final = refit_on(first, frame, cfg)
    assert final.held_out().to_bytes() == first.to_bytes() and final.best_iteration == first.best_iteration
    assert final.categories == first.categories
    assert final.booster.num_boosted_rounds() == first.booster.num_boosted_rounds()
    assert not np.allclose(final.predict(split.validation).probability, first.predict(split.validation).probability)
