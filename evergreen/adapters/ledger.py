"""The batch ledger: what the monitor decided about each production batch.

An append-mostly JSON record under the data's state folder. The monitor uses it to find
the batches it has not seen yet; retraining uses it to leave out batches that failed
validation.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from evergreen.adapters import io


class BatchRecord(BaseModel):
    day: str
    path: str
    valid: bool
    message: str = ""
    drift_detected: bool = False
    performance_degraded: bool = False
    events: list[str] = Field(default_factory=list)
    signals: list[str] = Field(
        default_factory=list, description="retrain-policy signals that fired (hysteresis history)"
    )
    flow_run_id: str | None = None
    # The batch's figures and the policy's verdict, kept for the model's status page (the
    # last batches as a table); absent in ledgers written before they were recorded.
    metric: str = ""
    estimated_metric: float | None = None
    realized_metric: float | None = None
    realized_on: str | None = None
    drift_share: float | None = Field(None, description="share of the features whose drift alerted")
    decision: str = Field("", description="retrain, or the blocker that held one (MonitorResult.decision)")
    policy: str = Field("", description="the retrain policy's verdict in a sentence")
    processed_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())


class BatchLedger(BaseModel):
    batches: dict[str, BatchRecord] = Field(default_factory=dict)
    episode: dict | None = Field(
        None, description="the model's current (or last) alert episode: decisions.episodes.Episode.to_dict()"
    )

    def unprocessed(self, days: list[str]) -> list[str]:
        return [d for d in days if d not in self.batches]

    def signals_before(self, day: str | None = None) -> list[list[str]]:
        """The policy signals recorded for each batch before `day` (every batch when None),
        oldest first."""
        return [r.signals for d, r in sorted(self.batches.items()) if day is None or d < day]

    def rejected(self) -> dict[str, str]:
        """Days of batches that failed validation, with the reason."""
        return {d: r.message for d, r in self.batches.items() if not r.valid}

    def with_record(self, record: BatchRecord, episode: dict | None = None) -> BatchLedger:
        """The ledger with `record` added (and the episode as it stands after it, if given)."""
        return BatchLedger(batches={**self.batches, record.day: record}, episode=episode if episode is not None else self.episode)

    def with_episode(self, episode: dict | None) -> BatchLedger:
        return BatchLedger(batches=self.batches, episode=episode)


def ledger_path(state_dir: str) -> str:
    return f"{state_dir.rstrip('/')}/monitor_ledger.json"


def read_ledger(state_dir: str) -> BatchLedger:
    raw = io.read_json(ledger_path(state_dir), default=None)
    return BatchLedger.model_validate(raw) if raw else BatchLedger()


def record_batch(state_dir: str, record: BatchRecord, episode: dict | None = None) -> BatchLedger:
    """Add (or replace) one batch's record, with the episode after it; the file is
    rewritten atomically."""
    ledger = read_ledger(state_dir).with_record(record, episode)
    io.write_json(ledger.model_dump(), ledger_path(state_dir))
    return ledger


def record_episode(state_dir: str, episode: dict) -> BatchLedger:
    """Replace the episode (a retrain requested between batches)."""
    ledger = read_ledger(state_dir).with_episode(episode)
    io.write_json(ledger.model_dump(), ledger_path(state_dir))
    return ledger
