"""Multiclass classification: the config, the metric maths (pinned to scikit-learn), XGBoost
training and loading, the gate and the canary on class-probability scores, validation and
NannyML's multiclass monitoring on NannyML's own mc_* tables (cut here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from evergreen.config import ConfigError, ModelConfig, class_key, load_config, parse_config
from evergreen.decisions.evaluation import (
    _metric_from_weights,
    _prepare,
    bootstrap_metric_difference,
    encode_classes,
    evaluate_predictions,
    metric_value,
    served_scores,
    target_values,
)

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["low", "mid", "high"]
MC = "multiclass_classification"


# --------------------------------------------------------------------------- data and config


def make_frame(n: int, seed: int, integer_labels: bool = False) -> pd.DataFrame:
    """Three classes with a known rule: x1 pushes towards 'high', -x1 towards 'low', the
    colour 'red' and x2 towards 'mid'."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n, p=[0.4, 0.4, 0.2])
    flag = rng.random(n) < 0.5
    logits = np.column_stack(
        [-2.0 * x1, 1.5 * x2 + np.where(color == "red", 1.0, -0.5), 2.0 * x1 + 0.3 * flag]
    )
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    target = y if integer_labels else np.array(CLASSES, dtype=object)[y]
    return pd.DataFrame(
        {
            "id": np.arange(n) + 100_000 * seed,
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n) * 60, unit="s"),
            "x1": x1,
            "x2": x2,
            "color": color,
            "flag": flag,
            "target": target,
        }
    )


def mc_config(
    integer_labels: bool = False,
    metric: str | None = None,
    order: list[str] | None = None,
    **sections: object,
) -> ModelConfig:
    names = order or CLASSES
    keys: list[object] = [CLASSES.index(c) for c in names] if integer_labels else list(names)
    raw: dict = {
        "name": "mc-unit",
        "problem_type": MC,
        "columns": {
            "target": "target",
            "probability": {k: f"proba_{k}" for k in keys},
            "features": ["x1", "x2", "color", "flag"],
            "categorical": ["color", "flag"],
            "slices": ["color"],
        },
        "training": {"num_boost_round": 40, "early_stopping_rounds": 5, "nthread": 1},
        "mlflow": {"model_name": "mc-unit"},
        **sections,
    }
    if metric is not None:
        raw["metric"] = metric
    return parse_config(raw)


def random_scores(n: int, k: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    # Informative but imperfect probabilities: the true class gets a head start.
    raw = rng.gamma(1.0, size=(n, k)) + 1.5 * np.eye(k)[y] * rng.random((n, 1))
    p = raw / raw.sum(axis=1, keepdims=True)
    if ties:
        p = np.round(p, 1)
        p = p / p.sum(axis=1, keepdims=True)
    return y.astype(float), p


# --------------------------------------------------------------------------- config


def test_config_keeps_the_classes_in_order_and_defaults_the_macro_metric() -> None:
    cfg = mc_config(order=["high", "low", "mid"])
    assert cfg.classes == ["high", "low", "mid"]
    assert cfg.probability_columns == ["proba_high", "proba_low", "proba_mid"]
    assert cfg.metric == "roc_auc_ovr" and cfg.higher_is_better


def test_integer_class_keys_from_yaml_survive_a_json_round_trip(tmp_path: Path) -> None:
    text = """
name: ints
problem_type: multiclass_classification
metric: f1_macro
columns:
  target: label
  probability: {0: p0, 1: p1, 2: p2}
  features: [a]
mlflow: {model_name: ints}
"""
    path = tmp_path / "ints.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.classes == ["0", "1", "2"] and cfg.probability_columns == ["p0", "p1", "p2"]
    again = parse_config(json.loads(cfg.model_dump_json()))  # a Prefect block stores JSON
    assert again == cfg
    # Data labels written as ints, floats (a column with a null) or text meet the same class.
    codes = encode_classes([2, 0.0, "1", None, np.int64(2)], cfg.classes)
    np.testing.assert_array_equal(codes, [2, 0, 1, np.nan, 2])


def test_the_prefect_block_wraps_a_multiclass_config() -> None:
    from blocks.model_config import EvergreenModel

    cfg = mc_config(integer_labels=True)
    block = EvergreenModel.from_config(cfg)
    restored = EvergreenModel.model_validate(json.loads(block.model_dump_json()))
    assert restored.to_config() == cfg and restored.to_config().classes == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"probability": "y_pred_proba"}, "must map each class to its probability column"),
        ({"probability": {"a": "pa"}}, "at least two classes"),
        ({"probability": {"a": "p", "b": "p"}}, "same column"),
        ({"probability": {1: "p1", "1": "p2"}}, "names a class twice"),
        ({"probability": {"a": "x1", "b": "pb"}}, "role columns"),
        ({"metric": "roc_auc"}, "roc_auc_ovr"),
        ({"metric": "f1"}, "macro averages"),
    ],
)
def test_wrong_multiclass_configs_name_the_field(change: dict, message: str) -> None:
    raw = json.loads(mc_config().model_dump_json())
    if "metric" in change:
        raw["metric"] = change["metric"]
    else:
        raw["columns"]["probability"] = change["probability"]
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_a_mapping_is_refused_for_binary_and_regression() -> None:
    raw = json.loads(mc_config().model_dump_json())
    for kind, metric in (("binary_classification", "roc_auc"), ("regression", "rmse")):
        with pytest.raises(ConfigError, match="mapping class -> column is for multiclass"):
            parse_config({**raw, "problem_type": kind, "metric": metric})


