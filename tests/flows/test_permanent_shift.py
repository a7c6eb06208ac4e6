"""A stream whose feature leaves the training range for good keeps being monitored and
retrains onto the new range (issue 16, "Integrity is not drift").

Car-loan data (the first half of its analysis period, before its own drift), ten daily
batches of 2,500 rows; from batch 3 on `debt_to_income_ratio` (within [0.26, 0.73] in
the reference) moves up by six standard deviations, to about [1.18, 1.65], for good. Labels
arrive the same day. The loop, through the real flows on the Prefect test harness and a
temporary MLflow store:

1. v1, the champion, trained on the reference alone (the bootstrap);
2. the monitor over batches 0-6: none rejected; every shifted batch gets a per-column
   distribution finding, NannyML drift and an estimated metric, and counts as drift;
3. a retrain on the window (reference + labelled batches 0-6) keeps the shifted rows and
   registers v2; the gate passes it to canary, the canary review (on traffic the scoring
   service would have logged for batches 7-8) promotes it;
4. v2's monitor reference covers the new range: batches 7-9 raise no finding.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from evergreen import events
from evergreen.adapters import io, registry
from evergreen.config import ModelConfig
from evergreen.engines.snapshot import load_snapshot
from evergreen.loop.sources import read_monitor_reference
from evergreen.simulation.stream import load_car_loan_frames, write_stream_from_frames
from flows.canary import canary_review
from flows.monitor import monitor
from flows.promote import promote
from flows.retrain import retrain
from tests.flows.conftest import model_for
from tests.support import read_model_events, serve_history

pytestmark = pytest.mark.slow

FEATURE, SHIFT_AT, BATCHES, ROWS = "debt_to_income_ratio", 3, 10, 2500
FIRST, SECOND = range(0, 7), range(7, BATCHES)  # monitored before / after the retrain


class World:
    """The live data folder of the test and the staged stream it is fed from."""

    def __init__(self, cfg: ModelConfig, staging: Path) -> None:
        self.cfg, self.staging = cfg, staging
        self.days = sorted(p.stem for p in (staging / "batches").glob("*.parquet"))
        self.since = datetime.now(UTC) - timedelta(seconds=5)

    def deliver(self, indices: range) -> None:
        """Batches and their labels (same day) arrive in the live folders."""
        for folder in ("batches", "labels"):
            live = Path(self.cfg.data.path(folder))
            live.mkdir(parents=True, exist_ok=True)
            for i in indices:
                shutil.copy(self.staging / folder / f"{self.days[i]}.parquet", live / f"{self.days[i]}.parquet")

    def batch(self, i: int) -> pd.DataFrame:
        return io.read_table(str(self.staging / "batches" / f"{self.days[i]}.parquet"))


@pytest.fixture(scope="module")
def world(demo_config: ModelConfig, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("shift")
    base = model_for(demo_config, "loan-shift", str(root / "live"), label_delay=0)
    cfg = base.model_copy(
        update={
            # Small, quick models: the test is about the data, not the model's quality.
            "training": base.training.model_copy(update={"num_boost_round": 80, "early_stopping_rounds": 10}),
        }
    )
    staging = root / "stream"
    frames = load_car_loan_frames(cfg)
    staged_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(staging)})})
    info = write_stream_from_frames(
        staged_cfg,
        frames.reference.head(10_000),
        frames.analysis.head(BATCHES * ROWS),
        str(staging),
        drift="covariate",
        drift_start=SHIFT_AT,
        drift_params={"features": [FEATURE], "method": "additive", "strength": 6.0},
    )
    assert info.features_shifted == [FEATURE] and len(info.days) == BATCHES
    live = Path(cfg.data.root)
    live.mkdir(parents=True)
    for name in ("reference.parquet", "monitor_reference.parquet"):  # the bootstrap reads both
        shutil.copy(staging / name, live / name)
    world = World(cfg, staging)
    # v1: trained on the reference alone, champion by the bootstrap.
    boot = retrain(config=cfg, return_state=True)
    assert boot.is_completed(), boot.message
    assert boot.result().bootstrap and boot.result().version == "1"
    return world


@pytest.fixture(scope="module")
def old_range(world: World) -> tuple[float, float]:
    """The feature's range in v1's monitor reference (what the world leaves)."""
    values = read_monitor_reference(world.cfg)[FEATURE]
    lo, hi = float(values.min()), float(values.max())
    widened = hi + world.cfg.validation.range_margin * (hi - lo)
    assert world.batch(SHIFT_AT)[FEATURE].min() > widened, "the shift leaves the widened range"
    return lo, hi


@pytest.fixture(scope="module")
def first_results(world: World, old_range) -> list:  # noqa: ANN001
    world.deliver(FIRST)
    state = monitor(config=world.cfg, return_state=True)
    assert state.is_completed(), state.message  # not DataRejected: no batch was
    results = state.result()
    assert [r.batch_id for r in results] == [world.days[i] for i in FIRST]
    return results


def test_no_shifted_batch_is_rejected_and_each_reports_the_drift(world: World, first_results, old_range) -> None:  # noqa: ANN001
    for i, result in zip(FIRST, first_results, strict=True):
        assert result.valid and result.decision != "invalid" and result.failures == [], result.message
        # Drift and performance are estimated on every batch, shifted or not.
        assert result.estimated_metric is not None and result.features, result.batch_id
        if i < SHIFT_AT:
            assert result.distribution_findings == [], result.message
            continue
        (finding,) = result.distribution_findings
        assert (finding.column, finding.check, finding.share) == (FEATURE, "range", 1.0)
        assert finding.reference_range == [pytest.approx(old_range[0]), pytest.approx(old_range[1])]
        assert finding.observed_range[0] > old_range[1]
        assert result.features[FEATURE]["alert"], result.features[FEATURE]
        assert result.drift_detected and FEATURE in result.reasons[0] and "beyond the reference range" in result.reasons[0]
        assert "feature_drift" in result.signals


def test_the_published_runs_and_events_carry_the_findings(world: World, first_results) -> None:  # noqa: ANN001
    import mlflow

    client = mlflow.MlflowClient(world.cfg.mlflow.resolved_tracking_uri())
    shifted = first_results[SHIFT_AT]
    run = client.get_run(shifted.mlflow_run_id)
    assert run.data.tags["evergreen.valid"] == "true"
    assert run.data.metrics["distribution_findings"] == 1.0
    logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/monitor_result.json")
    assert logged["distribution_findings"][0]["column"] == FEATURE
    assert read_model_events(world.cfg.name, [events.DATA_REJECTED], world.since, timeout=3) == []
    drift = read_model_events(world.cfg.name, [events.DRIFT_DETECTED], world.since, expect=1)
    assert drift and all(FEATURE in e.payload["drifted_features"] for e in drift)
    assert {e.payload["chunk"] for e in drift} <= {world.days[i] for i in FIRST[SHIFT_AT:]}


@pytest.fixture(scope="module")
def retrained(world: World, first_results):  # noqa: ANN001, ANN201
    state = retrain(config=world.cfg, trigger="event", reason=f"drift on {FEATURE}", return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def test_the_retrain_keeps_and_trains_on_the_shifted_rows(world: World, retrained, old_range) -> None:  # noqa: ANN001
    assert retrained.status == "registered" and retrained.version == "2"
    assert retrained.aliases == ["challenger"] and retrained.excluded == {}
    assert {world.days[i] for i in FIRST} <= set(retrained.sources)
    window = load_snapshot(world.cfg.data.path("dataset_store"), retrained.dataset_digest)
    lo, hi = old_range
    beyond = window[window[FEATURE] > hi + world.cfg.validation.range_margin * (hi - lo)]
    assert len(beyond) == (len(FIRST) - SHIFT_AT) * ROWS  # every shifted row, and only those
    mv = registry.get_version(world.cfg.mlflow.model_name, "2")
    assert mv.tags["evergreen.dataset_digest"] == retrained.dataset_digest
    registered = read_model_events(world.cfg.name, ["evergreen.model.registered"], world.since, expect=2)
    assert "2" in {e.payload["version"] for e in registered}


@pytest.fixture(scope="module")
def promoted(world: World, retrained) -> str:  # noqa: ANN001
    gate = promote(config=world.cfg, return_state=True)
    assert gate.is_completed(), gate.message
    assert gate.result().decision == "passed" and gate.result().canary == retrained.version
    world.deliver(SECOND)
    serve_history(world.cfg, [world.days[i] for i in SECOND][:2])
    review = canary_review(config=world.cfg, return_state=True).result()
    assert review.decision == "promoted", review.reasons
    return registry.version_by_alias(world.cfg.mlflow.model_name, registry.CHAMPION).version


def test_the_new_champion_covers_the_new_range(world: World, retrained, promoted: str, old_range) -> None:  # noqa: ANN001
    assert promoted == retrained.version
    reference = read_monitor_reference(world.cfg)
    assert (reference[world.cfg.columns.model_version] == promoted).all()
    shifted = pd.concat([world.batch(i) for i in SECOND])[FEATURE]
    assert reference[FEATURE].min() > old_range[1]  # its held-out slice is the new world
    assert reference[FEATURE].min() <= shifted.quantile(0.01) and reference[FEATURE].max() >= shifted.quantile(0.99)


def test_the_next_shifted_batches_raise_no_finding(world: World, promoted: str) -> None:
    state = monitor(config=world.cfg, return_state=True)
    assert state.is_completed(), state.message
    results = state.result()
    assert [r.batch_id for r in results] == [world.days[i] for i in SECOND]
    for result in results:
        assert result.valid and result.distribution_findings == [], result.message
        assert result.estimated_metric is not None
        assert not result.features[FEATURE]["alert"], result.features[FEATURE]
