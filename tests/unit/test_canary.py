"""The canary review: evidence per arm from the prediction log, and the decision."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evergreen.config import CanaryConfig
from evergreen.decisions.canary import (
    ArmEvidence,
    CanaryDecision,
    EvidenceNeeded,
    LabelledScores,
    collect_arm_evidence,
    decide_canary,
)
from evergreen.decisions.evaluation import metric_value

BINARY, REGRESSION = "binary_classification", "regression"
CFG = CanaryConfig(min_predictions=500, min_labels=200, margin=0.01)


def _arm(
    alias: str,
    version: str,
    *,
    n: int = 1000,
    labelled: int = 400,
    realized: float | None = None,
    estimated: float | None = None,
    mean: float | None = 0.3,
) -> ArmEvidence:
    return ArmEvidence(alias, version, n, labelled, realized, estimated, mean)


def _decide(canary: ArmEvidence, champion: ArmEvidence, metric: str = "roc_auc", **kw: object):
    problem = REGRESSION if metric in ("mae", "rmse") else BINARY
    return decide_canary(canary, champion, CFG, problem, metric, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pending


@pytest.mark.parametrize(
    ("n", "labelled", "estimated", "needed"),
    [
        (120, 400, None, EvidenceNeeded(predictions=380, labels=0)),
        (120, 50, None, EvidenceNeeded(predictions=380, labels=150)),
        (120, 50, 0.9, EvidenceNeeded(predictions=380, labels=0)),  # estimate: labels not needed
        (800, 50, None, EvidenceNeeded(predictions=0, labels=150)),
        (800, 0, None, EvidenceNeeded(predictions=0, labels=200)),
    ],
)
def test_pending_says_how_much_more_is_needed(
    n: int, labelled: int, estimated: float | None, needed: EvidenceNeeded
) -> None:
    realized = 0.9 if labelled else None
    canary = _arm("canary", "3", n=n, labelled=labelled, realized=realized, estimated=estimated)
    champion = _arm("champion", "2", n=4000, labelled=1500, realized=0.9, estimated=estimated)
    decision = _decide(canary, champion)
    assert decision.outcome == "pending"
    assert decision.needed == needed
    assert decision.basis is None and decision.gain is None
    if needed.predictions:
        # the reason names the field to change (wording changed on purpose, issue 16)
        assert f"the canary served {n} predictions; 500 are required (canary.min_predictions; 380 more)" in decision.reasons
    if needed.labels:
        assert any(f"(canary.min_labels; {needed.labels} more)" in r and "no estimate" in r for r in decision.reasons)


def test_pending_when_the_champion_lacks_labels_and_there_is_no_estimate() -> None:
    canary = _arm("canary", "3", labelled=300, realized=0.9)
    champion = _arm("champion", "2", labelled=120, realized=0.9)
    decision = _decide(canary, champion)
    assert decision.outcome == "pending"
    assert decision.needed == EvidenceNeeded(predictions=0, labels=0, champion_labels=80)
    assert "the champion has 120 labelled predictions" in decision.reasons[0]


def test_pending_when_the_realized_metric_is_undefined() -> None:
    # Enough labels, but all of one class: AUC is undefined, so more labels are needed.
    canary = _arm("canary", "3", labelled=300, realized=None)
    decision = _decide(canary, _arm("champion", "2", realized=0.9))
    assert decision.outcome == "pending"
    assert decision.needed == EvidenceNeeded(predictions=0, labels=1)
    assert "undefined" in decision.reasons[0]


# --------------------------------------------------------------------------- promote / roll back


@pytest.mark.parametrize(
    ("metric", "canary_value", "champion_value", "outcome"),
    [
        ("roc_auc", 0.93, 0.92, "promoted"),  # better
        ("roc_auc", 0.915, 0.92, "promoted"),  # worse, within the margin (non-inferior)
        ("roc_auc", 0.91, 0.92, "promoted"),  # exactly at the margin
        ("roc_auc", 0.90, 0.92, "rolled_back"),
        ("mae", 1.20, 1.25, "promoted"),  # lower is better: a lower mae is better
        ("mae", 1.255, 1.25, "promoted"),
        ("mae", 1.30, 1.25, "rolled_back"),  # a higher mae is worse
    ],
)
def test_realized_metric_decides(
    metric: str, canary_value: float, champion_value: float, outcome: str
) -> None:
    canary = _arm("canary", "3", realized=canary_value, estimated=champion_value + 5)
    champion = _arm("champion", "2", n=4000, labelled=1600, realized=champion_value, estimated=0)
    decision = _decide(canary, champion, metric)
    assert decision.outcome == outcome
    assert decision.basis == "realized"  # realized wins over the (absurd) estimates
    assert decision.canary_value == canary_value and decision.champion_value == champion_value
    expected_gain = (
        champion_value - canary_value if metric == "mae" else canary_value - champion_value
    )
    assert decision.gain == pytest.approx(expected_gain)
    assert decision.needed is None
    assert "realized on 400 vs 1600 labels" in decision.reasons[0]
    if outcome == "rolled_back":
        direction = "above" if metric == "mae" else "below"
        assert f"is {abs(expected_gain):.4g} {direction} champion" in decision.reasons[0]
        assert "allowed: 0.01" in decision.reasons[0]


@pytest.mark.parametrize(
    ("canary_estimate", "outcome"),
    [(0.925, "promoted"), (0.905, "promoted"), (0.88, "rolled_back")],
)
def test_estimated_metric_decides_when_labels_are_too_few(
    canary_estimate: float, outcome: str
) -> None:
    canary = _arm("canary", "3", labelled=40, realized=0.99, estimated=canary_estimate, mean=0.35)
    champion = _arm("champion", "2", n=4000, labelled=160, realized=0.5, estimated=0.91, mean=0.3)
    decision = _decide(canary, champion)
    assert decision.outcome == outcome
    assert decision.basis == "estimated"
    assert decision.canary_value == canary_estimate and decision.champion_value == 0.91
    assert decision.prediction_shift == pytest.approx(0.05)
    assert "estimated on 1000 vs 4000 predictions" in decision.reasons[0]
    assert any("decided on the estimate" in r for r in decision.reasons)
    assert any(r.startswith("prediction drift between arms") for r in decision.reasons)


# --------------------------------------------------------------------------- bootstrap


def _labelled(n: int, quality: float, seed: int) -> LabelledScores:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    scores = 1 / (1 + np.exp(-(quality * (2 * y - 1) + rng.normal(size=n))))
    return LabelledScores(y, scores)


def _arm_from(alias: str, version: str, rows: LabelledScores) -> ArmEvidence:
    realized = metric_value(rows.y_true, rows.scores, BINARY, "roc_auc")
    n = len(rows.y_true)
    return ArmEvidence(alias, version, max(n, 600), n, realized, labelled=rows)


def test_noise_keeps_the_review_pending_until_the_window_ends() -> None:
    # Equally good models, 220 canary labels: the canary happens to look worse by more
    # than the margin, but the interval straddles it.
    canary = _arm_from("canary", "3", _labelled(220, 1.0, seed=4))
    champion = _arm_from("champion", "2", _labelled(1500, 1.0, seed=2))
    assert canary.realized_metric is not None and champion.realized_metric is not None
    assert canary.realized_metric < champion.realized_metric - CFG.margin

    early = _decide(canary, champion, window_elapsed=False)
    assert early.outcome == "pending"
    assert early.gain_low is not None and early.gain_high is not None
    assert early.gain_low < -CFG.margin < early.gain_high
    assert early.needed is not None and early.needed.predictions == 0
    assert early.needed.labels > 0
    assert f"about {early.needed.labels} more labelled canary predictions" in early.reasons[0]

    late = _decide(canary, champion, window_elapsed=True)
    assert late.outcome == "rolled_back"  # the point estimate decides at the end
    assert (late.gain_low, late.gain_high) == (early.gain_low, early.gain_high)
    assert any("interval of the canary's gain" in r for r in late.reasons)


@pytest.mark.parametrize(("quality", "outcome"), [(2.0, "promoted"), (0.2, "rolled_back")])
def test_a_conclusive_interval_decides_before_the_window_ends(quality: float, outcome: str) -> None:
    canary = _arm_from("canary", "3", _labelled(600, quality, seed=1))
    champion = _arm_from("champion", "2", _labelled(1500, 1.0, seed=2))
    decision = _decide(canary, champion, window_elapsed=False)
    assert decision.outcome == outcome
    assert decision.gain_low is not None and decision.gain_high is not None
    if outcome == "promoted":
        assert decision.gain_low > -CFG.margin
    else:
        assert decision.gain_high < -CFG.margin


def test_the_bootstrap_is_seeded_and_can_be_switched_off() -> None:
    canary = _arm_from("canary", "3", _labelled(220, 1.0, seed=4))
    champion = _arm_from("champion", "2", _labelled(1500, 1.0, seed=2))
    a = _decide(canary, champion, seed=5, bootstrap_samples=200)
    b = _decide(canary, champion, seed=5, bootstrap_samples=200)
    c = _decide(canary, champion, seed=6, bootstrap_samples=200)
    assert (a.gain_low, a.gain_high) == (b.gain_low, b.gain_high) != (c.gain_low, c.gain_high)
    off = _decide(canary, champion, window_elapsed=False, bootstrap_samples=0)
    assert off.gain_low is None and off.outcome == "rolled_back"  # plain margin rule


# --------------------------------------------------------------------------- evidence


def _log_and_labels(n: int = 400) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ids = np.arange(n)
    proba = rng.random(n)
    alias = np.where(ids % 4 == 0, "canary", "champion")
    log = pd.DataFrame(
        {
            "id": ids,
            "y_pred": (proba >= 0.5).astype(int),
            "y_pred_proba": proba,
            "model_version": np.where(alias == "canary", "3", "2"),
            "alias": alias,
        }
    )
    log.loc[ids >= n - 20, "model_version"] = "1"  # an old champion, before the move
    target = (rng.random(n) < proba).astype(int)
    labels = pd.DataFrame({"id": ids, "target": target}).iloc[: n // 2]
    # A label delivered twice: the later one counts.
    redelivered = pd.DataFrame({"id": [0], "target": [1 - target[0]]})
    return log, pd.concat([labels, redelivered], ignore_index=True)


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy"])
def test_collect_arm_evidence(toy_config, metric: str) -> None:
    config = toy_config().model_copy(update={"metric": metric})
    log, labels = _log_and_labels()
    before = log.copy()
    arm = collect_arm_evidence(log, labels, config, "3", "canary", estimated_metric=0.8)

    rows = log[(log["alias"] == "canary") & (log["model_version"] == "3")]
    latest = labels.drop_duplicates("id", keep="last").set_index("id")["target"]
    labelled = rows[rows["id"].isin(latest.index)]
    y = latest.loc[labelled["id"]].to_numpy()
    score_col = "y_pred_proba" if metric == "roc_auc" else "y_pred"
    expected = metric_value(y, labelled[score_col], BINARY, metric)

    assert (arm.alias, arm.version) == ("canary", "3")
    assert arm.n_predictions == len(rows) == 95  # 100 canary rows minus 5 served by v1
    assert arm.n_labelled == len(labelled) == 50
    assert arm.realized_metric == pytest.approx(expected)
    assert arm.estimated_metric == 0.8
    assert arm.mean_prediction == pytest.approx(rows["y_pred"].mean())
    assert arm.labelled is not None and len(arm.labelled.y_true) == 50
    first_delivery = labels["target"].iloc[0]  # of id 0, the first canary row
    assert arm.labelled.y_true[0] == 1 - first_delivery  # the redelivered label counts
    pd.testing.assert_frame_equal(log, before)  # the input is not mutated


def test_collect_arm_evidence_without_labels(toy_config) -> None:
    log, _ = _log_and_labels()
    arm = collect_arm_evidence(log, None, toy_config(), "2", "champion")
    assert arm.n_predictions == 285 and arm.n_labelled == 0
    assert arm.realized_metric is None and arm.labelled is None and arm.estimated_metric is None


def test_collect_arm_evidence_for_regression(toy_config) -> None:
    config = toy_config("regression")  # metric rmse, no probability needed
    log, _ = _log_and_labels()
    log = log.drop(columns=["y_pred_proba"]).assign(y_pred=np.linspace(0, 1, len(log)))
    labels = pd.DataFrame({"id": log["id"], "target": np.linspace(0, 1, len(log)) + 0.5})
    arm = collect_arm_evidence(log, labels, config, "3", "canary")
    assert arm.realized_metric == pytest.approx(0.5)


def test_collect_arm_evidence_names_missing_columns(toy_config) -> None:
    log, labels = _log_and_labels()
    with pytest.raises(ValueError, match=r"prediction log lacks column\(s\) \['alias'\]"):
        collect_arm_evidence(log.drop(columns=["alias"]), labels, toy_config(), "3", "canary")
    with pytest.raises(ValueError, match="id column 'id' is int64 in the prediction log"):
        collect_arm_evidence(log, labels.astype({"id": str}), toy_config(), "3", "canary")


def test_evidence_feeds_the_decision(toy_config) -> None:
    log, labels = _log_and_labels(4000)
    config = toy_config()
    cfg = CanaryConfig(min_predictions=500, min_labels=200, margin=0.05)
    canary = collect_arm_evidence(log, labels, config, "3", "canary")
    champion = collect_arm_evidence(log, labels, config, "2", "champion")
    decision = decide_canary(canary, champion, cfg, BINARY, "roc_auc")
    # Both arms score with the same calibrated probabilities: the canary is non-inferior.
    assert decision.outcome == "promoted", decision.reasons
    assert decision.basis == "realized"


# --------------------------------------------------------------------------- contract


def test_to_dict_is_plain_json() -> None:
    canary = _arm_from("canary", "3", _labelled(220, 1.0, seed=4))
    champion = _arm_from("champion", "2", _labelled(1500, 1.0, seed=2))
    decision: CanaryDecision = _decide(canary, champion, window_elapsed=False)
    payload = decision.to_dict()
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert payload["outcome"] == "pending"
    assert payload["needed"]["labels"] == decision.needed.labels  # type: ignore[union-attr]
    assert "labelled" not in payload["canary"]
    assert payload["canary"]["n_labelled"] == 220
    assert payload["summary"].startswith("canary 3 vs champion 2: pending: ")


def test_labels_on_rows_newer_than_the_canary_decide_before_its_own_traffic_is_labelled() -> None:
    """The paired basis: both models on the same newly labelled rows, a paired bootstrap."""
    from evergreen.decisions.canary import PENDING, PROMOTED, ROLLED_BACK, PairedEvidence

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 800).astype(float)
    good = np.clip(y * 0.6 + rng.normal(0.2, 0.2, 800), 0, 1)  # separates the classes
    poor = rng.uniform(0, 1, 800)  # does not
    canary_arm, champion_arm = _arm("canary", "2", n=600, labelled=0), _arm("champion", "1", n=2400, labelled=0)
    better = decide_canary(canary_arm, champion_arm, CFG, "binary_classification", "roc_auc",
                           window_elapsed=False, paired=PairedEvidence(y, good, poor))
    assert better.outcome == PROMOTED and better.basis == "paired" and better.gain_low > 0
    assert "same 800 labelled rows" in better.reasons[0]
    worse = decide_canary(canary_arm, champion_arm, CFG, "binary_classification", "roc_auc",
                          window_elapsed=False, paired=PairedEvidence(y, poor, good))
    assert worse.outcome == ROLLED_BACK and worse.gain_high < -CFG.margin
    # Too few new rows: still waiting.
    few = decide_canary(canary_arm, champion_arm, CFG, "binary_classification", "roc_auc",
                        window_elapsed=False, paired=PairedEvidence(y[:50], good[:50], poor[:50]))
    assert few.outcome == PENDING