def test_the_demo_config_loads_as_before() -> None:
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert cfg.problem_type == "binary_classification" and cfg.metric == "roc_auc"
    assert cfg.columns.probability == "y_pred_proba" and cfg.classes is None
    assert cfg.probability_columns == ["y_pred_proba"]


def test_class_key_reads_labels_as_text() -> None:
    assert [class_key(v) for v in (1, 1.0, "1", np.int32(1), np.float64(1.0))] == ["1"] * 5
    assert class_key(True) == "True" and class_key(1.5) == "1.5" and class_key("a b") == "a b"


# --------------------------------------------------------------------------- metrics


def _sklearn(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    k = p.shape[1]
    labels = list(range(k))
    decided = p.argmax(axis=1)
    if metric == "roc_auc_ovr":
        return skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)
    if metric == "accuracy":
        return skm.accuracy_score(y, decided)
    if metric == "brier":
        return skm.brier_score_loss(y, p, labels=labels)
    if metric == "log_loss":
        return skm.log_loss(y, p, labels=labels)
    fn = {
        "f1_macro": skm.f1_score,
        "precision_macro": skm.precision_score,
        "recall_macro": skm.recall_score,
    }
    return fn[metric](y, decided, average="macro", labels=labels, zero_division=0.0)


METRICS = [
    "roc_auc_ovr",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "accuracy",
    "brier",
    "log_loss",
]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("ties", [False, True])
def test_multiclass_metrics_match_sklearn(metric: str, ties: bool) -> None:
    y, p = random_scores(3000, 4, seed=1, ties=ties)
    assert metric_value(y, p, MC, metric) == pytest.approx(_sklearn(metric, y, p), abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_weighted_multiclass_metrics_equal_sklearn_on_the_resampled_rows(metric: str) -> None:
    y, p = random_scores(400, 3, seed=2, ties=True)
    counts = np.bincount(np.random.default_rng(3).integers(0, len(y), len(y)), minlength=len(y))
    got = _metric_from_weights(counts[None, :].astype(float), _prepare(y, p, MC, metric, 0.5))[0]
    rows = np.repeat(np.arange(len(y)), counts)
    assert got == pytest.approx(_sklearn(metric, y[rows], p[rows]), abs=1e-12)


def test_evaluation_has_every_macro_metric_calibration_and_slices() -> None:
    y, p = random_scores(2000, 3, seed=4)
    colour = np.where(np.arange(2000) % 3 == 0, "red", "blue")
    result = evaluate_predictions(y, p, MC, "f1_macro", slices={"colour": colour})
    assert set(result.metrics) == {
        "roc_auc_ovr",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "accuracy",
    }
    assert result.value == result.metrics["f1_macro"]
    cal = result.calibration
    assert cal is not None
    assert cal.brier == pytest.approx(skm.brier_score_loss(y, p, labels=[0, 1, 2]))
    assert cal.log_loss == pytest.approx(skm.log_loss(y, p, labels=[0, 1, 2]))
    # The curve is of the top-label confidence: its bins hold every row, the observed rate
    # being the share of right predictions.
    confidence, right = p.max(axis=1), (p.argmax(axis=1) == y)
    assert sum(b.n for b in cal.bins) == 2000
    assert sum(b.n * b.observed for b in cal.bins) == pytest.approx(right.sum())
    assert sum(b.n * b.mean_predicted for b in cal.bins) == pytest.approx(confidence.sum())
    for s in result.slices:
        rows = colour == s.value
        assert s.metric == pytest.approx(_sklearn("f1_macro", y[rows], p[rows]))
    assert set(result.flat_metrics()) >= {
        "roc_auc_ovr",
        "brier",
        "log_loss",
        "ece",
        "slice.colour.red.f1_macro",
    }


def test_ovr_auc_is_undefined_when_a_class_is_missing_from_the_labels() -> None:
    y, p = random_scores(300, 3, seed=5)
    y = np.where(y == 2, 1.0, y)
    assert math.isnan(metric_value(y, p, MC, "roc_auc_ovr"))
    # The decision metrics stay defined: the absent class counts 0, as in scikit-learn.
    assert metric_value(y, p, MC, "f1_macro") == pytest.approx(_sklearn("f1_macro", y, p))


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        ([0, 1], [0.2, 0.8], "one probability per class"),
        ([0, 3], [[0.5, 0.5], [0.1, 0.9]], "class codes 0..1"),
        ([0, 1, 1], [[0.5, 0.5], [0.1, 0.9]], "one score row per label"),
        ([0, 1], [[0.5, 0.5], [np.nan, 0.9]], "missing/NaN probabilities"),
    ],
)
def test_bad_multiclass_inputs_are_named(y: list, scores: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metric_value(y, scores, MC, "roc_auc_ovr")


def test_paired_bootstrap_on_probability_matrices() -> None:
    y, good = random_scores(1500, 3, seed=6)
    noise = np.random.default_rng(7).dirichlet([1, 1, 1], size=len(y))
    worse = 0.5 * good + 0.5 * noise
    same = bootstrap_metric_difference(y, good, good, MC, "roc_auc_ovr", n_samples=200, seed=1)
    assert same.low == same.high == 0.0
    gain = bootstrap_metric_difference(y, good, worse, MC, "roc_auc_ovr", n_samples=200, seed=1)
    again = bootstrap_metric_difference(y, good, worse, MC, "roc_auc_ovr", n_samples=200, seed=1)
    assert gain == again and 0 < gain.low < gain.point < gain.high
    assert gain.point == pytest.approx(
        _sklearn("roc_auc_ovr", y, good) - _sklearn("roc_auc_ovr", y, worse)
    )


def test_encode_classes_names_values_that_are_no_class() -> None:
    np.testing.assert_array_equal(encode_classes(["high", "low", None], CLASSES), [2, 0, np.nan])
    with pytest.raises(ValueError, match=r"not classes of columns.probability, e.g. \['gold'\]"):
        encode_classes(["low", "gold"], CLASSES, "labels")


def test_served_scores_read_probabilities_or_the_served_class() -> None:
    frame = pd.DataFrame(
        {
            "y_pred": ["mid", "low", "high"],
            "proba_low": [0.2, 0.6, 0.1],
            "proba_mid": [0.5, 0.3, 0.1],
            "proba_high": [0.3, 0.1, 0.8],
        }
    )
    scores = served_scores(frame, mc_config())
    np.testing.assert_array_equal(
        scores, frame[["proba_low", "proba_mid", "proba_high"]].to_numpy()
    )
    onehot = served_scores(frame, mc_config(metric="accuracy"))
    np.testing.assert_array_equal(onehot, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(target_values(["high", "low"], mc_config()), [2, 0])


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def text_model():
    from evergreen.engines.training import train_model

    cfg = mc_config()
    return cfg, train_model(make_frame(3000, seed=0), cfg)


def test_a_trained_model_predicts_text_labels_and_class_probabilities(
    text_model, tmp_path: Path
) -> None:
    from evergreen.engines.training import TrainedModel

    cfg, model = text_model
    assert model.params["objective"] == "multi:softprob" and model.params["num_class"] == 3
    assert model.validation_metric == "mlogloss" and model.classes == CLASSES
    test = make_frame(1000, seed=9)
    preds = model.predict(test)
    assert preds.probability.shape == (1000, 3) and preds.classes == CLASSES
    np.testing.assert_allclose(preds.probability.sum(axis=1), 1.0, atol=1e-5)
    assert preds.prediction.dtype == object
    np.testing.assert_array_equal(
        preds.prediction, np.array(CLASSES)[preds.probability.argmax(axis=1)]
    )
    # The model learned the rule: better than chance by far.
    codes = encode_classes(test["target"], CLASSES)
    assert metric_value(codes, preds.probability, MC, "roc_auc_ovr") > 0.8

    model.save(str(tmp_path / "m"))
    loaded = TrainedModel.load(str(tmp_path / "m"))
    again = loaded.predict(test)
    assert loaded.classes == CLASSES
    np.testing.assert_array_equal(again.probability, preds.probability)
    np.testing.assert_array_equal(again.prediction, preds.prediction)


def test_integer_labels_stay_integers_and_training_is_seeded(tmp_path: Path) -> None:
    from evergreen.engines.training import TrainedModel, train_model

    cfg = mc_config(integer_labels=True)
    frame = make_frame(2000, seed=1, integer_labels=True)
    model = train_model(frame, cfg)
    assert model.classes == [0, 1, 2]
    preds = model.predict(frame.head(50))
    assert preds.prediction.dtype == np.int64 and set(preds.prediction) <= {0, 1, 2}
    assert train_model(frame, cfg).to_bytes() == model.to_bytes()
    model.save(str(tmp_path / "m"))
    assert (
        TrainedModel.load(str(tmp_path / "m")).predict(frame.head(50)).prediction.dtype == np.int64
    )
    # Float labels (a labels column with a null) train the same classes.
    floats = frame.assign(target=frame["target"].astype(float))
    floats.loc[3, "target"] = np.nan
    assert train_model(floats, cfg).classes == [0, 1, 2]


def test_probability_columns_follow_the_config_order() -> None:
    from evergreen.engines.training import output_columns, train_model

    cfg = mc_config(order=["high", "low", "mid"])
    frame = make_frame(3000, seed=2)
    model = train_model(frame, cfg)
    assert model.classes == ["high", "low", "mid"]
    out = output_columns(model.predict(frame), cfg.columns)
    assert list(out) == ["y_pred", "proba_high", "proba_low", "proba_mid"]
    for name in ("high", "low", "mid"):
        own = out[f"proba_{name}"][frame["target"] == name].mean()
        others = out[f"proba_{name}"][frame["target"] != name].mean()
        assert own > others + 0.2


def test_training_names_labels_that_are_no_class() -> None:
    from evergreen.engines.training import TrainingError, train_model

    frame = make_frame(200, seed=3)
    frame.loc[5, "target"] = "gold"
    with pytest.raises(TrainingError, match=r"target column 'target'.*\['gold'\]"):
        train_model(frame, mc_config())
    with pytest.raises(TrainingError, match="at least two"):
        train_model(make_frame(200, seed=3).assign(target="low"), mc_config())


def test_evaluation_and_monitor_reference_of_a_model(text_model) -> None:
    from evergreen.engines.scoring import evaluate_model, measure_model, monitor_reference

    cfg, model = text_model
    held = make_frame(800, seed=4)
    result = evaluate_model(model, held, cfg)
    p = model.predict(held).probability
    y = encode_classes(held["target"], CLASSES)
    assert result.value == pytest.approx(_sklearn("roc_auc_ovr", y, p))
    assert result.calibration is not None and {s.value for s in result.slices} == {
        "red",
        "green",
        "blue",
    }
    evidence = measure_model(model, held, cfg, "3", repeats=1)
    assert evidence.scores.shape == (800, 3)
    ref = monitor_reference(model, held, cfg, "3")
    assert {"y_pred", "proba_low", "proba_mid", "proba_high", "model_version", "target"} <= set(
        ref.columns
    )
    np.testing.assert_array_equal(ref["proba_mid"].to_numpy(), p[:, 1])


# --------------------------------------------------------------------------- gate and canary


def _evidence(version: str, y: np.ndarray, p: np.ndarray, metric: str):
    from evergreen.decisions.gate import ModelEvidence

    result = evaluate_predictions(y, p, MC, metric)
    return ModelEvidence(
        version=version, evaluation=result, scores=p, latency_ms_per_1000=5.0, size_mb=0.5
    )


@pytest.mark.parametrize("metric", ["roc_auc_ovr", "f1_macro"])
def test_the_gate_passes_a_better_and_fails_a_worse_multiclass_challenger(metric: str) -> None:
    from evergreen.config import GateConfig
    from evergreen.decisions.gate import decide_promotion

    y, good = random_scores(3000, 3, seed=8)
    noise = np.random.default_rng(9).dirichlet([1, 1, 1], size=len(y))
    bad = 0.4 * good + 0.6 * noise
    gate = GateConfig(bootstrap_samples=200)
    passed = decide_promotion(
        _evidence("2", y, good, metric), _evidence("1", y, bad, metric), y, gate, MC, metric
    )
    assert passed.passed, passed.summary()
    assert {c.name for c in passed.checks} >= {"relative_margin", "bootstrap", "calibration"}
    failed = decide_promotion(
        _evidence("3", y, bad, metric), _evidence("2", y, good, metric), y, gate, MC, metric
    )
    assert not failed.passed
    assert {c.name for c in failed.checks if not c.passed} >= {"relative_margin", "bootstrap"}
    assert json.loads(json.dumps(failed.to_dict()))["metric"] == metric


def _served_log(frame: pd.DataFrame, version: str, alias: str, p: np.ndarray) -> pd.DataFrame:
    out = frame[["id", "timestamp"]].copy()
    out["y_pred"] = np.array(CLASSES, dtype=object)[p.argmax(axis=1)]
    for k, name in enumerate(CLASSES):
        out[f"proba_{name}"] = p[:, k]
    out["model_version"] = version
    out["alias"] = alias
    return out


@pytest.mark.parametrize("metric", ["roc_auc_ovr", "accuracy"])
def test_the_canary_compares_realized_multiclass_metrics_on_served_traffic(metric: str) -> None:
    from evergreen.decisions.canary import (
        PROMOTED,
        ROLLED_BACK,
        collect_arm_evidence,
        decide_canary,
    )
    from evergreen.decisions.defaults import canary_config

    cfg = mc_config(metric=metric)
    frame = make_frame(2400, seed=10)
    y = encode_classes(frame["target"], CLASSES)
    truth = np.eye(3)[y.astype(int)]
    rng = np.random.default_rng(11)
    sharp = 0.7 * truth + 0.3 * rng.dirichlet([1, 1, 1], size=len(y))
    blunt = 0.3 * truth + 0.7 * rng.dirichlet([1, 1, 1], size=len(y))
    half = len(frame) // 2
    labels = frame[["id", "target"]].iloc[::2]  # half the rows have their label
    for canary_p, outcome in ((sharp, PROMOTED), (blunt, ROLLED_BACK)):
        champion_p = blunt if canary_p is sharp else sharp
        log = pd.concat(
            [
                _served_log(frame.iloc[:half], "1", "champion", champion_p[:half]),
                _served_log(frame.iloc[half:], "2", "canary", canary_p[half:]),
            ],
            ignore_index=True,
        )
        canary = collect_arm_evidence(log, labels, cfg, "2", "canary")
        champion = collect_arm_evidence(log, labels, cfg, "1", "champion")
        rows = np.arange(half, len(frame))[np.isin(frame["id"].iloc[half:], labels["id"])]
        assert canary.n_predictions == half and canary.n_labelled == len(rows)
        assert canary.realized_metric == pytest.approx(_sklearn(metric, y[rows], canary_p[rows]))
        assert canary.mean_prediction is None  # a class has no mean
        decision = decide_canary(canary, champion, canary_config(cfg), MC, metric, bootstrap_samples=100)
        assert decision.outcome == outcome, decision.summary()
        assert decision.basis == "realized"


# --------------------------------------------------------------------------- validation


def test_validation_checks_classes_and_probability_ranges() -> None:
    from evergreen.engines.validation import derive_suite, validate_batch, validate_labels

    cfg = mc_config()
    frame = make_frame(600, seed=12)
    rng = np.random.default_rng(13)
    p = rng.dirichlet([1, 1, 1], size=len(frame))
    batch = (
        _served_log(frame, "1", "champion", p)
        .drop(columns="alias")
        .merge(frame[["id", "x1", "x2", "color", "flag"]], on="id")
    )
    suite = derive_suite(batch, cfg)
    assert validate_batch(batch.iloc[:300], suite, "good").success
    unknown = batch.iloc[:300].copy()
    unknown.loc[unknown.index[:3], "y_pred"] = "gold"
    report = validate_batch(unknown, suite, "unknown-class")
    assert not report.success and {f.column for f in report.failures} == {"y_pred"}
    out_of_range = batch.iloc[:300].copy()
    out_of_range.loc[out_of_range.index[0], "proba_mid"] = 1.2
    report = validate_batch(out_of_range, suite, "probability")
    assert not report.success and {f.column for f in report.failures} == {"proba_mid"}

    assert validate_labels(frame[["id", "target"]], frame["id"], cfg).success
    bad = frame[["id", "target"]].copy()
    bad.loc[0, "target"] = "gold"
    report = validate_labels(bad, frame["id"], cfg)
    assert not report.success and "not classes of columns.probability" in report.summary()


# --------------------------------------------------------------------------- NannyML


def _mc_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    import nannyml

    data = Path(nannyml.__file__).parent / "datasets" / "data"
    read = lambda name: pd.read_csv(data / f"mc_{name}.csv")  # noqa: E731
    ref, ana, gt = read("reference"), read("analysis"), read("analysis_gt")
    for frame in (ref, ana):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return ref, ana, gt


MC_CLASSES = ["prepaid_card", "highstreet_card", "upmarket_card"]
MC_FEATURES = [
    "acq_channel",
    "app_behavioral_score",
    "requested_credit_limit",
    "app_channel",
    "credit_bureau_score",
    "stated_income",
    "is_customer",
]


def nannyml_mc_config(metric: str, **sections: object) -> ModelConfig:
    return parse_config(
        {
            "name": "credit-card",
            "problem_type": MC,
            "metric": metric,
            "columns": {
                "target": "y_true",
                "prediction": "y_pred",
                "probability": {c: f"y_pred_proba_{c}" for c in MC_CLASSES},
                "features": MC_FEATURES,
                "categorical": ["acq_channel", "app_channel", "is_customer"],
            },
            "data": {"rows_per_batch": 2000},
            "mlflow": {"model_name": "credit-card"},
            **sections,
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["roc_auc_ovr", "f1_macro"])
def test_nannyml_multiclass_monitoring_on_the_mc_tables(metric: str) -> None:
    from evergreen.decisions.alerts import decide_alerts
    from evergreen.engines import monitoring

    ref, ana, gt = _mc_tables()
    cfg = nannyml_mc_config(metric)
    fitted = monitoring.fit_monitor(ref.iloc[:12_000], cfg)
    assert fitted.reference_metric is not None and 0.6 < fitted.reference_metric < 1
    # NannyML's analysis part shifts from row 30,000 on; labels arrive for half of a batch.
    for start, shifted in ((0, False), (50_000, True)):
        batch = ana.iloc[start : start + 2000]
        labels = gt.iloc[start : start + 1000]
        report = monitoring.compute_monitor(fitted, batch, labels)
        assert report.metric == metric and report.labelled_rows == 1000
        est, real = report.estimated_metric, report.realized_metric
        assert est.metric == metric and est.value is not None and real is not None
        rows = batch.iloc[:1000]
        y = encode_classes(labels["y_true"], MC_CLASSES)
        p = rows[[f"y_pred_proba_{c}" for c in MC_CLASSES]].to_numpy()
        assert real.value == pytest.approx(_sklearn(metric, y, p), abs=1e-9)
        assert abs(est.value - real.value) < 0.1
        assert bool(report.drifted_features) == shifted
        assert json.loads(json.dumps(report.to_dict()))["estimated_metric"]["metric"] == metric
        alerts = decide_alerts(report, cfg)
        assert alerts.performance_degraded == shifted, alerts.reasons


def test_a_monitor_reference_without_a_class_is_refused_by_name() -> None:
    from evergreen.engines import monitoring

    ref, _, _ = _mc_tables()
    ref = ref.iloc[:3000]
    with pytest.raises(
        monitoring.MonitorInputError, match=r"no row of class\(es\) \['upmarket_card'\]"
    ):
        monitoring.fit_monitor(
            ref[ref["y_true"] != "upmarket_card"], nannyml_mc_config("roc_auc_ovr")
        )
