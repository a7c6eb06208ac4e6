"""The ports the flows run on: the real set of `evergreen.adapters.wiring.file_ports`, with
the Prefect-backed ones (events, run artifacts, the registry lock) that the core cannot
import."""

from __future__ import annotations

from evergreen.adapters.ports import Ports
from evergreen.adapters.wiring import file_ports
from evergreen.config import ModelConfig
from tasks.events import PrefectEvents
from tasks.publish import TrackedRuns
from tasks.registry import PrefectLock


def production_ports(config: ModelConfig) -> Ports:
    """Files on the config's paths, the configured MLflow registry, Prefect events, MLflow
    runs with Prefect artifacts and a Prefect concurrency limit as the registry lock."""
    return file_ports(config, events=PrefectEvents(config), runs=TrackedRuns(), lock=PrefectLock(config))
