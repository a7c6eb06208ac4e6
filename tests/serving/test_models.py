"""The served snapshot and its refresher, with a fake registry (no MLflow, fast)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from serving_support import make_config

from evergreen.apps.serving.models import ModelStore, ServedModel, ServingSnapshot
from evergreen.apps.serving.schema import RequestTable, feature_specs
from evergreen.apps.serving.scoring import NotReadyError, score_table
from evergreen.engines.training import Predictions


@dataclass
class FakeModel:
    """Answers a constant probability, and can run a hook while predicting."""

    probability: float
    features: list[str] = field(default_factory=lambda: ["x1", "x2", "color", "flag"])
    categories: dict[str, list[str]] = field(
        default_factory=lambda: {"color": ["blue", "green", "red"], "flag": ["False", "True"]}
    )
    problem_type: str = "binary_classification"
    threshold: float = 0.5
    during_predict: Callable[[], None] | None = None

    def predict(self, df: pd.DataFrame) -> Predictions:
        if self.during_predict is not None:
            self.during_predict()
        p = np.full(len(df), self.probability)
        return Predictions(prediction=(p >= self.threshold).astype(np.int64), probability=p)


class FakeRegistry:
    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.broken: set[str] = set()
        self.loads: list[str] = []
        self.resolve_error: Exception | None = None
        self.models: dict[str, FakeModel] = {}

    def resolve(self, name: str, alias: str) -> str | None:
        if self.resolve_error is not None:
            raise self.resolve_error
        return self.aliases.get(alias)

    def load(self, name: str, version: str) -> ServedModel:
        self.loads.append(version)
        if version in self.broken:
            raise OSError(f"artifact of version {version} is missing")
        model = self.models.setdefault(version, FakeModel(probability=int(version) / 10))
        specs = tuple(feature_specs(model.features, model.categories))
        return ServedModel(version=version, run_id=None, model=model, specs=specs, loaded_at="t")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(fake: FakeRegistry, clock: Clock) -> ModelStore:
    return ModelStore("m", 0.5, resolve=fake.resolve, load=fake.load, clock=clock)


def test_a_version_change_swaps_in_a_new_snapshot(store: ModelStore, fake: FakeRegistry) -> None:
    fake.aliases = {"champion": "1"}
    assert store.refresh() is True
    first = store.snapshot
    assert first.champion is not None and first.champion.version == "1" and first.canary is None
    assert store.refresh() is False and store.snapshot is first  # nothing changed, no reload
    assert fake.loads == ["1"]
    fake.aliases = {"champion": "1", "canary": "2"}
    assert store.refresh() is True
    second = store.snapshot
    assert second is not first and second.champion is first.champion
    assert second.canary is not None and second.canary.version == "2"
    assert first.canary is None  # the old snapshot is untouched


def test_promoting_the_canary_reuses_the_loaded_model(
    store: ModelStore, fake: FakeRegistry
) -> None:
    fake.aliases = {"champion": "1", "canary": "2"}
    store.refresh()
    canary = store.snapshot.canary
    fake.aliases = {"champion": "2"}
    store.refresh()
    assert store.snapshot.champion is canary and store.snapshot.canary is None
    assert fake.loads == ["1", "2"]


def test_a_failed_load_keeps_the_old_model_and_retries_later(
    store: ModelStore, fake: FakeRegistry, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    fake.aliases = {"champion": "1"}
    store.refresh()
    fake.aliases, fake.broken = {"champion": "3"}, {"3"}
    assert store.refresh() is False
    assert store.snapshot.champion is not None and store.snapshot.champion.version == "1"
    assert "version 3" in store.errors["champion"] and "missing" in store.errors["champion"]
    assert "still serving 1" in caplog.text
    store.refresh()  # within the back-off: no new attempt
    assert fake.loads == ["1", "3"]
    clock.now += 60
    fake.broken = set()
    assert store.refresh() is True
    assert store.snapshot.champion.version == "3" and "champion" not in store.errors


def test_a_missing_champion_alias_keeps_serving(store: ModelStore, fake: FakeRegistry) -> None:
    fake.aliases = {"champion": "1", "canary": "2"}
    store.refresh()
    fake.aliases = {}
    store.refresh()
    assert store.snapshot.champion is not None and store.snapshot.champion.version == "1"
    assert store.snapshot.canary is None  # a removed canary stops taking traffic
    assert "not set" in store.errors["champion"]
    assert store.readiness()[0] is True


def test_a_registry_error_keeps_serving(store: ModelStore, fake: FakeRegistry) -> None:
    fake.aliases = {"champion": "1"}
    store.refresh()
    before = store.snapshot
    fake.resolve_error = ConnectionError("database is locked")
    assert store.refresh() is False and store.snapshot is before
    assert "database is locked" in store.errors["champion"]


def test_readiness_explains_why_not(fake: FakeRegistry) -> None:
    def broken_connect() -> None:
        raise OSError("no such host")

    store = ModelStore("m", 0.2, resolve=fake.resolve, load=fake.load, connect=broken_connect)
    assert store.readiness() == (False, "loading models from the registry")
    store.refresh()
    ok, reason = store.readiness()
    assert not ok and "no such host" in reason
    store = ModelStore("m", 0.2, resolve=fake.resolve, load=fake.load)
    store.refresh()
    assert store.readiness() == (False, "no version of m has the alias 'champion'")
    fake.aliases, fake.broken = {"champion": "4"}, {"4"}
    store.refresh()
    ok, reason = store.readiness()
    assert not ok and "version 4" in reason


def _table(n: int) -> RequestTable:
    return RequestTable(
        {
            "id": list(range(n)),
            "x1": [0.1] * n,
            "x2": [0.2] * n,
            "color": ["red"] * n,
            "flag": [True] * n,
        },
        n,
        "dataframe_records",
    )


def test_a_request_finishes_on_the_snapshot_it_started_with(
    store: ModelStore, fake: FakeRegistry, tmp_path
) -> None:
    config = make_config(tmp_path, share=0.5)
    fake.aliases = {"champion": "1", "canary": "2"}
    store.refresh()
    snapshot = store.snapshot

    def move_aliases() -> None:  # a refresh lands while the request is being scored
        fake.aliases = {"champion": "3", "canary": "4"}
        store.refresh()

    snapshot.champion.model.during_predict = move_aliases
    result = score_table(snapshot, _table(200), config, pd.Timestamp("2024-01-01"), "r")
    assert store.snapshot.champion.version == "3"  # the swap did happen
    assert set(result.versions) == {"1", "2"}
    assert set(result.log_rows["model_version"]) == {"1", "2"}
    by_alias = dict(zip(result.aliases, result.predictions, strict=True))
    assert by_alias == {"champion": 0.1, "canary": 0.2}


def test_scoring_without_a_champion_is_not_ready(tmp_path) -> None:
    with pytest.raises(NotReadyError, match="champion"):
        score_table(
            ServingSnapshot("m", 0.2),
            _table(1),
            make_config(tmp_path),
            pd.Timestamp("2024-01-01"),
            "r",
        )
