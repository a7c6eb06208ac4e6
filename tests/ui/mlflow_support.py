"""Helpers of the MLflow browser test: a real `mlflow server` on a temporary SQLite store, and
the loop's own steps (bootstrap, monitored batches, a retrain and its gate) writing to it.

The loop runs without Prefect (`evergreen.loop` on the real file and MLflow ports, an
in-memory event sink): what the MLflow UI shows is what the flows write, since the flows
run these same steps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.fault_support import MlflowServer

MODEL = "ui-toy"
FLOW_RUN_ID = "0b5e7a6c-0000-4000-8000-000000000019"
PREFECT_UI = "http://127.0.0.1:4999"  # only written into links; nothing listens there


@dataclass
class MlflowUiServer(MlflowServer):
    """The reliability tests' `mlflow server` (SQLite store, local artifact root, a free
    127.0.0.1 port), started in a thread so the caller prepares data while it boots (~35 s)."""

    extra_env: dict[str, str] = field(default_factory=lambda: {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    @property
    def seconds(self) -> float | None:
        return self.starts[-1] if self.starts else None

    def start(self, timeout: float = 240) -> None:  # type: ignore[override] - returns at once
        def boot() -> None:
            try:
                MlflowServer.start(self, timeout)
            except BaseException as exc:  # noqa: BLE001 - re-raised by `ready`
                self.error = exc

        self._thread = threading.Thread(target=boot, daemon=True)
        self._thread.start()

    def ready(self) -> None:
        """Block until the server answers /health (raises what the wait raised)."""
        assert self._thread is not None
        self._thread.join()
        if self.error is not None:
            raise self.error


def toy_config(root: Path, tracking_uri: str):  # noqa: ANN201 - a ModelConfig
    """The unit tests' toy model under `root`, logging to `tracking_uri` with a local artifact
    root, a gate strict enough to reject the retrained version (its metric floor)."""
    from tests.unit.conftest import _config

    base = _config()
    return base.model_copy(
        update={
            "name": MODEL,
            "data": base.data.model_copy(update={"root": str(root / "data"), "rows_per_batch": 300, "label_delay_days": 1}),
            "mlflow": base.mlflow.model_copy(
                update={
                    "model_name": MODEL,
                    "tracking_uri": tracking_uri,
                    "artifact_root": str(root / "mlartifacts"),
                    "ui_url": tracking_uri,
                }
            ),
            "gate": base.gate.model_copy(update={"min_rows": 50, "metric_floor": 0.9999}),
            "retrain": base.retrain.model_copy(update={"cooldown_hours": 0}),
        }
    )


@dataclass
class LoopRecord:
    """What the loop wrote, for the test to look up in the UI."""

    champion: str
    rejected: str
    rejected_reasons: list[str]
    monitor_run_ids: list[str]
    monitor_urls: list[str]


def write_stream(config, days: int, drift_at: int) -> None:  # noqa: ANN001
    from tests.support import write_toy_drift_stream

    write_toy_drift_stream(config, config.data.root, days, config.data.rows_per_batch, drift_at)


def drive_loop(config, batches: int) -> LoopRecord:  # noqa: ANN001
    """Bootstrap a champion, monitor the first `batches` batches (published to MLflow as the
    monitor flow does), retrain by hand and gate the new version (the floor rejects it)."""
    import threading

    from evergreen.adapters import io, memory, tracking
    from evergreen.adapters.wiring import file_ports
    from evergreen.lineage import Trigger
    from evergreen.loop import bootstrap, monitor, promote, retrain
    from evergreen.loop.common import Actor

    lock = threading.RLock()
    ports = file_ports(config, events=memory.MemoryEvents(), runs=tracking.MlflowRunLog(), lock=lambda: lock)
    actor = Actor("ui-test", FLOW_RUN_ID)
    lineage = {"evergreen.prefect.flow_run_id": FLOW_RUN_ID}
    first = bootstrap.bootstrap(ports, config, actor=actor, lineage=lineage)
    assert first.status == "registered", first.message
    results = []
    for batch in io.list_batches(config.data.path("batches"))[:batches]:
        results += monitor.monitor(ports, config, batch.path, flow_run_id=FLOW_RUN_ID)
    second = retrain.retrain(ports, config, Trigger.of("manual", None, "ui test: a retrain by hand", None), actor=actor, lineage=lineage)
    assert second.status == "registered", second.message
    gated = promote.promote(ports, config, second.version, actor=actor)
    assert gated.result.decision == "failed", gated.result
    return LoopRecord(
        champion=str(first.version),
        rejected=str(second.version),
        rejected_reasons=list(gated.result.reasons),
        monitor_run_ids=[r.mlflow_run_id for r in results],
        monitor_urls=[r.mlflow_run_url for r in results],
    )
