"""A researcher in a real browser: sign in, submit from a template, watch the job run with live charts.

Runs the whole portal (daphne, Celery worker and beat via `manage.py runportal`) on PostgreSQL
and Redis, and drives Debian's Chromium with Playwright.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.portal_process import RunningPortal, running_portal
from tests.services import chromium_path, postgres_reachable, redis_reachable, redis_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    if not postgres_reachable("postgres://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {redis_url()}")
    with running_portal(tmp_path_factory.mktemp("portal"), redis_url(), SIM_SPEED="60") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def sign_in(page: Page, portal: RunningPortal, username: str) -> None:
    page.goto(portal.url + "/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", "gridportal")
    page.click("button[type=submit]")
    page.wait_for_url(portal.url + "/")


def test_a_researcher_submits_a_job_and_watches_it_run_with_live_charts(portal: RunningPortal, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, portal, "alice")
    assert page.locator("#live-status").inner_text(timeout=10_000)

    page.goto(portal.url + "/jobs/new/")
    page.click("text=Blender frame range")
    page.fill("input[name=name]", "browser-shot")
    page.fill("input[name=walltime]", "00:10:00")
    page.click("#submit-job")
    page.wait_for_url("**/jobs/*/")
    job_url = page.url

    page.wait_for_function("() => document.getElementById('job-state').textContent.trim() === 'Running'", timeout=30_000)
    assert page.locator("#job-nodes").inner_text() != "—"

    def points() -> int:
        return int(
            page.evaluate("() => (document.getElementById('chart-utilization').data || []).reduce((n, t) => n + t.x.length, 0)")
        )

    before = points()
    time.sleep(3)
    after = points()
    assert after > before, f"the utilisation chart did not grow ({before} -> {after})"
    assert "[portal] job" in page.locator("#log").inner_text()
    # The log follows new lines: once it overflows, its end stays in view.
    page.wait_for_function(
        "() => { const l = document.getElementById('log'); return l.scrollHeight > l.clientHeight"
        " && l.scrollTop + l.clientHeight >= l.scrollHeight - 4; }",
        timeout=30_000,
    )
    page.screenshot(path=str(ARTIFACTS / "job-running.png"), full_page=True)
    # Cancel asks first; dismissing the question leaves the job running.
    questions: list[str] = []

    def answer_no(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", answer_no)
    page.click("#cancel-form button")
    assert questions and questions[0].startswith("Cancel job #")
    assert page.locator("#job-state").inner_text().strip() == "Running"

    page.wait_for_function("() => document.getElementById('job-state').textContent.trim() === 'Succeeded'", timeout=60_000)
    timeline = page.locator("#timeline").inner_text()
    for state in ("pending", "admitted", "dispatched", "running", "succeeded"):
        assert state in timeline
    assert not errors, errors
    page.goto(portal.url + "/")
    page.wait_for_function("() => document.getElementById('live-status').textContent === 'connected'", timeout=10_000)
    time.sleep(2.5)  # a live update has replaced the server-rendered lists
    safeguards = page.locator("#safeguard-log").inner_text()
    assert safeguards.strip(), "the safeguards list was emptied by a live update"
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert job_url


def test_an_outsider_cannot_open_another_teams_job_in_the_browser(portal: RunningPortal, browser: Browser) -> None:
    page = browser.new_page()
    sign_in(page, portal, "carol")
    response = page.goto(portal.url + "/jobs/1/")
    assert response is not None and response.status == 404
