"""The annotate app in headless Chromium while its Argilla is stopped and restarted: ratings keep being accepted with
an "Offline, N pending" notice and reach Argilla once when it is back; once the records at hand are answered, the page
says more cannot be fetched, not that the round is done (screenshot: test-artifacts/annotate-offline.png).
"""

from __future__ import annotations

import re

import pytest

from alignkit import serve
from tests.e2e.conftest import press_key, sign_in
from tests.integration.test_argilla_outage import RestartableArgilla, new_round, stored_by

pytestmark = [pytest.mark.e2e, pytest.mark.argilla, pytest.mark.filterwarnings("ignore:.* not found:UserWarning")]


@pytest.fixture
def argilla(tmp_path_factory):
    local = RestartableArgilla(tmp_path_factory.mktemp("offline-argilla"))
    try:
        yield local
    finally:
        local.stop()


def test_browser_rating_survives_an_argilla_restart(argilla, page, artifacts, tmp_path):
    import argilla as rg
    from playwright.sync_api import expect

    owner = rg.Argilla(api_url=argilla.url, api_key=argilla.api_key)
    password = new_round(owner, tmp_path, "offline-browser", "browser-rater", 4)
    env = {"ARGILLA_API_URL": argilla.url, "ALIGNKIT_OUTBOX": str(tmp_path / "outbox.sqlite")}
    with serve.start_app("annotate", env=env, log_dir=tmp_path / "logs") as app:
        sign_in(page, app.url, "browser-rater", password)

        def rate(key: str) -> None:
            """Choose and submit on the record shown, then wait until the page shows another one."""
            prompt = page.get_by_text(re.compile(r"^offline-browser: question \d\?$"))
            prompt.wait_for()
            shown = prompt.inner_text()
            # Only elements of the finished run: while a slow rerun (Argilla just restarted) is under way, Streamlit
            # keeps the last run's button beside the new one, and two matches would fail the strict locator.
            fresh = page.locator('[data-testid="stElementContainer"][data-stale="false"]')
            button = fresh.get_by_role("button", name=f"Response {key} is better")
            button.wait_for()  # its shortcut listens once it is on the page: the prompt can be drawn before it
            press_key(page, key)
            expect(button).to_have_attribute("data-testid", "stBaseButton-primary", timeout=15_000)
            press_key(page, "Enter")
            # offline, the rerun that shows the next record first waits for Argilla's connection to fail: on a busy
            # machine that took over playwright's default 5 s (1 run in 4 with other browser tests beside it)
            expect(page.get_by_text(shown, exact=True)).to_have_count(0, timeout=30_000)

        rate("1")
        page.get_by_text("1 submitted").wait_for()
        argilla.stop()
        rate("2")
        page.get_by_text("Offline, 1 pending").wait_for()
        rate("2")
        page.get_by_text("Offline, 2 pending").wait_for()
        page.screenshot(path=str(artifacts / "annotate-offline.png"))
        rate("1")  # the last record at hand: more may wait in Argilla, so the round is not said to be done
        page.get_by_text("Offline, 3 pending").wait_for()
        page.get_by_text("every record at hand").wait_for()
        expect(page.get_by_text("Nothing left to rate")).to_have_count(0)

        argilla.restart()
        page.get_by_role("button", name="Check again").click()  # the rerun flushes the outbox, then asks Argilla
        page.get_by_text("4 submitted").wait_for(timeout=60_000)
        page.get_by_text("Nothing left to rate").wait_for()
        expect(page.get_by_text("Offline,")).to_have_count(0)

    stored = stored_by(owner, "offline-browser", "browser-rater")
    assert sorted(preference for *_, preference in stored) == ["1", "1", "2", "2"]
    assert len({record_id for record_id, *_ in stored}) == 4, "four records, one response each"
