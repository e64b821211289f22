"""GPU telemetry in a real browser: live charts, and an overheating node taken out by the thermal guard.

Runs the whole portal (`manage.py runportal`: daphne, Celery worker and beat) on PostgreSQL and
Redis, with the telemetry cycle every second and a short hot window. Telemetry comes from the
simulator, the default source (no PROMETHEUS_URL): the cycle pushes through the Redis channel
layer to the pages. A researcher watches their job's GPU chart grow; `manage.py sim_fault` heats
the job's node, and an operator sees the node turn cordoned with the thermal reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.portal_process import RunningPortal, running_portal
from tests.browser.test_e2e import CHROMIUM_ARGS, sign_in
from tests.services import chromium_path, postgres_reachable, redis_reachable, redis_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# A loaded GPU on an overheating node passes 85 °C (the default cordon threshold) within ~10-30 s.
CORDON_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    if not postgres_reachable("postgres://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {redis_url()}")
    env = {
        "SIM_SPEED": "1",  # jobs run for minutes: long enough to heat their node
        "TELEMETRY_CYCLE_S": "1",
        "GUARD_HOT_WINDOW_S": "2",
        "GUARD_COOL_WINDOW_S": "3600",  # the node must stay cordoned while the test looks
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    with running_portal(tmp_path_factory.mktemp("telemetry"), redis_url(), **env) as running:
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


def new_page(browser: Browser, portal: RunningPortal, username: str) -> tuple[Page, list[str]]:
    page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, portal, username)
    return page, errors


def chart_points(page: Page, chart_id: str) -> int:
    script = f"() => (document.getElementById('{chart_id}').data || []).reduce((n, t) => n + (t.x || []).length, 0)"
    return int(page.evaluate(script))


def heat_cells(page: Page) -> str:
    """The heat map's drawn values, as text: it changes when a pushed cycle is drawn."""
    return str(page.evaluate("() => JSON.stringify(((document.getElementById('chart-heatmap').data || [])[0] || {}).z || [])"))


def submit_job(page: Page, portal: RunningPortal) -> str:
    page.goto(portal.url + "/jobs/new/")
    page.click("text=Blender frame range")
    page.fill("input[name=name]", "hot-render")
    page.fill("input[name=walltime]", "00:30:00")
    page.click("#submit-job")
    page.wait_for_url("**/jobs/*/")
    page.wait_for_function("() => document.getElementById('job-state').textContent.trim() === 'Running'", timeout=30_000)
    return page.locator("#job-nodes").inner_text().split(",")[0].strip()


def test_live_gpu_charts_and_an_overheating_node_cordoned_by_the_thermal_guard(portal: RunningPortal, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    researcher, researcher_errors = new_page(browser, portal, "alice")
    node = submit_job(researcher, portal)
    assert node and node != "—"

    # (a) the job's GPU chart grows with the pushed samples, one a second
    researcher.wait_for_function("() => (document.getElementById('chart-utilization').data || []).length > 0", timeout=15_000)
    before = chart_points(researcher, "chart-utilization")
    time.sleep(4)
    after = chart_points(researcher, "chart-utilization")
    assert after >= before + 2, f"the job's GPU chart did not grow ({before} -> {after})"
    researcher.screenshot(path=str(ARTIFACTS / "telemetry-job-chart.png"), full_page=True)

    operator, operator_errors = new_page(browser, portal, "olivia")
    operator.wait_for_function("() => document.getElementById('live-status').textContent === 'connected'", timeout=15_000)
    row = operator.locator(f'tr[data-node="{node}"]')
    assert "ready" in row.inner_text()
    first = heat_cells(operator)
    operator.wait_for_function(
        "prev => JSON.stringify(((document.getElementById('chart-heatmap').data || [])[0] || {}).z || []) !== prev",
        arg=first,
        timeout=10_000,
    )
    assert node in operator.evaluate("() => ((document.getElementById('chart-heatmap').data || [])[0] || {}).y || []")

    # (b) heat the node; the guard cordons it and the dashboard says why
    assert "overheat" in portal.manage("sim_fault", node, "overheat")
    operator.wait_for_function(
        "n => { const r = document.querySelector('tr[data-node=\"' + n + '\"]');"
        " return r && r.cells[3].textContent.includes('cordoned') && r.cells[3].textContent.includes('thermal:'); }",
        arg=node,
        timeout=CORDON_TIMEOUT_MS,
    )
    state = row.locator("td").nth(3).inner_text()
    assert state.startswith("cordoned") and "thermal: GPU" in state and "°C" in state, state
    assert "Override" in state  # operators may take the node back from the guard
    log = operator.locator("#safeguard-log").inner_text()
    assert f"{node}: Cordon" in log or f"{node}: cordon" in log.lower(), log
    operator.locator("#node-table").scroll_into_view_if_needed()
    operator.screenshot(path=str(ARTIFACTS / "telemetry-node-cordoned.png"), full_page=True)

    # the researcher's job keeps running on the cordoned node (cordon: nothing new lands there)
    assert researcher.locator("#job-state").inner_text().strip() == "Running"
    assert not researcher_errors and not operator_errors, researcher_errors + operator_errors


def test_sim_fault_says_what_it_would_do_and_refuses_unknown_nodes(portal: RunningPortal) -> None:
    said = portal.manage("sim_fault", "onprem-h100-02", "xid", "--dry-run")
    assert said.startswith("would set onprem-h100-02 fault ") and said.strip().endswith("-> xid"), said
    with pytest.raises(Exception, match="returned non-zero"):
        portal.manage("sim_fault", "no-such-node", "xid")
