"""A retrain with nothing new registers nothing (issue 16): the start rule holds a retrain
when no labelled row is newer than the newest version's training data (`no_new_data`), and
a retrain whose snapshot is the data a registered version was trained on, with the same
settings, is skipped after the snapshot (`same_data`). The retrain step on in-memory ports."""

from __future__ import annotations

import pandas as pd
import pytest

from evergreen import events
from evergreen.adapters import io
from evergreen.adapters.wiring import in_memory, memory_ports
from evergreen.config import ModelConfig
from evergreen.lineage import Trigger
from evergreen.loop.retrain import retrain
from tests.support import write_toy_drift_stream

DAYS, ROWS = 4, 200


@pytest.fixture
def stream(toy_config) -> ModelConfig:  # noqa: ANN001
    base = toy_config()
    cfg = in_memory(base, "skip").model_copy(
        update={"retrain": base.retrain.model_copy(update={"window": "expanding"})}
    )
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"rows_per_batch": ROWS})})
    write_toy_drift_stream(cfg, cfg.data.root, DAYS, ROWS, drift_at=2)
    return cfg


def _add_labelled_batch(cfg: ModelConfig, day: str) -> None:
    """One more batch, labelled: a copy of the newest one a day later, with new ids."""
    cols = cfg.columns
    newest = io.list_batches(cfg.data.path("batches"))[-1]
    frame = io.read_table(newest.path)
    frame[cols.id] = frame[cols.id] + 10_000_000
    frame[cols.timestamp] = pd.to_datetime(frame[cols.timestamp]) + pd.Timedelta(days=1)
    labels = frame[[cols.id]].assign(**{cols.target: (frame[cols.prediction] > 0).astype(int)})
    io.write_table(frame, f"{cfg.data.path('batches')}/{day}.parquet")
    io.write_table(labels, f"{cfg.data.path('labels')}/{day}.parquet")


def test_a_retrain_with_nothing_new_registers_nothing(stream: ModelConfig) -> None:
    ports = memory_ports(stream)
    first = retrain(ports, stream, Trigger.of("manual", None, "bootstrap", None))
    assert first.status == "registered" and first.bootstrap

    # The same window again, by hand: skipped after the snapshot, naming the version.
    again = retrain(ports, stream, Trigger.of("manual", None, "again", None))
    assert again.status == "skipped" and again.blocked_by == "same_data"
    assert again.message.startswith("same_data: ") and f"v{first.version}" in again.message
    assert again.dataset_digest == first.dataset_digest and again.dataset_reused
    assert again.version is None
    assert [v.version for v in ports.registry.list_versions()] == [first.version]
    assert [e for e, _, _ in ports.events.emitted].count(events.MODEL_REGISTERED) == 1

    # A schedule (or an alert) is held before anything is read: no labelled row is newer.
    held = retrain(ports, stream, Trigger.of("schedule", None, None, None))
    assert held.status == "skipped" and held.blocked_by == "no_new_data"
    assert f"v{first.version}" in held.message and "label" in held.message
    assert held.dataset_digest is None  # held by the start rule: no snapshot was made

    # New labelled rows: the next retrain registers.
    _add_labelled_batch(stream, "2024-03-20")
    fresh = retrain(ports, stream, Trigger.of("schedule", None, None, None))
    assert fresh.status == "registered", fresh.message
    assert fresh.dataset_digest != first.dataset_digest
    assert len(ports.registry.list_versions()) == 2


def test_changed_training_settings_on_the_same_data_register(stream: ModelConfig) -> None:
    """A person who changed the training settings retrains by hand on the same data: that
    model differs, so it is registered (the start rule does not hold manual runs)."""
    ports = memory_ports(stream)
    first = retrain(ports, stream, Trigger.of("manual", None, None, None))
    deeper = stream.model_copy(
        update={"training": stream.training.model_copy(update={"params": {"max_depth": 2, "eta": 0.3}})}
    )
    second = retrain(ports, deeper, Trigger.of("manual", None, None, None))
    assert second.status == "registered", second.message
    assert second.dataset_digest == first.dataset_digest
    assert len(ports.registry.list_versions()) == 2
    # and again with those settings: a duplicate of the second
    third = retrain(ports, deeper, Trigger.of("manual", None, None, None))
    assert third.blocked_by == "same_data" and f"v{second.version}" in third.message


def test_an_unreached_candidate_does_not_count_as_registered(stream: ModelConfig) -> None:
    """A version whose registration was cut short before any alias reached it (a killed
    process) is not a registration: the same data is registered again, reachable."""
    ports = memory_ports(stream)
    first = retrain(ports, stream, Trigger.of("manual", None, None, None))
    _add_labelled_batch(stream, "2024-03-20")
    second = retrain(ports, stream, Trigger.of("manual", None, None, None))
    ports.registry.move_alias("challenger", None, "simulated: the alias move was lost", "test", None)
    assert ports.registry.get_version(second.version).status == "candidate"
    third = retrain(ports, stream, Trigger.of("manual", None, None, None))
    assert third.status == "registered" and third.dataset_digest == second.dataset_digest
    assert third.version != first.version
