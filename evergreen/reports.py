"""Typed results of the flows, as written by the CLI's --out JSON."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class DistributionFinding(BaseModel):
    """What a distribution check found in one column of a batch: values beyond the monitor
    reference's range (`check="range"`) or categories the reference never had
    (`check="categories"`), in more than the tolerated share of the column's non-null values.

    Never a rejection by itself (unless the config enforces the check for the column, and
    then it is a failure, not a finding): the batch is monitored, the finding is reported
    and counts as drift of the feature (`decisions.alerts.decide_alerts`).
    """

    column: str
    check: Literal["range", "categories"]
    expectation_type: str
    share: float = Field(description="share of the column's non-null values beyond the range / unseen")
    count: int = Field(description="how many values")
    tolerated_share: float
    # Range findings: [min, max] checked (the reference's widened), of the reference, of the batch.
    bounds: list[float | str | None] | None = None
    reference_range: list[float | str | None] | None = None
    observed_range: list[float | str | None] | None = None
    unseen: list[dict[str, Any]] = Field(
        default_factory=list, description="the most frequent unseen categories: {value, count}"
    )
    message: str = ""


class MonitorResult(BaseModel):
    """What the monitor concluded about one batch (the `evergreen monitor --out` JSON)."""

    model: str
    batch_id: str
    batch_path: str
    valid: bool
    message: str = ""
    failures: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[dict[str, Any]] = Field(
        default_factory=list, description="findings that did not reject the batch (e.g. unknown columns)"
    )
    distribution_findings: list[DistributionFinding] = Field(
        default_factory=list,
        description="per column: values beyond the reference range, unseen categories (reported, drift evidence)",
    )
    drift_detected: bool = False
    performance_degraded: bool = False
    features: dict[str, dict[str, Any]] = Field(default_factory=dict)
    multivariate: dict[str, Any] | None = None
    estimated_metric: float | None = None
    realized_metric: float | None = None
    realized_on: str | None = Field(None, description="batch whose labels gave the realized metric")
    metric: str = ""
    reasons: list[str] = Field(default_factory=list)
    signals: list[str] = Field(default_factory=list, description="retrain-policy signals that fired")
    policy: str = Field("", description="the retrain policy's verdict on this batch")
    alert: bool = Field(False, description="the policy's signals held by the hysteresis: the alert events went out")
    decision: str = Field("none", description="retrain, or the blocker that holds one (invalid, no_alert, cooldown, ...)")
    events: list[str] = Field(default_factory=list)
    event_ids: list[str] = Field(default_factory=list)
    rows: int = 0
    episode: dict[str, Any] | None = Field(
        None, description="the alert episode after this batch (id, change point, kinds, transition)"
    )
    scored_by: str | None = Field(
        None, description="the champion version that scored a batch without the serving model's predictions"
    )
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None


class RetrainResult(BaseModel):
    """What a retrain produced (the `evergreen retrain --out` JSON)."""

    model_name: str
    status: str = Field(description="registered | rejected | skipped")
    version: str | None = None
    run_id: str | None = None
    dataset_digest: str | None = None
    dataset_uri: str | None = None
    dataset_reused: bool = False
    rows: int = 0
    aliases: list[str] = Field(default_factory=list)
    bootstrap: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    tracking_uri: str | None = None
    trigger: dict[str, Any] = Field(default_factory=dict)
    sources: list[str] = Field(default_factory=list)
    excluded: dict[str, str] = Field(default_factory=dict)
    message: str = ""
    blocked_by: str | None = Field(None, description="the start check that held a skipped retrain")
    events: list[str] = Field(default_factory=list)


class PromotionResult(BaseModel):
    """Outcome of promote / canary-review / rollback (their `--out` JSON)."""

    model_name: str
    decision: str = Field(description="passed|failed|promoted|rolled_back|pending|skipped|unchanged")
    reasons: list[str] = Field(default_factory=list)
    champion: str | None = None
    canary: str | None = None
    challenger: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
