"""The file-backed ports: one model's batches, labels and ledger (`FileStore`) on any fsspec
path, local disk by default (`evergreen.adapters.ports.BatchStore`). On fsspec's `memory://`
the same code is the in-memory store of tests and replays."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from evergreen.adapters import io, ledger
from evergreen.config import ModelConfig


class FileStore:
    """Batches under `data.batches`, labels files under `data.labels`, the monitor's ledger
    under `data.state`."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def list_batches(self) -> list[io.BatchFile]:
        return io.list_batches(self.config.data.path("batches"))

    def read_batch(self, batch: io.BatchFile, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One batch (only `columns` when given); DataReadError names an unreadable file."""
        return io.read_table(batch.path, columns=columns, max_rows=self.config.data.max_batch_rows)

    def read_labels(self, up_to_day: str | None = None) -> pd.DataFrame | None:
        """Labels delivered on or before `up_to_day` (all delivered so far when None)."""
        return io.read_labels(self.config.data.path("labels"), up_to_day=up_to_day)

    def read_ledger(self) -> ledger.BatchLedger:
        return ledger.read_ledger(self.config.data.path("state"))

    def record_batch(self, record: ledger.BatchRecord) -> None:
        ledger.record_batch(self.config.data.path("state"), record)
