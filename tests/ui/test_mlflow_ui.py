"""What a user sees in the MLflow UI after the loop ran (issue 19, the MLflow half).

A real `mlflow server` on a temporary SQLite store; the loop's own steps write to it (a
bootstrap, monitored batches, a retrain whose version the gate rejects); headless Chromium
opens the UI: the monitoring experiment opens on its runs (model-training view), a version's
page reads as a registry page with its gate result, the model's page has the alias history,
a batch's plot page is small and draws its Plotly figures offline, the history run charts
metrics over batches. Screenshots are kept in each test's temporary folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evergreen.adapters import links
from tests.ui.mlflow_support import (
    FLOW_RUN_ID,
    MODEL,
    PREFECT_UI,
    LoopRecord,
    MlflowUiServer,
    drive_loop,
    toy_config,
    write_stream,
)

pytestmark = pytest.mark.slow

PAGE_LIMIT = 500_000  # bytes: a batch's plot page (plotly.js is loaded from the history run)


@dataclass
class World:
    server: MlflowUiServer
    config: object
    record: LoopRecord
    monitoring_experiment: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("mlflow-ui")
    server = MlflowUiServer(root / "server")
    saved = {k: os.environ.get(k) for k in ("PREFECT_UI_URL",)}
    os.environ["PREFECT_UI_URL"] = PREFECT_UI
    server.start()
    try:
        config = toy_config(root, server.url)
        write_stream(config, days=5, drift_at=2)  # while the server boots
        server.ready()
        record = drive_loop(config, batches=4)
        import mlflow

        exp = mlflow.MlflowClient(server.url).get_experiment_by_name(config.mlflow.monitoring_experiment)
        yield World(server, config, record, exp.experiment_id)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _client(world: World):  # noqa: ANN202
    import mlflow

    return mlflow.MlflowClient(world.server.url, world.server.url)


def test_experiments_are_model_training_and_links_open_that_view(world: World) -> None:
    client = _client(world)
    for name in (world.config.mlflow.monitoring_experiment, world.config.mlflow.training_experiment):
        assert client.get_experiment_by_name(name).tags["mlflow.experimentKind"] == "custom_model_development"
    assert all(url.endswith("?workflowType=machine_learning") for url in world.record.monitor_urls)
    run = client.get_run(world.record.monitor_run_ids[0])
    assert run.data.tags["evergreen.prefect.flow_run_url"] == f"{PREFECT_UI}/runs/flow-run/{FLOW_RUN_ID}"
    assert "rows, valid" in run.data.tags["mlflow.note.content"]
    version = client.get_model_version(MODEL, world.record.rejected)
    assert version.tags["evergreen.prefect.flow_run_url"] == f"{PREFECT_UI}/runs/flow-run/{FLOW_RUN_ID}"
    note = client.get_run(version.run_id).data.tags["mlflow.note.content"]
    assert f"#/models/{MODEL}/versions/{version.version}" in note


def test_monitoring_experiment_lists_its_runs_in_the_model_training_view(world: World, browser_page, screenshot) -> None:  # noqa: ANN001
    page = browser_page
    # MLflow 3.17's UI opens an experiment in the view the user last chose (GenAI at first),
    # whatever its kind tag says: Evergreen's links carry the model-training view's query.
    page.goto(links.mlflow_experiment_url(world.server.url, world.monitoring_experiment))
    page.wait_for_url(re.compile(r"/runs\?.*workflowType=machine_learning"))
    page.get_by_text(f"history · {MODEL}").first.wait_for()
    first = page.get_by_text(re.compile(rf"monitor · {MODEL} · \d{{4}}-\d\d-\d\d")).first
    first.wait_for()
    screenshot("monitoring-experiment")
    body = page.inner_text("body")
    assert len(re.findall(rf"monitor · {MODEL} · ", body)) == len(world.record.monitor_run_ids), body[:2000]
    assert "Traces" not in page.url and "/traces" not in page.url
    # The link a monitor run's result (and its Prefect artifact) carries opens the run's page,
    # whose description says what the batch showed.
    page.goto(world.record.monitor_urls[-1])
    page.get_by_text("drifted features:").first.wait_for()
    screenshot("monitor-run")
    assert f"monitor · {MODEL} · " in page.inner_text("body")


def test_rejected_version_page_shows_its_description_and_gate_result(world: World, browser_page, screenshot) -> None:  # noqa: ANN001
    page = browser_page
    version = world.record.rejected
    page.goto(f"{world.server.url}/#/models/{MODEL}/versions/{version}")
    page.get_by_text("Why rejected").first.wait_for()
    screenshot("rejected-version")
    body = page.inner_text("body")
    assert f"{MODEL} v{version} — rejected" in body
    for reason in world.record.rejected_reasons:
        assert " ".join(reason.split())[:120] in " ".join(body.split())
    assert re.search(r"Gate\s+failed against champion v" + world.record.champion, body), body[:3000]
    assert "Gate checks" in body and "Trigger" in body and "Training data" in body
    # The training run is named after the version it registered.
    run_id = _client(world).get_model_version(MODEL, version).run_id
    assert _client(world).get_run(run_id).info.run_name == f"retrain · {MODEL} · v{version}"


def test_model_page_shows_the_alias_history_as_a_table(world: World, browser_page, screenshot) -> None:  # noqa: ANN001
    page = browser_page
    page.goto(f"{world.server.url}/#/models/{MODEL}")
    page.get_by_text("Alias history").first.wait_for()
    screenshot("registered-model")
    table = page.locator("table", has_text="reason").first
    text = table.inner_text()
    assert "bootstrap: empty registry" in text and "gate failed" in text
    assert "champion" in text and "challenger" in text


def test_batch_plot_page_is_small_and_renders_offline(world: World, browser_page, screenshot, tmp_path: Path) -> None:  # noqa: ANN001
    client = _client(world)
    run_id = world.record.monitor_run_ids[-1]
    local = Path(client.download_artifacts(run_id, "plots/monitor.html", str(tmp_path)))
    size = local.stat().st_size
    print(f"\nbatch plot page: {size:,} bytes")
    assert 0 < size <= PAGE_LIMIT
    assert "cdn" not in local.read_text(encoding="utf-8").lower()
    page = browser_page
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((world.server.url, "blob:", "data:")) else None)
    run_page = links.mlflow_run_url(world.server.url, world.monitoring_experiment, run_id)
    page.goto(run_page.replace("?", "/artifacts/plots/monitor.html?"))
    frame = page.frame_locator("iframe.mlflow-html-iframe")
    frame.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=90_000)
    assert frame.locator(".js-plotly-plot").count() >= 1
    screenshot("batch-plot-page")
    assert outside == [], outside


def test_history_run_charts_metrics_over_batches(world: World, browser_page, screenshot) -> None:  # noqa: ANN001
    client = _client(world)
    history = client.search_runs(
        [world.monitoring_experiment], filter_string="tags.`evergreen.monitoring_history` = 'true'"
    )
    assert len(history) == 1
    run = history[0]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "drift_share")]
    assert steps == sorted(steps) and len(steps) == len(world.record.monitor_run_ids)
    assert len(client.get_metric_history(run.info.run_id, "estimated.roc_auc")) == len(steps)
    page = browser_page
    run_page = links.mlflow_run_url(world.server.url, world.monitoring_experiment, run.info.run_id)
    page.goto(run_page.replace("?", "/artifacts/plots/history.html?"))
    frame = page.frame_locator("iframe.mlflow-html-iframe")
    frame.locator("#evergreen-history .main-svg").first.wait_for(timeout=90_000)
    screenshot("history-plot")
    page.goto(run_page.replace("?", "/model-metrics?"))
    page.get_by_text("drift_share").first.wait_for()
    # MLflow draws each metric over its steps (batches) as a line chart.
    page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=60_000)
    screenshot("history-metrics")
