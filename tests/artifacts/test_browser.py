"""In a real browser: a researcher opens a job's page, sees the file the job wrote, and downloads it.

Runs the whole portal (`manage.py runportal`) on PostgreSQL and Redis with a path store, and drives
Debian's Chromium with Playwright, like tests/browser/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.portal_process import RunningPortal, running_portal
from tests.services import chromium_path, postgres_reachable, redis_reachable, redis_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifact-store")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[RunningPortal]:
    if not postgres_reachable("postgres://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {redis_url()}")
    with running_portal(
        tmp_path_factory.mktemp("portal"), redis_url(), SIM_SPEED="60", ARTIFACT_STORE=f"file://{store}"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def test_a_researcher_downloads_a_file_her_job_wrote(portal: RunningPortal, browser: Browser, store: Path) -> None:
    page = browser.new_page()
    page.goto(portal.url + "/accounts/login/")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "gridportal")
    page.click("button[type=submit]")
    page.wait_for_url(portal.url + "/")

    page.goto(portal.url + "/jobs/new/")
    page.click("text=Blender frame range")
    page.fill("input[name=name]", "artifact-download")
    page.click("#submit-job")
    page.wait_for_url("**/jobs/*/")
    match = re.search(r"/jobs/(\d+)/$", page.url)
    assert match is not None
    job_id = match.group(1)
    output = store / "vision" / job_id / "output"
    output.mkdir(parents=True)
    (output / "frame-0001.txt").write_bytes(b"rendered by the grid\n")  # as the job writes to $GRID_OUTPUT_DIR

    page.reload()
    link = page.locator("#artifacts a", has_text="output/frame-0001.txt")
    assert link.count() == 1 and "21 B" in page.locator("#artifacts").inner_text()
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "frame-0001.txt"
    assert Path(download.value.path()).read_bytes() == b"rendered by the grid\n"
