"""Distribution findings are drift evidence, and NannyML keeps estimating on batches whose
values the reference never had.

- `decide_alerts` counts a feature with a distribution finding (values beyond the
  reference's range, unseen categories) as a drifted feature, so it feeds the
  `feature_drift` signal of the retrain policy;
- NannyML's drift, multivariate drift and performance estimation run on batches with
  values beyond the reference's range and categories it never had (the monitor's
  categorical coding `_drift_frame` keeps NannyML's distances: checked against the
  distance computed on the raw values).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from evergreen.decisions.alerts import decide_alerts
from evergreen.decisions.policy import ChunkObservation, LoopState, Policy, decide
from evergreen.engines.monitoring import (
    FeatureDrift,
    MetricEstimate,
    MonitorReport,
    MultivariateDrift,
    compute_monitor,
    fit_monitor,
)
from evergreen.events import DRIFT_DETECTED
from evergreen.reports import DistributionFinding
from tests.unit.test_monitoring import FEATURES, make_config, make_frame, production


def _report(alerting: tuple[str, ...] = ()) -> MonitorReport:
    feats = {
        name: FeatureDrift("jensen_shannon", 0.3 if name in alerting else 0.01, 0.1, name in alerting, "c")
        for name in FEATURES
    }
    estimate = MetricEstimate("roc_auc", 0.8, 0.8, 0.75, 0.85, False, "estimated", 0.01, "c")
    return MonitorReport(
        model_name="toy",
        metric="roc_auc",
        features=feats,
        multivariate=MultivariateDrift(2.0, 1.8, 2.5, False, "c"),
        estimated_metric=estimate,
        realized_metric=None,
        rows=1000,
        labelled_rows=0,
        chunks=[],
    )


def _finding(column: str, check: str = "range", share: float = 0.02) -> DistributionFinding:
    return DistributionFinding(
        column=column,
        check=check,
        expectation_type="expect_column_values_to_be_between",
        share=share,
        count=int(share * 1000),
        tolerated_share=0.001,
        message="beyond",
    )


def test_a_finding_counts_its_feature_as_drifted() -> None:
    config = make_config(drifted_feature_share=0.2, multivariate_drift=False)  # 1 of 5 features
    quiet = decide_alerts(_report(), config)
    assert not quiet.drift_detected
    decision = decide_alerts(_report(), config, [_finding("x3")])
    assert decision.drift_detected and decision.drifted_features == ["x3"]
    (signal,) = decision.signals
    assert (signal.kind, signal.value) == ("feature_drift", pytest.approx(0.2))
    assert "x3 (2.0% of values beyond the reference range)" in signal.reason
    payload = decision.event_payloads()[DRIFT_DETECTED]
    assert payload["drifted_features"] == ["x3"] and payload["metric"] == "drifted_feature_share"


def test_a_feature_is_counted_once_and_named_with_both_reasons() -> None:
    config = make_config(drifted_feature_share=0.4, multivariate_drift=False)  # 2 of 5 features
    decision = decide_alerts(_report(alerting=("x1",)), config, [_finding("x1"), _finding("region", "categories", 0.3)])
    assert decision.drifted_features == ["x1", "region"]
    reason = decision.signals[0].reason
    assert "x1 (jensen_shannon 0.3 > 0.1; 2.0% of values beyond the reference range)" in reason
    assert "region (30.0% of values in unseen categories)" in reason
    # Only one feature with a finding and no NannyML alert: 1 of 5, below the share.
    assert not decide_alerts(_report(), config, [_finding("x1")]).drift_detected


def test_findings_fire_the_feature_drift_signal_of_the_retrain_policy() -> None:
    config = make_config(drifted_feature_share=0.2, multivariate_drift=False)
    policy = Policy.named("default", config.retrain)
    alerts = decide_alerts(_report(), config, [_finding("x2")])
    verdict = decide(ChunkObservation(chunk="2024-02-01", valid=True, alerts=alerts), LoopState(), policy)
    assert verdict.fired == ["feature_drift"] and verdict.alert and verdict.transition == "opened"
    assert list(verdict.events) == [DRIFT_DETECTED]


# ----------------------------------------------------------------------------- NannyML


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_frame(5000, seed=1)


@pytest.fixture(scope="module")
def fitted(reference: pd.DataFrame):  # noqa: ANN201 - FittedMonitor
    return fit_monitor(reference, make_config())


def _moved(n: int = 1000) -> pd.DataFrame:
    """x3 (uniform on [0, 10] in the reference) far beyond its range; a third of the regions
    are ones the reference never had."""
    batch = make_frame(n, seed=2, start="2024-02-01")
    regions = batch["region"].to_numpy(dtype=object).copy()
    regions[: n // 3] = np.where(np.arange(n // 3) % 2, "mars", "venus")
    return batch.assign(x3=batch["x3"] + 100.0, region=pd.array(regions, dtype="str"))


@pytest.mark.slow
def test_nannyml_estimates_a_batch_beyond_the_reference(fitted, reference: pd.DataFrame) -> None:  # noqa: ANN001
    batch = _moved()
    report = compute_monitor(fitted, production(batch), None)
    # Every value of x3 is beyond the reference: its distance is the largest there is.
    assert report.features["x3"].value == pytest.approx(1.0) and report.features["x3"].alert
    assert report.features["region"].alert
    assert report.multivariate is not None and report.multivariate.alert
    assert report.estimated_metric.value is not None and 0 < report.estimated_metric.value <= 1
    # Unseen categories share one code: NannyML's distance is the one on the raw values,
    # with every unseen value in one "not in the reference" bin.
    ref, new = reference["region"], batch["region"]
    cats = sorted(ref.unique())
    ref_p = [np.mean(ref == c) for c in cats] + [0.0]
    new_p = [np.mean(new == c) for c in cats] + [np.mean(~new.isin(cats))]
    assert report.features["region"].value == pytest.approx(jensenshannon(ref_p, new_p, base=2), abs=1e-9)


@pytest.mark.slow
def test_nannyml_copes_with_int_coded_unseen_categories_and_regression() -> None:
    from evergreen.config import ColumnRoles, MlflowConfig, ModelConfig

    config = ModelConfig(
        name="toy-reg",
        problem_type="regression",
        metric="mae",
        columns=ColumnRoles(target="target", features=FEATURES, categorical=["region", "owner"], probability=None),
        data={"rows_per_batch": 1000},
        mlflow=MlflowConfig(model_name="toy-reg"),
    )
    codes = {"north": 1, "south": 2, "east": 3}

    def regression(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.drop(columns=["y_pred_proba"]).assign(region=frame["region"].map(codes).fillna(9).astype(int))
        out["y_pred"] = 2 * out["x1"] + out["x3"]
        out["target"] = out["y_pred"] + np.random.default_rng(0).normal(0, 1, len(out))
        return out

    fitted = fit_monitor(regression(make_frame(3000, seed=1)), config)
    report = compute_monitor(fitted, production(regression(_moved())), None)  # mars/venus -> code 9
    assert report.features["region"].alert and report.features["x3"].value == pytest.approx(1.0)
    assert report.estimated_metric.value is not None and np.isfinite(report.estimated_metric.value)
    assert report.multivariate is not None and report.multivariate.alert
