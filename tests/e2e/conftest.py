"""Browser tests: a real local Argilla (the same fixture as tests/integration), the Streamlit apps started by
`alignkit.serve`, and the system's Chromium driven by Playwright (no browser download: `apt-get install chromium`,
or point `ALIGNKIT_CHROMIUM` at another Chromium/Chrome binary)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alignkit import serve
from alignkit.feedback import server

CHROMIUM = os.environ.get("ALIGNKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def annotate_app(argilla_server: server.LocalArgilla, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The annotate app on a free port, talking to the test Argilla; yields its URL."""
    logs = tmp_path_factory.mktemp("app-logs")
    with serve.start_app("annotate", env={"ARGILLA_API_URL": argilla_server.url}, log_dir=logs) as app:
        yield app.url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium`, or set ALIGNKIT_CHROMIUM")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def sign_in(page: Any, url: str, username: str, password: str) -> None:
    """Open the annotate app at `url` and sign in with its login form."""
    page.goto(url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.keyboard.press("Enter")


def press_key(page: Any, key: str) -> None:
    """Press `key` once the app has finished its rerun: Streamlit's button shortcuts listen on the rendered buttons,
    and a key pressed while the script still runs can be lost (CI once lost an Enter after a choice had rendered)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()
    page.keyboard.press(key)
