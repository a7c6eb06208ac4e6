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
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.prefect_support import (
    form_config,
    in_child,
    run_loop,
    start_kept_server,
    stop_kept_server,
)

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


def _v1_field(page, label: str):  # noqa: ANN001, ANN202 - Playwright's Page and Locator
    """The V1 form's input of the field titled `label` (optional fields say so after it)."""
    title = page.get_by_text(re.compile(rf"^{re.escape(label)}( \(Optional\))?$"))
    return page.locator(".schema-form-input").filter(has=title).last


def _save(page, url: str, screenshot) -> None:  # noqa: ANN001 - Playwright's Page
    """Click Save and wait for the block's page. Once in CI (2026-12-07, a loaded machine) the
    page never left the form in 60 s: a click that landed before the form was ready does
    nothing, so one more click follows after 30 s (an unchanged Save twice is still unchanged,
    which the test then checks)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.get_by_role("button", name="Save").click()
    try:
        page.wait_for_url(url, timeout=30_000)
    except PlaywrightTimeout:
        screenshot("block-save-no-navigation")
        page.get_by_role("button", name="Save").click()
        page.wait_for_url(url)


def test_the_model_block_form_in_the_default_ui(kept: dict[str, Any], browser_page, screenshot) -> None:  # noqa: ANN001
    """The `evergreen-model` block's Edit page in Prefect's default (V1) UI: the config's
    sections are sections with human titles, the lists with a closed set of values
    (`retrain.signals`, the NannyML methods, the settings switched off) are multi-selects, and an unchanged Save keeps
    every value (an explicit default, a setting switched off).

    Open lists of names (`columns.features`, `categorical`, `slices`, the validation lists)
    stay JSON editors in V1: its form (Prefect 3.9's bundled prefect-ui-library, the
    `SchemaFormFields` that `BlockSchemaEditForm` uses) picks an array's widget in one
    place, `get component(){let e=this.getSelectOptions();return e.length?
    this.withProps(PCombobox,{options:e}):this.withProps(JsonInput)}`, the options coming only
    from `enum` / `items.enum` (prefect/server/ui/assets/index-*.js). No schema of a free
    list of strings gets anything but the JSON editor there; the V2 UI (`/v2`) renders the
    same schema as a list of inputs, asserted here too so a Prefect upgrade that changes
    either shows."""
    page, ui, api = browser_page, kept["ui"], kept["api_url"]
    block_id = in_child(api, "block", "ui-form")["id"]
    features = form_config().columns.features

    page.goto(f"{ui}/blocks/block/{block_id}/edit")
    page.get_by_text("Block Name").first.wait_for()
    _v1_field(page, "Features").wait_for()
    shot = screenshot("block-edit-v1")
    sections = page.locator(".schema-form-properties")
    for title in ("Model configuration", "Columns", "Retrain policy", "Promotion gate", "Canary", "MLflow registry and tracking"):
        assert sections.filter(has=page.get_by_text(re.compile(rf"^{re.escape(title)}( \(Optional\))?$"))).count(), (title, shot)
    closed = (
        ("Signals", "estimated_drop"), ("Continuous Methods", "jensen_shannon"), ("Categorical Methods", "jensen_shannon"),
        ("Settings switched off", "retrain.cooldown_hours"),
    )
    for label, shown in closed:
        field = _v1_field(page, label)
        assert field.locator(".p-select").count() == 1 and field.locator(".json-input").count() == 0, (label, shot)
        assert shown in field.inner_text(), (label, shot)
    # V1's limit (see the docstring): the features are a JSON list in a code editor.
    editor = _v1_field(page, "Features").locator(".json-input")
    assert editor.count() == 1, shot
    assert json.loads(editor.locator("textarea").input_value()) == features, shot

    # An unchanged Save in the V1 form keeps every value.
    _save(page, f"**/blocks/block/{block_id}", screenshot)
    page.get_by_text("Block updated successfully").first.wait_for()
    assert in_child(api, "check-block", "ui-form") == {"same": True, "cooldown_hours": None, "traffic_share": 0.2}

    # The V2 UI renders the same schema's features as a list of text inputs.
    page.goto(f"{ui}/v2/blocks/block/{block_id}/edit")
    label = page.locator("label").filter(has_text=re.compile(r"^Features$"))
    label.first.wait_for()
    group = page.locator("div.group").filter(has=label).last
    inputs = group.locator("textarea")
    inputs.first.wait_for()
    label.first.scroll_into_view_if_needed()
    shot = screenshot("block-edit-v2")
    assert [inputs.nth(i).input_value() for i in range(inputs.count())] == features, shot
    assert group.get_by_role("button", name="Add item").count() == 1, shot
