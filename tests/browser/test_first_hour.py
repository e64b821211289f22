"""Each persona's first hour, in a real browser, on a portal seeded exactly as a first start seeds it.

Finance opens billing and finds last month's invoices; the operator approves the proposed cloud
burst; the lead raises a limit; the researcher finds a finished job with its log.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.portal_process import RunningPortal, running_demo_portal
from tests.browser.test_e2e import CHROMIUM_ARGS, sign_in
from tests.services import chromium_path, postgres_reachable, redis_reachable, redis_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    if not postgres_reachable("postgres://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {redis_url()}")
    pools = "onprem-a100:onprem:a100:4x8,onprem-h100:onprem:h100:2x8,burst-a10g:cloud:a10g:0x4"  # the default grid
    with running_demo_portal(tmp_path_factory.mktemp("first-hour"), redis_url(), SIM_POOLS=pools) as running:
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


def test_finance_finds_last_months_invoices(portal: RunningPortal, browser: Browser) -> None:
    page = browser.new_page()
    sign_in(page, portal, "fiona")
    page.click("text=Billing")
    invoices = page.locator("a[href^='/billing/invoices/']")
    assert invoices.count() >= 3
    invoices.first.click()
    assert page.locator("#invoice-total").inner_text().strip() not in ("", "0.00")


def test_the_operator_approves_the_proposed_burst(portal: RunningPortal, browser: Browser) -> None:
    page = browser.new_page()
    sign_in(page, portal, "olivia")
    page.goto(portal.url + "/console/bursts/")
    proposed = page.locator("tbody tr", has_text="Waiting for approval")
    assert proposed.count() >= 1, page.locator("main").inner_text()
    proposed.first.locator("a").first.click()
    page.click("#approve-burst")
    page.wait_for_load_state("networkidle")
    assert any(word in page.content() for word in ("Provisioning", "Active", "provisioning"))

    def a10g_jobs_started() -> int:
        code = "from jobs.models import Job; print(Job.objects.filter(gpu_model='a10g', started_at__isnull=False).count())"
        return int(portal.manage("shell", "-c", code).strip().splitlines()[-1])

    deadline = time.monotonic() + 120
    while a10g_jobs_started() == 0 and time.monotonic() < deadline:
        time.sleep(3)
    assert a10g_jobs_started() > 0, "the approved burst's nodes came up but no waiting A10G job started"


def test_the_lead_raises_a_limit(portal: RunningPortal, browser: Browser) -> None:
    quota = json.loads(
        portal.manage(
            "shell", "-c",
            "import json; from quotas.models import TeamQuota as Q; q = Q.objects.get(team__slug='vision', gpu_model='a100');"
            " print(json.dumps([q.limit, q.lead_max_limit]))",
        ).strip().splitlines()[-1]
    )  # fmt: skip
    limit, ceiling = quota
    assert ceiling is not None and ceiling > limit  # the demo leaves the lead room to raise it
    page = browser.new_page()
    sign_in(page, portal, "bob")
    page.goto(portal.url + "/teams/vision/")
    page.select_option("select[name=gpu_model]", "a100")
    page.fill("input[name=limit]", str(limit + 1))
    page.fill("input[name=reason]", "deadline next week")
    page.click("text=Save")
    assert "saved" in page.content()


def test_the_researcher_finds_a_finished_job_with_its_log(portal: RunningPortal, browser: Browser) -> None:
    page = browser.new_page()
    sign_in(page, portal, "alice")
    page.goto(portal.url + "/jobs/?state=succeeded")
    rows = page.locator("span.state-succeeded")
    assert rows.count() >= 1
    page.locator("tbody a[href^='/jobs/']").first.click()
    assert page.locator("#job-state").inner_text().strip() == "Succeeded"
