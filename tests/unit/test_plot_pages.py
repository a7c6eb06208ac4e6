"""A batch's plot page: small (plotly.js loaded once from the model's history run, never
inlined, never from a CDN), under the size limit even with many plots, and the loader that
finds plotly.js where MLflow's artifact viewer shows the page. The history plot's page."""

from __future__ import annotations

import re

import pytest

from evergreen.adapters import tracking
from evergreen.engines import plots
from evergreen.engines.monitoring import MonitorReport, compute_monitor, fit_monitor
from tests.unit.test_monitoring import FEATURES, make_config, make_frame, production

HEAD = tracking.batch_plotly_head("0123456789abcdef")
SCRIPT_SRC = re.compile(r"<(?:script|link|iframe|img)\b[^>]*\b(?:src|href)=")


@pytest.fixture(scope="module")
def drifted_report() -> MonitorReport:
    fitted = fit_monitor(make_frame(5000, seed=1), make_config())
    return compute_monitor(fitted, production(make_frame(1000, seed=2, shift=2.0, start="2024-02-01")), None)


def test_the_loader_points_at_the_history_run_and_never_a_cdn() -> None:
    path = tracking.plotly_artifact_path()
    assert path.startswith("plotly/plotly-") and path.endswith(".min.mjs")  # .js is served as text/plain
    assert f'"get-artifact?path={path}&run_uuid=0123456789abcdef"' in HEAD
    assert f'"../../../0123456789abcdef/artifacts/{path}"' in HEAD  # as files: <exp>/<run>/artifacts/
    # The one script tag with a source is written by the loader, with a URL it computes.
    assert SCRIPT_SRC.findall(HEAD) == ["<script src="] and "src=\"' + src + '\"" in HEAD
    assert "cdn" not in HEAD.lower() and "https://" not in HEAD
    assert "<\\/script>" in HEAD and HEAD.count("</script>") == 1


@pytest.mark.slow
def test_an_alerting_batch_page_is_small_and_loads_plotly_once(drifted_report: MonitorReport) -> None:
    assert drifted_report.drifted_features
    inline = drifted_report.plots_for("on_alert", True)
    page = drifted_report.plots_for("on_alert", True, HEAD, max_bytes=tracking.PLOT_PAGE_LIMIT)
    assert len(page.encode()) <= tracking.PLOT_PAGE_LIMIT < len(inline.encode())
    assert len(page) * 10 < len(inline)
    assert HEAD in page and "Plotly.newPlot" in page and "plotly.js v" not in page.lower()
    assert page.count('class="plotly-graph-div"') == inline.count('class="plotly-graph-div"') > len(FEATURES)


@pytest.mark.slow
def test_a_page_over_the_limit_keeps_the_drifted_features_then_the_summary(drifted_report: MonitorReport) -> None:
    full = drifted_report.plots_for("always", False, HEAD)
    drifted = drifted_report.drifted_features
    # Just under the full page: the per-feature plots of the drifted features only, the table of all.
    cut = drifted_report.plots_for("always", False, HEAD, max_bytes=len(full.encode()) - 1)
    assert len(cut.encode()) < len(full.encode())
    assert "drifted features only" in cut and "Univariate drift per feature" in cut
    assert cut.count('class="plotly-graph-div"') == full.count('class="plotly-graph-div"') - (len(FEATURES) - len(drifted))
    # Smaller still: the summary page, saying why.
    tiny = drifted_report.plots_for("always", False, HEAD, max_bytes=1000)
    assert "Per-feature plots left out" in tiny and "Univariate drift per feature" in tiny


def test_history_page_draws_metric_and_drift_share_per_batch() -> None:
    points = [
        {"step": 1, "batch": "2024-03-02", "estimated": 0.9, "realized": None, "drift_share": 0.25},
        {"step": 0, "batch": "2024-03-01", "estimated": 0.95, "realized": 0.94, "drift_share": 0.0},
    ]
    page = plots.monitoring_history_page("toy", "roc_auc", points, HEAD)
    assert HEAD in page and 'id="evergreen-history"' in page
    assert page.index("2024-03-01") < page.index("2024-03-02")  # batches in order
    assert "estimated roc_auc" in page and "realized roc_auc" in page and "drifted features (share)" in page
    assert len(page.encode()) < 50_000


def test_monitoring_point_reads_the_drift_share() -> None:
    from evergreen.reports import MonitorResult

    result = MonitorResult(
        model="toy", batch_id="2024-03-01", batch_path="x", valid=True, metric="roc_auc", rows=10,
        features={"a": {"alert": True, "value": 0.3}, "b": {"alert": False}, "c": {}, "d": {"alert": True}},
        estimated_metric=0.9,
    )
    point = tracking.monitoring_point(result)
    assert point["drift_share"] == 0.5 and point["drifted_features"] == 2 and point["realized"] is None
    rejected = tracking.monitoring_point(result.model_copy(update={"valid": False}))
    assert rejected["drift_share"] is None and rejected["valid"] is False
    note = tracking.describe_batch(result, "h1")
    assert note.startswith("**2024-03-01**: 10 rows, valid") and "drifted features: a, d (of 4)" in note
    assert "estimated roc_auc: 0.9000" in note and "realized" not in note and "`h1`" in note
    bad = tracking.describe_batch(result.model_copy(update={"valid": False, "message": "ids duplicated"}))
    assert "**rejected**" in bad and "why: ids duplicated" in bad
