"""Helpers of the scoring-service tests: generated data, a config on a temporary MLflow store,
and the real app under uvicorn on a free local port. (A plain module, not conftest, so the
tests can import it.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from evergreen.apps.services import free_port
from evergreen.config import ModelConfig, parse_config
from evergreen.engines.training import TrainedModel

FEATURES = ["x1", "x2", "color", "flag"]


def make_frame(n: int, seed: int, flip: bool = False) -> pd.DataFrame:
    """Rows with a known rule; `flip` reverses the effect of x1 so the second model differs."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2])
    flag = rng.random(n) < 0.6
    sign = -1.0 if flip else 1.0
    logit = (
        sign * 2.0 * x1 - 1.0 * x2 + np.where(color == "red", 1.0, -0.5) + np.where(flag, 0.5, -0.5)
    )
    target = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "id": np.arange(n) + 100_000 * seed,
            "timestamp": pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(n) * 30, unit="s"),
            "x1": x1,
            "x2": x2,
            "color": color,
            "flag": flag,
            "target": target,
        }
    )


def make_config(tmp: Path, share: float = 0.3) -> ModelConfig:
    return parse_config(
        {
            "name": "serving-test",
            "columns": {"target": "target", "features": FEATURES, "categorical": ["color", "flag"]},
            "data": {"root": str(tmp / "data")},
            "training": {"num_boost_round": 30, "early_stopping_rounds": 5, "nthread": 1},
            "canary": {"traffic_share": share},
            "mlflow": {
                "model_name": "serving-test",
                "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                "artifact_root": str(tmp / "mlartifacts"),
            },
        }
    )


@dataclass(frozen=True)
class Registry:
    """The temporary registry: config and the TrainedModel behind each registered version."""

    config: ModelConfig
    models: dict[str, TrainedModel]
    root: Path

    @property
    def versions(self) -> list[str]:
        return sorted(self.models, key=int)


def set_aliases(config: ModelConfig, champion: str | None, canary: str | None) -> None:
    from evergreen.adapters import registry, tracking

    # Other test modules connect this process to their own stores: talk to this config's.
    tracking.connect(config.mlflow)
    for alias, version in (("champion", champion), ("canary", canary)):
        registry.move_alias(config.mlflow.model_name, alias, version, reason="test", actor="pytest")


@dataclass
class RunningService:
    url: str
    log_dir: str
    client: httpx.Client


@contextmanager
def run_service(
    config: ModelConfig, log_dir: Path, *, wait_ready: bool = True, **app_kwargs
) -> Iterator[RunningService]:
    """The real app under uvicorn in a thread; waits for /ready; stops it (and so flushes the
    prediction log) on exit."""
    import uvicorn

    from evergreen.apps.serving.app import LogSettings, create_app

    app_kwargs.setdefault("log_settings", LogSettings(directory=str(log_dir), flush_seconds=0.5))
    app = create_app(config, **app_kwargs)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    wanted = client.get("/ready" if wait_ready else "/health")
                    if wanted.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError(f"scoring service on {url} did not become ready")
                time.sleep(0.1)
            yield RunningService(url=url, log_dir=str(log_dir), client=client)
    finally:
        server.should_exit = True
        thread.join(30)
