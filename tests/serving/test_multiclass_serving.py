"""The scoring service with a multiclass model: each answer is a record with the predicted
class and every class's probability (MLflow's answer for a DataFrame output), the
champion/canary split holds, and the prediction log is a monitor batch."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evergreen.apps.serving.fastpath import FastScorer, build_scorer
from evergreen.apps.serving.models import ServedModel, ServingSnapshot
from evergreen.apps.serving.schema import RequestLimits, feature_specs, parse_body
from evergreen.apps.serving.scoring import routing_salt, score_table
from evergreen.config import ModelConfig
from evergreen.decisions.routing import route_many
from evergreen.engines.training import TrainedModel, output_columns, train_model
from tests.unit.test_multiclass import CLASSES, make_frame, mc_config

FEATURES = ["x1", "x2", "color", "flag"]
PROBA = [f"proba_{c}" for c in CLASSES]


def _served(model: TrainedModel, version: str) -> ServedModel:
    specs = tuple(feature_specs(model.features, model.categories))
    return ServedModel(version, None, model, specs, "t", scorer=build_scorer(model))


def _body(frame: pd.DataFrame) -> bytes:
    cols = ["id", *FEATURES]
    data = frame[cols].astype(object).values.tolist()
    return json.dumps({"dataframe_split": {"columns": cols, "data": data}}).encode()


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[ModelConfig, TrainedModel, TrainedModel]]:
    """Two versions per label kind: trained on different data, so they answer differently."""
    out = {}
    for kind, integer in (("text", False), ("int", True)):
        cfg = mc_config(integer_labels=integer, canary={"traffic_share": 0.4})
        first = train_model(make_frame(2000, seed=0, integer_labels=integer), cfg)
        second = train_model(make_frame(2000, seed=5, integer_labels=integer), cfg)
        out[kind] = (cfg, first, second)
    return out


def test_the_fast_path_serves_a_multiclass_model_exactly(models) -> None:
    _, model, _ = models["text"]
    scorer = build_scorer(model)
    assert isinstance(scorer, FastScorer)  # not the fallback
    frame = make_frame(300, seed=7)
    fast, slow = scorer.predict(frame), model.predict(frame)
    np.testing.assert_array_equal(fast.probability, slow.probability)
    np.testing.assert_array_equal(fast.prediction, slow.prediction)
    one = scorer.predict(frame.head(1))  # a one-row request keeps its class axis
    assert (
        one.probability.shape == (1, 3) and one.prediction.tolist() == slow.prediction[:1].tolist()
    )


@pytest.mark.parametrize("kind", ["text", "int"])
def test_answers_are_records_of_class_and_probabilities_split_by_alias(models, kind: str) -> None:
    cfg, champion, canary = models[kind]
    snapshot = ServingSnapshot(
        cfg.mlflow.model_name, 0.4, _served(champion, "1"), _served(canary, "2")
    )
    frame = make_frame(400, seed=8)
    table = parse_body(_body(frame), "application/json", RequestLimits())
    scored = score_table(snapshot, table, cfg, pd.Timestamp("2024-05-01", tz="UTC"), "req-1")

    aliases = np.array(route_many(frame["id"].tolist(), routing_salt(cfg), 0.4, True))
    assert scored.aliases == aliases.tolist() and 0 < (aliases == "canary").sum() < len(frame)
    names = [cfg.columns.prediction, *cfg.probability_columns]
    assert all(list(record) == names for record in scored.predictions)
    answer = pd.DataFrame(scored.predictions)
    for alias, model, version in (("champion", champion, "1"), ("canary", canary, "2")):
        rows = aliases == alias
        expected = output_columns(model.predict(frame[rows]), cfg.columns)
        for name in names:
            np.testing.assert_array_equal(answer.loc[rows, name].to_numpy(), expected[name])
        assert {v for v, a in zip(scored.versions, scored.aliases, strict=True) if a == alias} == {
            version
        }
    labels = answer[cfg.columns.prediction]
    if kind == "int":
        assert all(type(v) is int for v in labels)
    else:
        assert set(labels) <= set(CLASSES)
    # The logged rows carry the same outputs, typed for Parquet, under the config's names.
    log = scored.log_rows
    assert str(log[cfg.columns.prediction].dtype) == ("int64" if kind == "int" else "str")
    for name in names:
        np.testing.assert_array_equal(log[name].to_numpy(), answer[name].to_numpy())
    assert (
        log["alias"].tolist() == scored.aliases and log["model_version"].tolist() == scored.versions
    )
    assert json.loads(json.dumps(scored.response()))["predictions"][0] == scored.predictions[0]


@pytest.mark.slow
def test_the_service_answers_as_mlflow_and_its_log_is_a_monitor_batch(
    models, tmp_path: Path
) -> None:
    import mlflow
    from mlflow.pyfunc.scoring_server import predictions_to_json
    from serving_support import run_service, set_aliases

    from evergreen.adapters import registry, tracking
    from evergreen.adapters.predlog import compact_day, read_prediction_log
    from evergreen.engines import monitoring
    from evergreen.engines.scoring import monitor_reference
    from evergreen.engines.validation import derive_suite, validate_batch

    base, champion, canary = models["text"]
    cfg = base.model_copy(
        update={
            "mlflow": base.mlflow.model_copy(
                update={
                    "model_name": "mc-serving",
                    "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                    "artifact_root": str(tmp_path / "mlartifacts"),
                }
            ),
            "data": base.data.model_copy(
                update={"root": str(tmp_path / "data"), "rows_per_batch": 500}
            ),
        }
    )
    tracking.connect(cfg.mlflow)
    experiment = tracking.ensure_experiment(cfg.mlflow, cfg.mlflow.training_experiment)
    versions = []
    for model in (champion, canary):
        with mlflow.start_run(experiment_id=experiment) as run:
            logged = registry.log_model(model, make_frame(5, seed=1)[FEATURES])
        versions.append(
            registry.create_version(
                cfg.mlflow.model_name, logged.model_uri, run.info.run_id, {}
            ).version
        )
    set_aliases(cfg, champion=versions[0], canary=versions[1])

    frame = make_frame(1500, seed=9)
    frame["timestamp"] = pd.Timestamp("2024-05-02") + pd.to_timedelta(
        np.arange(len(frame)), unit="s"
    )
    with run_service(cfg, tmp_path / "log") as svc:
        assert svc.client.get("/models").json()["champion"]["classes"] == CLASSES
        bodies = []
        for start in range(0, len(frame), 250):
            rows = frame.iloc[start : start + 250]
            cols = ["id", "timestamp", *FEATURES]
            records = json.loads(rows[cols].to_json(orient="records", date_format="iso"))
            response = svc.client.post("/invocations", json={"dataframe_records": records})
            assert response.status_code == 200, response.text
            bodies.append(response.json())
    predictions = [p for b in bodies for p in b["predictions"]]
    aliases = [a for b in bodies for a in b["aliases"]]
    assert {"champion", "canary"} == set(aliases)
    # MLflow's own serializer of a DataFrame output gives the same JSON, records under
    # "predictions" with the config's column names.
    as_frame = pd.DataFrame(predictions)
    buffer = io.StringIO()
    predictions_to_json(as_frame, buffer)
    assert json.loads(buffer.getvalue())["predictions"] == predictions

    log = read_prediction_log(str(tmp_path / "log"))
    assert len(log) == len(frame)
    assert list(log.columns[: 2 + len(FEATURES)]) == ["id", "timestamp", *FEATURES]
    assert set(log["y_pred"]) <= set(CLASSES) and set(PROBA) <= set(log.columns)
    np.testing.assert_allclose(log[PROBA].sum(axis=1), 1.0, atol=1e-5)

    # The log, compacted to a day's batch, is a batch the monitor validates and monitors.
    path = compact_day(str(tmp_path / "log"), "2024-05-02", str(tmp_path / "batches"))
    batch = pd.read_parquet(path)
    held = make_frame(1500, seed=11)
    reference = monitor_reference(champion, held, cfg, versions[0])
    assert validate_batch(batch, derive_suite(reference, cfg), path).success
    fitted = monitoring.fit_monitor(reference, cfg)
    report = monitoring.compute_monitor(fitted, batch, frame[["id", "target"]])
    assert report.labelled_rows == len(frame) and report.realized_metric is not None
    assert report.estimated_metric.value is not None
