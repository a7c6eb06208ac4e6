"""The fast scoring path must give exactly TrainedModel.predict's output, or not be used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_support import FEATURES, make_config, make_frame

from evergreen.apps.serving.fastpath import FastScorer, build_scorer
from evergreen.apps.serving.schema import (
    PayloadError,
    RequestLimits,
    RequestTable,
    feature_specs,
    parse_body,
    validate_table,
)
from evergreen.config import parse_config
from evergreen.engines.training import TrainedModel, train_model


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    return train_model(make_frame(1500, 0), make_config(tmp_path_factory.mktemp("fast")))


def _messy(n: int, seed: int) -> pd.DataFrame:
    """Scoring rows with unseen categories and missing values in every feature."""
    frame = make_frame(n, seed)
    rng = np.random.default_rng(seed)
    frame["color"] = frame["color"].astype(object)
    frame.loc[rng.random(n) < 0.1, "color"] = "purple"
    frame.loc[rng.random(n) < 0.1, "color"] = None
    frame.loc[rng.random(n) < 0.1, "x1"] = np.nan
    frame["flag"] = frame["flag"].astype(object)
    frame.loc[rng.random(n) < 0.1, "flag"] = None
    return frame


def test_fast_path_equals_trained_model_on_raw_frames(binary_model: TrainedModel) -> None:
    frame = _messy(2000, 3)
    expected, got = binary_model.predict(frame), FastScorer.of(binary_model).predict(frame)
    np.testing.assert_array_equal(got.probability, expected.probability)
    np.testing.assert_array_equal(got.prediction, expected.prediction)


def test_fast_path_equals_trained_model_on_validated_frames(binary_model: TrainedModel) -> None:
    frame = _messy(500, 4)
    records = frame[["id", *FEATURES]].astype(object).where(frame.notna(), None)
    table = RequestTable({c: records[c].tolist() for c in records.columns}, len(frame), "test")
    specs = feature_specs(binary_model.features, binary_model.categories)
    validated = validate_table(table, specs, "id", "timestamp", pd.Timestamp("2024-01-01"))
    assert validated["flag"].dtype == "boolean"
    expected = binary_model.predict(frame)
    got = FastScorer.of(binary_model).predict(validated)
    np.testing.assert_array_equal(got.probability, expected.probability)


def test_regression_and_integer_categories(tmp_path: Path) -> None:
    frame = make_frame(1500, 1)
    frame["grade"] = np.random.default_rng(1).integers(1, 5, size=len(frame))
    frame["target"] = frame["x1"] * 2 + frame["grade"] + (frame["color"] == "red")
    config = parse_config(
        {
            "name": "reg",
            "problem_type": "regression",
            "metric": "rmse",
            "columns": {
                "target": "target",
                "features": ["x1", "x2", "color", "grade"],
                "categorical": ["color", "grade"],
            },
            "training": {"num_boost_round": 20, "nthread": 1},
            "mlflow": {"model_name": "reg"},
        }
    )
    model = train_model(frame, config)
    assert model.categories["grade"] == ["1", "2", "3", "4"]
    scoring = frame.assign(grade=frame["grade"].astype(float))  # ints that arrive as floats
    scoring.loc[:5, "grade"] = 9.0  # unseen code
    expected, got = model.predict(scoring), FastScorer.of(model).predict(scoring)
    assert got.probability is None
    np.testing.assert_array_equal(got.prediction, expected.prediction)
    assert isinstance(build_scorer(model), FastScorer)


def test_build_scorer_falls_back_when_the_fast_path_disagrees(
    binary_model: TrainedModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(build_scorer(binary_model), FastScorer)
    real = FastScorer.predict

    def off_by_a_bit(self, df):
        out = real(self, df)
        return type(out)(prediction=out.prediction, probability=out.probability + 1e-7)

    monkeypatch.setattr(FastScorer, "predict", off_by_a_bit)
    assert build_scorer(binary_model) is binary_model
    assert "disagrees" in caplog.text


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["red", "blue", "True", "false", "12", "²", "", "2024-01-01", "1e3"]),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
numbers = st.one_of(
    st.none(),
    st.floats(allow_infinity=False, width=64),
    st.integers(min_value=-(10**6), max_value=10**6),
)
valid_values = {
    "id": st.one_of(st.integers(min_value=0, max_value=2**62), st.text(min_size=1, max_size=8)),
    "timestamp": st.one_of(
        st.none(), st.sampled_from(["2024-01-01T10:00:00Z", "2024-02-03 04:05"])
    ),
    "x1": numbers,
    "x2": numbers,
    "color": st.sampled_from(["red", "blue", "green", "purple", "", None, True]),
    "flag": st.sampled_from([True, False, None, "true", "False"]),
}
# Mostly valid values (7 in 8) so that many examples get scored, the rest anything JSON holds.
row = st.fixed_dictionaries(
    {
        c: st.integers(0, 7).flatmap(lambda k, v=v: json_values if k == 0 else v)
        for c, v in valid_values.items()
    }
)


@pytest.mark.slow
def test_any_json_is_a_4xx_or_scored_like_the_model(binary_model: TrainedModel) -> None:
    specs = feature_specs(binary_model.features, binary_model.categories)
    scorer = FastScorer.of(binary_model)
    scored: list[int] = []

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(rows=st.lists(row, max_size=5))
    def check(rows: list[dict]) -> None:
        body = json.dumps({"dataframe_records": rows}).encode()  # NaN/Infinity literals too
        try:
            table = parse_body(body, "application/json", RequestLimits())
            frame = validate_table(table, specs, "id", "timestamp", pd.Timestamp("2024-01-01"))
        except PayloadError as exc:
            assert 400 <= exc.status < 500 and exc.message
            return
        scored.append(len(frame))
        expected = binary_model.predict(frame)
        np.testing.assert_array_equal(scorer.predict(frame).probability, expected.probability)

    check()
    # Guards the fuzz itself: if validation rejected everything, it would test nothing.
    assert len(scored) >= 30, len(scored)


def test_the_direct_predictor_answers_each_matrix_from_any_thread(
    binary_model: TrainedModel,
) -> None:
    """The direct call reuses one proxy DMatrix per thread: consecutive matrices of other
    shapes, and calls from several threads at once, each get their own rows' predictions."""
    from concurrent.futures import ThreadPoolExecutor

    from evergreen.apps.serving.fastpath import matrix_predictor

    predict = matrix_predictor(binary_model.booster)
    assert predict.__name__ == "predict"  # the direct call, not the public fallback
    rng = np.random.default_rng(5)
    matrices = [rng.normal(size=(n, 4)) for n in (1, 37, 2, 500, 1, 64) * 5]
    expected = [binary_model.booster.inplace_predict(m) for m in matrices]
    assert all(np.array_equal(predict(m), e) for m, e in zip(matrices, expected, strict=True))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(predict, matrices))
    assert all(np.array_equal(a, e) for a, e in zip(answers, expected, strict=True))
