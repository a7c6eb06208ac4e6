"""The cross-fit probe of an alert episode's retrain: which rows it leaves out, how the
held-out view scores each row with a probe that never trained on it, that it survives
save/load, and which rows the gate may then judge on (`promote.evidence_span`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from evergreen.engines import training
from evergreen.engines.training import CROSS_FIT_FILE, METADATA_FILE, TrainedModel
from evergreen.loop import retraining
from evergreen.loop.promote import evidence_span


def _reader(frame: pd.DataFrame, size: int = 500):
    def read(columns, needed):
        for start in range(0, len(frame), size):
            if needed is None or needed[start : start + size].any():
                yield start, frame[columns].iloc[start : start + size]

    return read


@pytest.fixture
def episode(toy_frame):
    """3,000 rows, a change at row 1,800 (x1's effect reverses after it)."""
    frame = toy_frame(3000, seed=4)
    change = frame["timestamp"].iloc[1800]
    post = (frame["timestamp"] >= change).to_numpy()
    rng = np.random.default_rng(4)
    flipped = (rng.random(len(frame)) < 1 / (1 + np.exp(2.0 * frame["x1"] - 1.5 * frame["x2"]))).astype(int)
    frame["target"] = np.where(post, flipped, frame["target"])
    return frame, change


def _train(frame, change, cfg):
    def take(positions):
        return frame.iloc[positions].reset_index(drop=True)

    holdout = retraining.hold_out_rows(frame["timestamp"], take, cfg, change)
    return holdout, retraining.train_rows(_reader(frame), holdout, cfg)


def test_the_cross_fit_probe_leaves_out_the_post_change_training_rows(episode, toy_config) -> None:
    frame, change = episode
    cfg = toy_config()
    holdout, model = _train(frame, change, cfg)
    stamps = frame["timestamp"]
    trained = holdout.roles != retraining.EVALUATE
    fold_one = ((stamps >= change) & trained).to_numpy()
    assert fold_one.sum() == 600 and (holdout.roles[(stamps >= change).to_numpy() & ~fold_one] == retraining.EVALUATE).all()
    plan = holdout.cross_fit
    assert plan is not None and (plan.left_out == fold_one).all()
    assert plan.since == pd.Timestamp(change, tz="UTC") and plan.until == pd.Timestamp(holdout.train_end, tz="UTC")
    # weighed as the final refit weighs the rows it keeps: post-change rows (the hold-out
    # here) carry `retrain.post_change_weight` of the weight
    kept_post = (stamps >= change).to_numpy() & ~fold_one
    share = plan.weights[kept_post].sum() / plan.weights[~fold_one].sum()
    assert share == pytest.approx(cfg.retrain.post_change_weight)

    # the probe is the recipe (same rounds, categories, params) on exactly the kept rows
    assert model.cross_fit is not None and model.probe is not None
    params = {k: v for k, v in model.params.items() if k != "refit_full"}
    roles = np.where(fold_one, training.OTHER, holdout.roles)
    kept = training._quantile_matrix(
        _reader(frame), roles, cfg, model.categories, (training.FIT, training.VALIDATE, retraining.EVALUATE),
        weights=plan.weights,
    )
    expected = training.xgb.train(params, kept, num_boost_round=model.best_iteration + 1, verbose_eval=False)
    assert bytes(model.cross_fit.booster.save_raw(raw_format="ubj")) == bytes(expected.save_raw(raw_format="ubj"))


def test_the_held_out_view_scores_each_row_with_a_probe_that_did_not_train_on_it(episode, toy_config, tmp_path) -> None:
    frame, change = episode
    cfg = toy_config()
    holdout, model = _train(frame, change, cfg)
    fold_one = holdout.cross_fit.left_out
    held = model.held_out()
    probe_only = TrainedModel(**{**model.__dict__, "booster": model.probe, "probe": None, "cross_fit": None})
    fold_only = TrainedModel(**{**model.__dict__, "booster": model.cross_fit.booster, "probe": None, "cross_fit": None})
    routed = held.predict(frame).probability
    assert np.array_equal(routed[fold_one], fold_only.predict(frame[fold_one]).probability)
    assert np.array_equal(routed[~fold_one], probe_only.predict(frame[~fold_one]).probability)
    # the served model never routes, whatever the frame holds
    assert np.array_equal(model.predict(frame).probability, model.predict(frame.drop(columns="timestamp")).probability)
    with pytest.raises(ValueError, match="timestamp"):
        held.predict(frame.drop(columns="timestamp"))
    # on the post-change rows the probes saw least, each is better than the other probe (it saw them)
    from sklearn.metrics import roc_auc_score

    post = (frame["timestamp"] >= change).to_numpy()
    y = frame["target"].to_numpy()
    assert roc_auc_score(y[post], routed[post]) < roc_auc_score(y[post], model.predict(frame[post]).probability)

    model.save(str(tmp_path / "m"))
    meta = json.loads((tmp_path / "m" / METADATA_FILE).read_text())
    assert (tmp_path / "m" / CROSS_FIT_FILE).exists() and meta["cross_fit"]["column"] == "timestamp"
    loaded = TrainedModel.load(str(tmp_path / "m"))
    assert loaded.unseen_since() == model.unseen_since() == pd.Timestamp(change, tz="UTC")
    assert np.array_equal(loaded.held_out().predict(frame).probability, routed)
    assert np.array_equal(loaded.predict(frame).probability, model.predict(frame).probability)


def test_no_cross_fit_outside_an_episode_or_without_the_refit(episode, toy_config) -> None:
    frame, change = episode
    stamps = frame["timestamp"]
    assert retraining.hold_out_rows(stamps, lambda p: frame.iloc[p], toy_config()).cross_fit is None
    assert retraining.hold_out_rows(stamps, lambda p: frame.iloc[p], toy_config(refit_on_holdout=False), change).cross_fit is None
    # every post-change row held out (a change in the last rows): nothing to cross-fit
    late = stamps.iloc[-100]
    assert retraining.hold_out_rows(stamps, lambda p: frame.iloc[p], toy_config(), late).cross_fit is None
    holdout, model = _train(frame, None, toy_config())
    assert model.cross_fit is None and model.unseen_since() is None and model.held_out().routed is False


def _loaded(unseen_since=None, train_end=None):
    tags = {"evergreen.train_end": train_end} if train_end else {}
    return SimpleNamespace(
        model=SimpleNamespace(unseen_since=lambda: None if unseen_since is None else pd.Timestamp(unseen_since)),
        version=SimpleNamespace(tags=tags),
    )


def test_the_gate_judges_on_rows_no_held_out_view_trained_on() -> None:
    cross_fit = _loaded("2024-01-10", "2024-01-20")
    assert evidence_span([cross_fit, _loaded(None, "2024-01-05")]) == (
        "2024-01-05T00:00:00+00:00", "2024-01-10T00:00:00+00:00",
    )
    # a champion that trained past the change point moves the start after its rows
    assert evidence_span([cross_fit, _loaded(None, "2024-01-12")])[0] == "2024-01-12T00:00:00+00:00"
    assert evidence_span([_loaded(None, "2024-01-20"), None]) == ("2024-01-20T00:00:00+00:00", None)
    assert evidence_span([cross_fit, _loaded("2024-01-03", "2024-01-09")]) == (None, "2024-01-10T00:00:00+00:00")
