"""Where a model came from: code version and trigger, as registry tags."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def code_version() -> str:
    """The git commit of the code that runs (with "+dirty" for local changes), else the
    package version."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"evergreen=={version('evergreen')}"
        except PackageNotFoundError:
            return "unknown"


@dataclass(frozen=True)
class Trigger:
    """Why a retrain ran: "schedule", "event" (with the event's id, reason, metric) or "manual"."""

    kind: str = "manual"
    event_id: str | None = None
    reason: str | None = None
    metric: str | None = None

    @classmethod
    def of(cls, trigger: str | None, event_id: str | None, reason: str | None, metric: str | None) -> Trigger:
        kind = trigger or ("event" if event_id else "manual")
        if kind not in ("schedule", "event", "manual"):
            raise ValueError(f"trigger must be schedule, event or manual, not {kind!r}")
        return cls(kind=kind, event_id=event_id, reason=reason, metric=metric)

    def tags(self) -> dict[str, str]:
        tags = {"evergreen.trigger": self.kind}
        if self.event_id:
            tags["evergreen.trigger.event_id"] = self.event_id
        if self.reason:
            tags["evergreen.trigger.reason"] = self.reason[:4000]
        if self.metric:
            tags["evergreen.trigger.metric"] = self.metric
        return tags
