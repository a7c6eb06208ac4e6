"""Drift injection: only rows from `start` on change, in the intended direction, seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evergreen.simulation.inject import (
    InjectionError,
    corrupt_column,
    drift_concept,
    inject_drift,
    shift_covariates,
    shift_covariates_gradually,
    shift_prior,
)

START = 1200


@pytest.fixture
def frame(toy_frame):
    return toy_frame(3000, seed=11)


@pytest.fixture
def columns(toy_config):
    return toy_config().columns


KINDS = [
    ("covariate", {"features": ["x1", "color"]}),
    ("covariate", {"features": ["x1", "flag"], "method": "additive"}),
    ("gradual_covariate", {"features": ["x1", "color"], "ramp_rows": 900, "steps": 5}),
    ("gradual_covariate", {"features": ["x2", "flag"], "method": "additive", "ramp_rows": 900}),
    ("concept", {}),
    ("prior", {}),
    ("bad_data", {"bad_data_kind": "nulls"}),
    ("bad_data", {"bad_data_kind": "out_of_range"}),
    ("bad_data", {"bad_data_kind": "strings"}),
    ("bad_data", {"bad_data_kind": "unseen_category"}),
]


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_only_rows_from_start_change_and_input_is_kept(frame, columns, kind, params):
    before = frame.copy()
    params = dict(params)
    features = params.pop("features", None)
    result = inject_drift(
        frame, columns, "binary_classification", kind, START, features=features, seed=1, **params
    )
    out = result.frame
    pd.testing.assert_frame_equal(frame, before)
    assert out.shape == frame.shape and list(out.columns) == list(frame.columns)
    assert out.index.equals(frame.index)
    pd.testing.assert_frame_equal(out.iloc[:START], frame.iloc[:START], check_dtype=False)
    assert not out.iloc[START:].equals(frame.iloc[START:])
    assert result.description.kind == kind and result.description.start == START
    assert result.description.rows_affected > 0
    # ids and timestamps never move: labels still join, batches still fall on their days.
    pd.testing.assert_series_equal(out["id"], frame["id"])
    pd.testing.assert_series_equal(out["timestamp"], frame["timestamp"])


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_injection_is_seeded(frame, columns, kind, params):
    params = dict(params)
    features = params.pop("features", None)

    def run(seed):
        return inject_drift(
            frame,
            columns,
            "binary_classification",
            kind,
            START,
            features=features,
            seed=seed,
            **params,
        ).frame

    pd.testing.assert_frame_equal(run(3), run(3))
    if (
        kind != "bad_data" or params["bad_data_kind"] != "strings"
    ):  # strings hits every row: no randomness
        assert not run(3).equals(run(4))


def test_covariate_resampling_shifts_features_and_keeps_rows_whole(frame, columns):
    out = shift_covariates(frame, columns, ["x1", "color"], START, strength=1.0, seed=0).frame
    old, new = frame.iloc[START:], out.iloc[START:]
    assert new["x1"].mean() - old["x1"].mean() > 0.5 * old["x1"].std()
    # The rarest colour becomes much more common, the most common one rarer.
    assert (new["color"] == "amber").mean() > 2 * (old["color"] == "amber").mean()
    assert (new["color"] == "red").mean() < (old["color"] == "red").mean()
    # Every drifted row is a real row of the stream (features and label together).
    content = ["x1", "x2", "color", "flag", "target"]
    originals = set(map(tuple, old[content].itertuples(index=False)))
    assert set(map(tuple, new[content].itertuples(index=False))) <= originals


def test_covariate_additive_moves_numeric_by_k_std(frame, columns):
    result = shift_covariates(frame, columns, ["x2"], START, method="additive", strength=2.0)
    out = result.frame
    expected = frame["x2"].iloc[START:] + 2.0 * frame["x2"].iloc[:START].std()
    np.testing.assert_allclose(out["x2"].iloc[START:], expected)
    pd.testing.assert_series_equal(out["target"], frame["target"])
    assert result.description.effect["x2"]["shift_in_std"] == pytest.approx(2.0, rel=0.1)


def test_gradual_additive_shift_ramps_up_then_holds(frame, columns):
    ramp = 600
    result = shift_covariates_gradually(
        frame, columns, ["x2"], START, method="additive", strength=2.0, ramp_rows=ramp
    )
    moved = (result.frame["x2"] - frame["x2"]).iloc[START:].to_numpy()
    std = frame["x2"].iloc[:START].std()
    k = np.arange(len(moved))
    np.testing.assert_allclose(moved, 2.0 * std * np.minimum(1.0, (k + 1) / ramp))
    pd.testing.assert_series_equal(result.frame["target"], frame["target"])
    assert result.description.kind == "gradual_covariate"
    assert result.description.params["ramp_rows"] == ramp


def test_gradual_resampling_shifts_more_over_time(frame, columns):
    out = shift_covariates_gradually(
        frame, columns, ["x1"], START, strength=2.0, ramp_rows=1500, steps=5, seed=0
    ).frame
    segment = 300
    means = [out["x1"].iloc[START + j * segment : START + (j + 1) * segment].mean() for j in range(5)]
    assert means[-1] - means[0] > 0.8 * frame["x1"].std()
    assert all(b > a - 0.15 for a, b in zip(means, means[1:], strict=False))
    # Rows after the ramp carry the full strength, like an abrupt shift of the same size.
    full = out["x1"].iloc[START + 1500 :].mean() - frame["x1"].iloc[START + 1500 :].mean()
    assert full > 1.2 * frame["x1"].std()


def test_concept_drift_changes_labels_not_features_and_lowers_auc(frame, columns):
    result = drift_concept(frame, columns, "binary_classification", START, feature="x2", seed=0)
    out = result.frame
    features = ["x1", "x2", "color", "flag"]
    pd.testing.assert_frame_equal(out[features], frame[features])
    changed = out["target"] != frame["target"]
    assert changed.iloc[START:].any() and not changed.iloc[:START].any()
    threshold = frame["x2"].iloc[START:].quantile(0.8)
    assert (frame.loc[changed, "x2"] > threshold).all()
    assert out["target"].dtype == frame["target"].dtype
    tail = slice(START, None)
    auc_before = roc_auc_score(frame["target"].iloc[tail], frame["p_true"].iloc[tail])
    auc_after = roc_auc_score(out["target"].iloc[tail], frame["p_true"].iloc[tail])
    assert auc_before - auc_after >= 0.05
    assert result.description.effect["labels_flipped"] == int(changed.sum())


def test_concept_drift_regression_moves_target_in_region(toy_frame, columns):
    frame = toy_frame(2000, seed=2, regression=True)
    out = drift_concept(frame, columns, "regression", START, feature="x1", target_shift=1.0).frame
    delta = (out["target"] - frame["target"]).iloc[START:]
    in_region = frame["x1"].iloc[START:] > frame["x1"].iloc[START:].quantile(0.8)
    np.testing.assert_allclose(delta[in_region], frame["target"].iloc[START:].std(ddof=0))
    assert (delta[~in_region] == 0).all()


@pytest.mark.parametrize("rate", [0.2, 0.8])
def test_prior_shift_moves_positive_rate(frame, columns, rate):
    out = shift_prior(
        frame, columns, "binary_classification", START, target_rate=rate, seed=0
    ).frame
    assert out["target"].iloc[START:].mean() == pytest.approx(rate, abs=0.03)
    assert frame["target"].iloc[START:].mean() == pytest.approx(0.5, abs=0.1)


def test_prior_shift_regression_moves_mean(toy_frame, columns):
    frame = toy_frame(2000, seed=3, regression=True)
    out = shift_prior(frame, columns, "regression", START, strength=0.5, seed=0).frame
    old = frame["target"].iloc[START:]
    assert out["target"].iloc[START:].mean() - old.mean() > 0.3 * old.std()


@pytest.mark.parametrize(
    ("column", "kind", "check"),
    [
        ("x1", "nulls", lambda new, old: new.isna().mean() == pytest.approx(0.6, abs=0.05)),
        ("flag", "nulls", lambda new, old: new.isna().mean() == pytest.approx(0.6, abs=0.05)),
        ("color", "nulls", lambda new, old: new.isna().mean() == pytest.approx(0.6, abs=0.05)),
        (
            "x1",
            "out_of_range",
            lambda new, old: (new > old.max()).mean() == pytest.approx(0.3, abs=0.05),
        ),
        ("x1", "strings", lambda new, old: new.map(type).eq(str).all()),
        ("color", "unseen_category", lambda new, old: (~new.isin(old.unique())).mean() > 0.2),
    ],
)
def test_bad_data_kinds(frame, column, kind, check):
    out = corrupt_column(frame, column, START, kind=kind, seed=0).frame
    assert check(out[column].iloc[START:], frame[column])
    other = [c for c in frame.columns if c != column]
    pd.testing.assert_frame_equal(out[other], frame[other])


@pytest.mark.parametrize(
    ("column", "kind"), [("color", "out_of_range"), ("color", "strings"), ("x1", "unseen_category")]
)
def test_bad_data_kind_must_fit_column(frame, column, kind):
    with pytest.raises(InjectionError, match=column):
        corrupt_column(frame, column, START, kind=kind)


def test_none_returns_an_equal_copy(frame, columns):
    result = inject_drift(frame, columns, "binary_classification", "none", START)
    pd.testing.assert_frame_equal(result.frame, frame)
    assert result.frame is not frame and result.description.rows_affected == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f, c: inject_drift(f, c, "binary_classification", "tsunami", 0), "tsunami"),
        (lambda f, c: shift_covariates(f, c, ["p_true"], 0), "p_true"),
        (lambda f, c: shift_covariates(f, c, ["x1"], 99999), "99999"),
    ],
)
def test_bad_requests_are_named(frame, columns, call, message):
    with pytest.raises(InjectionError, match=message):
        call(frame, columns)


def test_description_is_plain_json(frame, columns):
    import json

    result = shift_covariates(frame, columns, ["x1", "color"], START)
    assert json.loads(json.dumps(result.description.to_dict()))["features"] == ["x1", "color"]
