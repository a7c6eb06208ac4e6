"""Browser tests: what a user sees in the Prefect UI and the MLflow UI, in headless Chromium.

Playwright drives the machine's own Chromium (Debian's `chromium`, installed by `.ci/run`
when missing); no browser is ever downloaded. Screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The machine's Chromium: $EVERGREEN_CHROMIUM, else the first candidate on PATH."""
    explicit = os.environ.get("EVERGREEN_CHROMIUM")
    if explicit:
        return explicit
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (skipped, with the reason, where none is
    installed). Not per session: Playwright's sync API runs an asyncio loop in the main
    thread while it is open, and Prefect's sync calls made there then return coroutines, so
    the browser is closed before the tests after this folder run."""
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine: apt-get install -y chromium (.ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser_page(browser, tmp_path: Path) -> Iterator:
    """A fresh page (1440x900) whose console errors are kept on `page.console_errors`."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.console_errors = errors  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(browser_page, tmp_path: Path):
    """`screenshot(name)` saves the page as tmp_path/name.png and returns the path."""

    def take(name: str) -> Path:
        out = tmp_path / f"{name}.png"
        browser_page.screenshot(path=str(out), full_page=True)
        return out

    return take
