"""An operator bursts to the cloud in a real browser: a queue builds, a proposal appears, approve fewer nodes, jobs start.

Runs the whole portal (daphne, Celery worker and beat via `manage.py runportal`) on PostgreSQL
and Redis with a small A10G grid: one on-premises node of 4 GPUs and the cloud pool of
g5.12xlarge nodes (4 A10G each), which the simulated cloud boots in a few seconds. Four 4-GPU jobs
fill the on-premises node and leave three waiting; the burst cycle proposes three nodes, the
operator approves two, and two of the waiting jobs start on them. A researcher sees no approve
button and is refused (403) when posting an approval.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.portal_process import RunningPortal, running_portal
from tests.browser.test_e2e import ARTIFACTS, CHROMIUM_ARGS, sign_in
from tests.services import chromium_path, postgres_reachable, redis_reachable, redis_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]
POOLS = "onprem-a10g:onprem:a10g:1x4,burst-a10g:cloud:a10g:0x4"
# Submitted and admitted (the first takes the on-premises node) before the policy exists, so the
# first burst cycle that sees a policy sees three waiting jobs.
SUBMIT = """
from django.db import transaction
from jobs import services
from portal.models import User
with transaction.atomic():
  for username, name in [("alice", "protein-a"), ("alice", "protein-b"), ("carol", "fluid-a"), ("carol", "fluid-b")]:
    raw = {"template": "gromacs-md", "name": name, "gpu_model": "a10g", "gpus_per_node": 4, "walltime": "02:00:00"}
    services.submit(User.objects.get(username=username), raw)
services.run_admission_cycle()
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    if not postgres_reachable("postgres://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {redis_url()}")
    extra = {
        "SIM_POOLS": POOLS,
        "SIM_SPEED": "1",  # jobs run for their hours: the on-premises node stays full
        "GRID_CYCLE_S": "0.5",
        "BURST_CYCLE_S": "1",
        "BURST_PROVISION_DELAY_S": "4",
        "BURST_FAILURE_RATE": "0",
        "BURST_CAPACITY_ERROR_RATE": "0",
    }
    with running_portal(tmp_path_factory.mktemp("burst"), redis_url(), **extra) as running:
        manage(running, "shell", "-c", SUBMIT)
        manage(
            running,
            "seed_bursting", "--pools", "burst-a10g", "--trigger-pending-gpus", "4", "--trigger-wait-s", "0",
            "--trigger-window-s", "0", "--max-nodes", "4", "--idle-release-s", "3600",
        )  # fmt: skip
        yield running


def manage(portal: RunningPortal, *args: str) -> str:
    try:
        return portal.manage(*args)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"manage.py {args[0]} failed:\n{exc.stderr}") from None


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


def reload_until(page: Page, check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """The console pages are not live: reload until the check holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the page says:\n{page.inner_text('main')}")
        time.sleep(0.5)
        page.reload()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"burst-{name}.png"), full_page=True)


def test_an_operator_approves_fewer_nodes_and_waiting_jobs_start_on_them(portal: RunningPortal, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, portal, "olivia")

    page.goto(portal.url + "/console/bursts/")
    reload_until(page, lambda: page.locator("#burst-table a").count() > 0, 60, "a burst proposal")
    row = page.locator("#burst-table tbody tr").first.inner_text()
    assert "g5.12xlarge" in row and "Waiting for approval" in row
    shot(page, "1-proposed-list")

    page.locator("#burst-table a").first.click()
    page.wait_for_url("**/console/bursts/*/")
    burst_url = page.url
    heading = page.locator("h1").inner_text()
    assert "3× g5.12xlarge" in heading, heading
    projection = page.locator("#projection").inner_text()
    assert "3 nodes" in projection and "5.6720 EUR/h" in projection and "12 GPUs" in projection, projection
    teams = page.locator("#team-costs").inner_text()
    assert "vision" in teams and "render" in teams
    shot(page, "2-proposal")

    page.fill("#approve-form input[name=nodes]", "2")
    page.fill("#approve-form input[name=reason]", "two nodes are enough for tonight")
    page.click("#approve-burst")
    page.wait_for_url(burst_url)
    assert "2× g5.12xlarge" in page.locator("h1").inner_text()
    state = page.locator("#burst-state").inner_text()
    assert state in ("Provisioning", "Active"), state
    assert page.locator("#approve-form").count() == 0
    assert "approved 2 nodes" in page.locator("#projection").inner_text()
    nodes = page.locator("#burst-nodes tbody tr")
    assert nodes.count() == 2
    if state == "Provisioning":
        assert "Requested" in page.locator("#burst-nodes").inner_text()
    shot(page, "3-provisioning")

    def both_ready() -> bool:
        text = page.locator("#burst-nodes").inner_text()
        return text.count("Ready") >= 2 and page.locator("#burst-state").inner_text() == "Active"

    reload_until(page, both_ready, 60, "both burst nodes ready and the burst active")
    names = re.findall(r"burst-a10g-b\d+-\d+", page.locator("#burst-nodes").inner_text())
    assert len(set(names)) == 2, names
    shot(page, "4-active")

    page.goto(portal.url + "/console/nodes/")

    def burst_nodes_busy() -> bool:
        rows = [page.locator("#node-table tbody tr", has_text=name).inner_text() for name in names]
        return all("4/4" in r and "#" in r for r in rows)

    reload_until(page, burst_nodes_busy, 60, "a waiting job running on each burst node")
    for name in names:
        assert "burst" in page.locator("#node-table tbody tr", has_text=name).inner_text()
    shot(page, "5-jobs-on-burst-nodes")

    page.goto(portal.url + "/console/queues/")
    assert "2× g5.12xlarge · Active · 22.69" in page.inner_text("main")
    shot(page, "6-queues")
    assert not errors, errors


def test_a_researcher_has_no_approve_button_and_is_refused(portal: RunningPortal, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sign_in(page, portal, "alice")
    page.goto(portal.url + "/console/queues/")
    assert "Bursts in progress" not in page.inner_text("main")  # her own queues, no bursts
    shot(page, "7-researcher-queues")
    for path in ("/console/bursts/", "/console/bursts/1/"):
        answer = page.goto(portal.url + path)
        assert answer is not None and answer.status == 404
        assert page.locator("#approve-burst").count() == 0

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": token, "Referer": portal.url + "/"}
    web = page.request.post(portal.url + "/console/bursts/1/approve/", form={"nodes": "1"}, headers=headers)
    api = page.request.post(portal.url + "/api/v1/bursting/bursts/1/approve/", data={"nodes": 1}, headers=headers)
    assert (web.status, api.status) == (403, 403)
    assert "CSRF" not in web.text() and "operators" in api.text()
