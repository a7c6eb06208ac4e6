"""Publishing what the monitor found: Prefect artifacts and an MLflow run per batch."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from evergreen.adapters import tracking
from evergreen.config import ModelConfig
from evergreen.reports import MonitorResult


@dataclass(frozen=True)
class PublishedRun:
    run_id: str
    experiment_id: str
    url: str


def _artifact_key(config: ModelConfig, kind: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    raw = f"{config.name}-{kind}".lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


def _summary_markdown(result: MonitorResult, run: PublishedRun | None) -> str:
    status = "REJECTED" if not result.valid else "drift detected" if result.drift_detected else "no drift"
    lines = [
        f"# Monitor: `{result.model}` batch `{result.batch_id}` — {status}",
        "",
        f"- rows: {result.rows}",
        f"- data valid: **{result.valid}**",
    ]
    if not result.valid:
        lines.append(f"- why: {result.message}")
    else:
        est = "n/a" if result.estimated_metric is None else f"{result.estimated_metric:.4f}"
        real = "n/a (no labels yet)" if result.realized_metric is None else f"{result.realized_metric:.4f}"
        lines += [
            f"- drift detected: **{result.drift_detected}**",
            f"- performance degraded: **{result.performance_degraded}**",
            f"- estimated {result.metric}: {est}",
            f"- realized {result.metric}: {real}" + (f" (batch {result.realized_on})" if result.realized_on else ""),
        ]
        if result.multivariate:
            mv = result.multivariate
            lines.append(f"- multivariate reconstruction error: {mv.get('value')} (alert: {mv.get('alert')})")
    if result.reasons:
        lines += ["", "## Reasons", *[f"- {r}" for r in result.reasons]]
    if result.distribution_findings:
        lines += [
            "",
            "## Distribution findings (drift evidence, not a rejection)",
            *[f"- `{f.column}` ({f.check}): {f.message}" for f in result.distribution_findings],
        ]
    if result.warnings:
        lines += ["", "## Warnings", *[f"- `{w.get('column')}`: {w.get('message')}" for w in result.warnings]]
    lines += ["", f"Events: {', '.join(result.events) or 'none'}"]
    if run:
        lines.append(f"\nMLflow run: [{run.run_id}]({run.url})")
    return "\n".join(lines)


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(config: ModelConfig, result: MonitorResult, run: PublishedRun | None) -> None:
    """Prefect artifacts: a markdown summary, a per-feature drift table, a link to MLflow."""
    create_markdown_artifact(
        key=_artifact_key(config, "monitor-summary"),
        markdown=_summary_markdown(result, run),
        description=f"monitor summary for batch {result.batch_id}",
    )
    if result.valid and result.features:
        records = [{"feature": name, **fields} for name, fields in result.features.items()]
        create_table_artifact(
            key=_artifact_key(config, "feature-drift"),
            table=records,
            description=f"per-feature drift for batch {result.batch_id}",
        )
    if not result.valid and result.failures:
        create_table_artifact(
            key=_artifact_key(config, "validation-failures"),
            table=result.failures,
            description=f"failed expectations for batch {result.batch_id}",
        )
    if run:
        create_link_artifact(
            key=_artifact_key(config, "monitor-mlflow-run"),
            link=run.url,
            link_text=f"MLflow run for batch {result.batch_id}",
        )


class TrackedRuns(tracking.MlflowRunLog):
    """The run log users run (`evergreen.adapters.ports.RunLog`): MLflow runs, and Prefect
    artifacts for the monitor's batches."""

    def publish_monitor(
        self, config: ModelConfig, result: MonitorResult, index: int, report, chunks: list[dict], flow_run_id: str | None  # noqa: ANN001
    ) -> tuple[str | None, str | None]:
        """NannyML's plots of the batch (`monitoring.plots`: every plot when it alerts), an
        MLflow run of the monitoring experiment, and the Prefect artifacts."""
        run_id, url = tracking.MlflowRunLog().publish_monitor(config, result, index, report, chunks, flow_run_id)
        published = PublishedRun(run_id=run_id, experiment_id="", url=url)
        publish_artifacts.fn(config, result.model_copy(update={"mlflow_run_id": run_id, "mlflow_run_url": url}), published)
        return run_id, url
