"""`evergreen init`'s inference on small frames, and a user's own model taken in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evergreen.apps import onboard
from evergreen.apps.onboard import InitError


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + 1000,
            "scored_at": pd.date_range("2024-01-01", periods=n, freq="h"),
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50_000, 10_000, n),
            "city": rng.choice(["north", "south", "east"], n),
            "member": rng.choice([True, False], n),
            "comment": [f"free text {i}" for i in range(n)],
            "constant": 1,
            "empty": np.nan,
            "churned": rng.integers(0, 2, n),
        }
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 1, 0], "binary_classification"),
        ([True, False, True, True], "binary_classification"),
        (["yes", "no", "no", "yes"], "binary_classification"),
        (["a", "b", "c", "a"], "multiclass_classification"),
        ([0, 1, 2, 3, 2, 1] * 20, "multiclass_classification"),
        (np.linspace(0, 1, 200), "regression"),
        (list(range(200)), "regression"),  # many whole numbers: a count, not classes
    ],
)
def test_problem_type_follows_the_target(values, expected: str) -> None:  # noqa: ANN001
    kind, why = onboard.infer_problem_type(pd.Series(values, name="y"))
    assert kind == expected and why


def test_roles_are_inferred_and_text_identifiers_left_out() -> None:
    frame = _frame()
    assert onboard.infer_id(frame, {"churned"})[0] == "customer_id"
    assert onboard.infer_timestamp(frame, {"churned"})[0] == "scored_at"
    feats, cats, left_out = onboard.infer_features(frame, {"customer_id", "scored_at", "churned"})
    assert feats == ["age", "income", "city", "member"]
    assert cats == ["city", "member"]
    assert set(left_out) == {"comment", "constant", "empty"}
    assert "free text" in left_out["comment"] or "identifier" in left_out["comment"]


def test_dates_as_text_are_a_timestamp_and_missing_roles_say_what_to_pass() -> None:
    frame = _frame().assign(scored_at=lambda f: f["scored_at"].astype(str))
    assert onboard.infer_timestamp(frame, set())[0] == "scored_at"
    with pytest.raises(InitError, match="--timestamp"):
        onboard.infer_timestamp(frame.drop(columns="scored_at"), set())
    with pytest.raises(InitError, match="--id"):
        onboard.infer_id(frame[["age", "city"]].assign(age=1), set())


def test_a_feature_that_leaks_the_label_is_named() -> None:
    frame = _frame()
    frame["refund_issued"] = frame["churned"]  # known only after the outcome
    leaks = onboard.leaking_features(frame, "churned", ["age", "income", "city", "refund_issued"], "binary_classification")
    assert list(leaks) == ["refund_issued"]


def test_serving_columns_are_found_per_problem_type() -> None:
    frame = _frame().assign(y_pred=1, y_pred_proba=0.3, model_version="7")
    found = onboard.find_serving_columns(frame, "binary_classification", [], set())
    assert found == {"prediction": "y_pred", "probability": "y_pred_proba", "model_version": "model_version"}
    multi = _frame().assign(y_pred="a", y_pred_proba_a=0.2, y_pred_proba_b=0.8)
    assert onboard.find_serving_columns(multi, "multiclass_classification", ["a", "b"], set())["probability"] == {
        "a": "y_pred_proba_a", "b": "y_pred_proba_b"
    }
    assert onboard.find_serving_columns(_frame(), "binary_classification", [], set()) == {}


def _write_stream(root, weeks: int = 6, delay_weeks: int = 2):  # noqa: ANN001, ANN202
    frame = _frame(weeks * 50 + 400)
    ref, prod = frame.iloc[:400], frame.iloc[400:].reset_index(drop=True)
    (root / "batches").mkdir(parents=True)
    (root / "labels").mkdir()
    ref.to_parquet(root / "reference.parquet")
    for w in range(weeks):
        day = pd.Timestamp("2024-03-04") + pd.Timedelta(weeks=w)
        rows = prod.iloc[w * 50 : (w + 1) * 50].assign(scored_at=day + pd.to_timedelta(np.arange(50), unit="h"))
        rows.drop(columns="churned").to_parquet(root / "batches" / f"{day:%Y-%m-%d}.parquet")
        delivered = day + pd.Timedelta(weeks=delay_weeks)
        rows[["customer_id", "churned"]].to_parquet(root / "labels" / f"{delivered:%Y-%m-%d}.parquet")
    return root


def test_a_config_is_inferred_from_the_folders_and_loads(tmp_path) -> None:  # noqa: ANN001
    from evergreen.config import load_config

    root = _write_stream(tmp_path / "data")
    inference = onboard.infer_config(
        str(root / "reference.parquet"), "churned", batches=str(root / "batches"), labels=str(root / "labels"), name="churn"
    )
    onboard.validate_inference(inference)
    assert inference.shape.rows_per_batch == 50 and inference.shape.cadence == pd.Timedelta(weeks=1)
    assert inference.config["data"]["label_delay_days"] == 14
    text = onboard.render_config(inference)
    assert "# named like an id" in text and "(change: --id COLUMN)" in text
    (tmp_path / "churn.yaml").write_text(text)
    cfg = load_config(tmp_path / "churn.yaml")
    assert cfg.name == "churn" and cfg.columns.id == "customer_id" and cfg.columns.timestamp == "scored_at"
    assert cfg.columns.categorical == ["city", "member"] and cfg.data.rows_per_batch == 50
    assert any("scores each batch with the champion" in n for n in inference.notes)


def test_batches_named_out_of_time_order_are_refused(tmp_path) -> None:  # noqa: ANN001
    root = _write_stream(tmp_path / "data", weeks=3)
    files = sorted((root / "batches").iterdir())
    files[0].rename(root / "batches" / "z-last.parquet")  # sorts last, holds the oldest rows
    with pytest.raises(InitError, match="time order"):
        onboard.measure_stream(str(root / "batches"), None, "customer_id", "scored_at")


@pytest.mark.slow
def test_a_users_own_model_file_is_taken_in(tmp_path) -> None:  # noqa: ANN001
    import xgboost as xgb

    from evergreen.config import parse_config
    from evergreen.engines.model_import import ModelImportError, import_model

    frame = _frame(600)
    features = ["age", "income", "city"]
    x = frame[features].assign(city=lambda f: f["city"].astype("category"))
    booster = xgb.train({"objective": "binary:logistic", "seed": 0}, xgb.DMatrix(x, frame["churned"], enable_categorical=True), 5)
    path = tmp_path / "model.ubj"
    booster.save_model(path)
    raw = {
        "name": "churn", "columns": {"id": "customer_id", "timestamp": "scored_at", "target": "churned",
                                     "features": features, "categorical": ["city"]},
        "mlflow": {"model_name": "churn"},
    }
    model = import_model(str(path), parse_config(raw), frame)
    assert model.categories["city"] == ["east", "north", "south"]
    expected = booster.predict(xgb.DMatrix(x, enable_categorical=True))
    assert np.allclose(model.predict(frame).probability, expected)
    with pytest.raises(ModelImportError, match="columns.features"):
        import_model(str(path), parse_config({**raw, "columns": {**raw["columns"], "features": ["age", "income"], "categorical": []}}), frame)
    with pytest.raises(ModelImportError, match="problem_type"):
        import_model(str(path), parse_config({**raw, "problem_type": "regression", "metric": "mae", "columns": {**raw["columns"], "probability": None}}), frame)
    with pytest.raises(ModelImportError, match="not found"):
        import_model(str(tmp_path / "nope.ubj"), parse_config(raw), frame)
