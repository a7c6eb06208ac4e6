"""The one place that picks a set of ports (`evergreen.adapters.ports.Ports`) for a model.

- `file_ports`: what users run — files on the config's fsspec paths (local disk by default,
  `s3://` and the like as configured) and the configured MLflow registry; the Prefect-backed
  ports (events, run artifacts, the registry lock) are passed in by `tasks.wiring`, since the
  core imports no Prefect.
- `memory_ports`: the same file code on fsspec's `memory://`, an in-memory registry, event
  sink and run log, a thread lock: tests and replays, nothing on disk or on a server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime

from evergreen.adapters import registry
from evergreen.adapters.ports import EventSink, Lock, Ports, RunLog
from evergreen.adapters.store import FilePredictionLog, FileSnapshots, FileStore
from evergreen.config import ModelConfig


def file_ports(config: ModelConfig, *, events: EventSink, runs: RunLog, lock: Lock) -> Ports:
    """The real set: the config's files and MLflow registry."""
    from evergreen.adapters import tracking

    tracking.connect(config.mlflow)
    return Ports(
        store=FileStore(config),
        snapshots=FileSnapshots(config),
        predictions=FilePredictionLog(config),
        registry=registry.Registry(config.mlflow.model_name),
        events=events,
        runs=runs,
        lock=lock,
    )


def in_memory(config: ModelConfig, prefix: str = "evergreen") -> ModelConfig:
    """`config` with all its data under a fresh `memory://` root: every location (batches,
    labels, references, the ledger, snapshots, the prediction log) by its default name
    there, so that none escapes to disk, an absolute or remote path of the user's included
    (a replay writes batches and labels: it must never write over the user's files)."""
    from evergreen.config import DataConfig

    root = f"memory://{prefix}-{uuid.uuid4().hex[:12]}"
    defaults = DataConfig()
    locations = {name: getattr(defaults, name) for name in DATA_LOCATIONS}
    return config.model_copy(update={"data": config.data.model_copy(update={"root": root, **locations})})


# The data fields that name a location (everything else in `data` is a setting).
DATA_LOCATIONS = (
    "training_reference", "monitor_reference", "batches", "labels", "predictions_log", "dataset_store", "state",
)


def memory_ports(config: ModelConfig, clock: Callable[[], datetime] | None = None) -> Ports:
    """The in-memory set for `config`, whose data root should be a `memory://` one
    (`in_memory`). `clock` stamps alias moves and served rows (a replay's clock)."""
    from evergreen.adapters import memory

    artifacts = memory.MemoryArtifacts()
    lock = threading.RLock()
    return Ports(
        store=FileStore(config),
        snapshots=FileSnapshots(config),
        predictions=FilePredictionLog(config),
        registry=registry.Registry(
            config.mlflow.model_name, client=memory.MemoryRegistryClient(), artifacts=artifacts, clock=clock
        ),
        events=memory.MemoryEvents(),
        runs=memory.MemoryRunLog(artifacts),
        lock=lambda: lock,
    )
