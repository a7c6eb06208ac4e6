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
from tests.rows import episode_retrain, frame_reader


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


def test_each_cross_fit_probe_leaves_out_its_fold_of_the_post_change_rows(episode, toy_config) -> None:
    frame, change = episode
    cfg = toy_config()
    holdout, model = episode_retrain(frame, change, cfg)
    stamps = frame["timestamp"]
    post = (stamps >= change).to_numpy()
    plan = holdout.cross_fit
    assert plan is not None and len(plan.folds) == cfg.gate.cross_fit_folds == 4
    left_out = np.array([f.left_out for f in plan.folds])
    assert (left_out.sum(axis=0) == post).all()  # every post-change row in exactly one fold
    assert [int(f.sum()) for f in left_out] == [300, 300, 300, 300]
    assert all(a.until < b.since for a, b in zip(plan.folds, plan.folds[1:], strict=False))  # in time order
    assert plan.folds[0].since == pd.Timestamp(change, tz="UTC")
    assert (holdout.roles[post & ~left_out[0] & ~left_out[1]] == retraining.EVALUATE).all()  # the newest half is the hold-out
    assert model.cross_fit is not None and model.probe is not None and len(model.cross_fit.folds) == 4
    params = {k: v for k, v in model.params.items() if k != "refit_full"}
    for fold_plan, fold in zip(plan.folds, model.cross_fit.folds, strict=True):
        # weighed as the final refit weighs the rows it keeps: its post-change rows carry
        # `retrain.post_change_weight` of the weight
        kept_post = post & ~fold_plan.left_out
        share = fold_plan.weights[kept_post].sum() / fold_plan.weights[~fold_plan.left_out].sum()
        assert share == pytest.approx(cfg.retrain.post_change_weight)
        # the probe is the recipe (same rounds, categories, params) on exactly the kept rows
        roles = np.where(fold_plan.left_out, training.OTHER, holdout.roles)
        kept = training._quantile_matrix(
            frame_reader(frame), roles, cfg, model.categories, (training.FIT, training.VALIDATE, retraining.EVALUATE),
            weights=fold_plan.weights,
        )
        expected = training.xgb.train(params, kept, num_boost_round=model.best_iteration + 1, verbose_eval=False)
        assert bytes(fold.booster.save_raw(raw_format="ubj")) == bytes(expected.save_raw(raw_format="ubj"))
        assert (fold.since, fold.until) == (fold_plan.since, fold_plan.until)


def test_the_cross_fitted_view_scores_each_row_with_a_probe_that_did_not_train_on_it(episode, toy_config, tmp_path) -> None:
    frame, change = episode
    cfg = toy_config()
    holdout, model = episode_retrain(frame, change, cfg)
    gated = model.cross_fitted()
    routed = gated.predict(frame).probability
    probe_only = model.held_out()
    assert probe_only.cross_fit is None and not probe_only.routed  # the evaluation and the reference: the probe alone
    post = (frame["timestamp"] >= change).to_numpy()
    assert np.array_equal(routed[~post], probe_only.predict(frame[~post]).probability)
    for plan, fold in zip(holdout.cross_fit.folds, model.cross_fit.folds, strict=True):
        alone = TrainedModel(**{**model.__dict__, "booster": fold.booster, "probe": None, "cross_fit": None})
        assert np.array_equal(routed[plan.left_out], alone.predict(frame[plan.left_out]).probability)
    # the served model and the probe never route, whatever the frame holds
    no_time = frame.drop(columns="timestamp")
    assert np.array_equal(model.predict(frame).probability, model.predict(no_time).probability)
    assert np.array_equal(probe_only.predict(frame).probability, probe_only.predict(no_time).probability)
    with pytest.raises(ValueError, match="timestamp"):
        gated.predict(no_time)
    from sklearn.metrics import roc_auc_score

    y = frame["target"].to_numpy()
    # out of fold is harder than in sample: the final model trained on these rows
    assert roc_auc_score(y[post], routed[post]) < roc_auc_score(y[post], model.predict(frame[post]).probability)

    model.save(str(tmp_path / "m"))
    meta = json.loads((tmp_path / "m" / METADATA_FILE).read_text())
    assert meta["cross_fit"]["column"] == "timestamp" and len(meta["cross_fit"]["folds"]) == 4
    assert all((tmp_path / "m" / CROSS_FIT_FILE.format(i)).exists() for i in range(4))
    loaded = TrainedModel.load(str(tmp_path / "m"))
    assert loaded.unseen_since() == model.unseen_since() == pd.Timestamp(change, tz="UTC")
    assert np.array_equal(loaded.cross_fitted().predict(frame).probability, routed)
    assert np.array_equal(loaded.predict(frame).probability, model.predict(frame).probability)


def test_no_cross_fit_outside_an_episode_without_the_refit_or_folds(episode, toy_config) -> None:
    frame, change = episode
    stamps = frame["timestamp"]

    def plan(cfg, change_point):
        return retraining.hold_out_rows(stamps, lambda p: frame.iloc[p], cfg, change_point).cross_fit

    assert plan(toy_config(), None) is None
    assert plan(toy_config(refit_on_holdout=False), change) is None
    from evergreen.config import parse_config

    no_folds = parse_config({**toy_config().model_dump(mode="json"), "gate": {"cross_fit_folds": 0}})
    assert plan(no_folds, change) is None
    # few post-change rows: fewer folds, at least MIN_FOLD_ROWS each
    assert len(plan(toy_config(), stamps.iloc[-250]).folds) == 2
    assert plan(toy_config(), stamps.iloc[-150]) is None
    holdout, model = episode_retrain(frame, None, toy_config())
    assert model.cross_fit is None and model.unseen_since() is None and model.cross_fitted().routed is False


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
