"""Drill: the web server (daphne) dies and comes back while a browser watches a job.

Web, worker and beat run as separate processes so only the web server is killed (SIGKILL) and
started again on the same port. The page says "live updates paused: reconnecting…", then "connected", without a
reload; its charts have points again and its timeline shows the cancellation that happened while
it was disconnected (the snapshot after a reconnect back-fills the gap).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.services import chromium_path, postgres_reachable
from tests.stack import SHARED_ADMIN_URL, OwnRedis, Stack, job_states, portal_stack, scratch_database, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking"]
POINTS = "(document.getElementById('chart-utilization').data || []).reduce((n, t) => n + t.x.length, 0)"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Stack]:
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    if shutil.which("redis-server") is None or not postgres_reachable(SHARED_ADMIN_URL):
        pytest.skip("needs redis-server and PostgreSQL on 127.0.0.1:5432")
    with OwnRedis(6392) as own, scratch_database() as db, portal_stack(db, own.url, tmp_path, SIM_SPEED="1") as stack:
        yield stack


@pytest.fixture
def page(world: Stack) -> Iterator[BrowserContext]:
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def test_the_job_page_reconnects_and_backfills_after_the_web_server_restarts(world: Stack, page: BrowserContext) -> None:
    stack = world
    creds = stack.credentials(["alice"])["alice"]
    api = httpx.Client(base_url=stack.url, headers={"Authorization": f"Token {creds['token']}"}, timeout=20)
    body = {"name": "watched", "command": ["train"], "gpu_model": "a100", "gpus_per_node": 2, "walltime": 3600}
    job_id = int(api.post("/api/v1/jobs/", json=body).json()["id"])
    api.close()
    db = stack.env["DATABASE_URL"]
    wait_for(lambda: job_states(db).get(job_id) == "running", 60, "the job to run")

    page.add_cookies([{"name": "sessionid", "value": creds["session"], "url": stack.url}])
    tab = page.new_page()
    tab.goto(f"{stack.url}/jobs/{job_id}/")
    tab.wait_for_function("() => document.getElementById('live-status').textContent === 'connected'", timeout=20_000)
    tab.wait_for_function(f"() => {POINTS} > 0", timeout=20_000)
    tab.evaluate("() => window.drillMarker = 'same page'")  # gone if the page were reloaded

    stack.stop("web", signal.SIGKILL)
    tab.wait_for_function("() => document.getElementById('live-status').textContent.includes('reconnecting')", timeout=15_000)
    stack.manage(
        "shell", "-c",
        f"from jobs import services; from jobs.models import Job; from portal.models import User; "
        f"services.cancel(User.objects.get(username='alice'), Job.objects.get(pk={job_id}), 'cancelled while the page was away')",
    )  # fmt: skip
    time.sleep(2)
    stack.start("web")
    stack.wait_healthy(60)
    tab.wait_for_function("() => document.getElementById('live-status').textContent === 'connected'", timeout=30_000)
    tab.wait_for_function(
        "() => document.getElementById('timeline').textContent.includes('cancelled while the page was away')", timeout=15_000
    )
    points_after = int(tab.evaluate(f"() => {POINTS}"))
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "drill-web-restart.png"), full_page=True)

    assert tab.evaluate("() => window.drillMarker") == "same page"
    assert tab.locator("#job-state").inner_text().strip() == "Cancelled"
    assert points_after > 0, "the charts were not back-filled after the reconnect"
    states = [e.strip() for e in tab.locator("#timeline li .state").all_inner_texts()]
    assert states.count("cancelled") == 1 and states.count("running") == 1, states
    print(
        f"drill web-restart: daphne SIGKILLed and restarted; page reconnected without reload, {points_after} chart points, timeline {states}"
    )
