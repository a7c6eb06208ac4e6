"""What a user sees in the Prefect UI (headless Chromium on the machine's own Chromium):
the server `evergreen demo --keep-server` leaves running answers on its port after the
process that started it is gone, its UI reaches its API, and after a short loop of the real
flows the model's status page shows its champion, canary and last decisions, and the
retrain's page shows the version it registered.

One kept server for the module (started by a child process that exits, as the demo does);
the loop runs in another child process against it (`prefect_support`). Screenshots are
saved under each test's temporary folder."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.prefect_support import run_loop, start_kept_server, stop_kept_server

pytestmark = pytest.mark.slow

MODEL = "ui-loan"


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    info = start_kept_server(tmp_path_factory.mktemp("kept-prefect"))
    try:
        yield {**info, "ui": info["api_url"].removesuffix("/api")}
    finally:
        stop_kept_server(info["pid"])


@pytest.fixture(scope="module")
def story(kept: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_loop(tmp_path_factory.mktemp("ui-loop"), MODEL, kept["api_url"])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local server
        return json.loads(response.read())


def _open_latest_artifact(page, ui: str, key: str, expect: str) -> str:  # noqa: ANN001 - Playwright's Page
    """Open the artifact key's page as a user does, then its newest version, wait until
    `expect` shows; the page's text."""
    page.goto(f"{ui}/artifacts/key/{key}")
    link = page.locator('a[href^="/artifacts/artifact/"]').first
    link.wait_for()
    link.click()
    page.get_by_text(expect, exact=False).first.wait_for()
    return page.inner_text("body")


def test_the_kept_server_outlives_its_starter_and_its_ui_reaches_its_api(kept: dict[str, Any], browser_page, screenshot) -> None:  # noqa: ANN001
    # The process that started it has exited (start_kept_server waited for it): it answers.
    assert _get(f"{kept['api_url']}/health") is True
    # The UI is told its API's port (PREFECT_UI_API_URL), not the default 4200.
    assert _get(f"{kept['ui']}/ui-settings")["api_url"] == kept["api_url"]
    # The Settings page shows the server's settings as the UI read them from its API.
    browser_page.goto(f"{kept['ui']}/settings")
    browser_page.get_by_text("Server Settings").first.wait_for()
    browser_page.get_by_text(kept["api_url"], exact=False).first.wait_for()
    shot = screenshot("settings")
    assert "Can't connect to Server API" not in browser_page.inner_text("body"), shot


def test_the_models_story_reads_in_the_prefect_ui(kept: dict[str, Any], story: dict[str, Any], browser_page, screenshot) -> None:  # noqa: ANN001
    assert story["retrain"]["version"] == "2", story
    assert story["promote"]["state"] == "Completed", story
    # A canary without evidence yet: a state of its own, not Prefect's "Pending".
    assert story["canary"]["state"] == "AwaitingEvidence", story
    page, ui = browser_page, kept["ui"]

    status = _open_latest_artifact(page, ui, f"{MODEL}-status", "Last decisions")
    shot = screenshot("status")
    assert f"{MODEL}: champion v1, canary v2 under review" in status, shot
    assert "Last decisions" in status and "gate passed: canary" in status and "registered as challenger" in status, shot
    assert "retrain: go" in status and "Last batches" in status, shot

    retrain = _open_latest_artifact(page, ui, f"{MODEL}-retrain", "registered v2")
    shot = screenshot("retrain")
    assert f"retrain · {MODEL}: registered v2" in retrain, shot
    assert "training rows" in retrain and "Evaluation" in retrain, shot

    fleet = _open_latest_artifact(page, ui, "evergreen-fleet", "champion v1")
    shot = screenshot("fleet")
    assert MODEL in fleet and "champion v1" in fleet, shot

    # The run says why it ended as it did, in its state.
    page.goto(f"{ui}/runs/flow-run/{story['canary']['run']}")
    page.get_by_text("AwaitingEvidence").first.wait_for()
    screenshot("canary-run")
