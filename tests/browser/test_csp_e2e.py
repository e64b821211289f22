"""The pages work under the Content Security Policy: no violation, charts drawn, websockets connected.

Runs the whole portal (`manage.py runportal`) with DEBUG off and the proposed security settings
(tests/security/production_settings.py, which adds the CSP middleware), and drives Chromium.
Cookies are Secure as in production; Chromium treats http://127.0.0.1 as a secure context.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.portal_process import RunningPortal, running_portal
from tests.browser.test_e2e import CHROMIUM_ARGS, sign_in
from tests.services import chromium_path, postgres_reachable, redis_reachable, redis_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]
CSP_WORDS = ("Content Security Policy", "Content-Security-Policy")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    if not postgres_reachable("postgres://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {redis_url()}")
    settings = {
        "DJANGO_SETTINGS_MODULE": "tests.security.production_settings",
        "SIM_SPEED": "60",
    }
    with running_portal(tmp_path_factory.mktemp("csp"), redis_url(), **settings) as running:
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


def chart_traces(page: Page, element_id: str) -> int:
    # Functions, not expressions: Playwright evaluates a bare expression with eval(), which the policy forbids.
    return int(page.evaluate(f"() => (document.getElementById('{element_id}').data || []).length"))


def test_the_dashboard_and_a_job_page_work_under_the_policy(portal: RunningPortal, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    violations: list[str] = []
    errors: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if any(w in message.text for w in CSP_WORDS) else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, portal, "alice")
    response = page.goto(portal.url + "/")
    assert response is not None and "script-src 'self' 'nonce-" in response.headers["content-security-policy"]
    page.wait_for_function("() => document.getElementById('live-status').textContent === 'connected'", timeout=15_000)
    # Both charts drawn at one moment (a live update redraws them; reading them one by one raced it).
    page.wait_for_function(
        "() => ['chart-utilization', 'chart-queue'].every(id => (document.getElementById(id).data || []).length > 0)",
        timeout=15_000,
    )

    page.goto(portal.url + "/jobs/new/")
    page.click("text=Blender frame range")
    page.fill("input[name=name]", "csp-shot")
    page.fill("input[name=walltime]", "00:10:00")
    page.click("#submit-job")
    page.wait_for_url("**/jobs/*/")
    page.wait_for_function("() => document.getElementById('job-state').textContent.trim() === 'Running'", timeout=30_000)
    page.wait_for_function("() => (document.getElementById('chart-utilization').data || []).length > 0", timeout=15_000)
    page.goto(portal.url + "/teams/vision/")
    page.wait_for_load_state("networkidle")
    assert not violations, violations
    assert not errors, errors


def test_an_injected_inline_script_is_blocked(portal: RunningPortal, browser: Browser) -> None:
    """The policy is really enforced: a script without the nonce does not run, and Chromium reports it."""
    page = browser.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if any(w in message.text for w in CSP_WORDS) else None)
    sign_in(page, portal, "alice")
    page.evaluate("() => document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.pwned=1\">')")
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.pwned === undefined")
    assert violations
