"""A notebook in a real browser: start it from the form, open it through the proxy, run a cell on its kernel
(over the proxied websocket), and see it culled once kernel and GPUs have been idle.

Runs the whole portal (`manage.py runportal`: daphne, Celery worker and beat) on PostgreSQL and Redis,
on the simulator, whose notebooks are real local Jupyter servers; drives Debian's Chromium with Playwright.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.portal_process import RunningPortal, running_portal
from tests.services import chromium_path, postgres_reachable, redis_reachable, redis_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
IDLE_S, WARN_S = 20, 5

# Runs in the notebook page: make a kernel through the proxy, then run one cell over its websocket.
RUN_CELL = """async ([base, code]) => {
  const made = await fetch(base + "api/kernels", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
  if (made.status !== 201) return "kernel: HTTP " + made.status;
  const kernel = (await made.json()).id;
  const socket = new WebSocket(location.origin.replace("http", "ws") + base + "api/kernels/" + kernel + "/channels");
  return await new Promise((resolve) => {
    setTimeout(() => resolve("no output in 60 s"), 60000);
    socket.onerror = () => resolve("websocket error");
    socket.onopen = () => socket.send(JSON.stringify({
      header: {msg_id: crypto.randomUUID(), username: "alice", session: crypto.randomUUID(), msg_type: "execute_request", version: "5.3"},
      parent_header: {}, metadata: {}, channel: "shell", buffers: [],
      content: {code: code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false},
    }));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.msg_type === "stream") { resolve(message.content.text); socket.close(); }
    };
  });
}"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    if not postgres_reachable("postgres://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {redis_url()}")
    tmp = tmp_path_factory.mktemp("portal")
    with running_portal(
        tmp, redis_url(), NOTEBOOK_IDLE_S=str(IDLE_S), NOTEBOOK_WARN_S=str(WARN_S), NOTEBOOK_CYCLE_S="2",
        NOTEBOOK_WORK_DIR=str(tmp / "notebooks"),
    ) as running:  # fmt: skip
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


def reload_until(page: Page, state: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while page.get_attribute("#notebook-state", "data-state") != state:
        assert time.monotonic() < deadline, f"still {page.get_attribute('#notebook-state', 'data-state')} after {timeout_s} s"
        time.sleep(1)
        page.reload()


def test_a_researcher_starts_a_notebook_runs_a_cell_through_the_proxy_and_sees_it_culled_when_idle(
    portal: RunningPortal, browser: Browser
) -> None:
    page = browser.new_page()
    sign_in(page, portal, "alice")
    page.goto(portal.url + "/notebooks/new/")
    page.select_option("select[name=gpu_model]", "a100")
    page.fill("input[name=lifetime_s]", "3600")
    page.click("#start-notebook")
    page.wait_for_url(re.compile(r".*/notebooks/\d+/$"))
    reload_until(page, "ready", 120)

    base = page.get_attribute("#open-notebook", "href")
    assert base is not None and re.fullmatch(r"/notebooks/\d+/proxy/", base)
    status = page.request.get(portal.url + base + "api/status")
    assert status.status == 200 and "started" in status.json()
    output = page.evaluate(RUN_CELL, [base, "print(6 * 7)"])
    assert str(output).strip() == "42"

    # Nobody uses it now: kernel and (simulated) GPUs idle, it is warned and then culled.
    reload_until(page, "ended", IDLE_S + WARN_S + 90)
    assert page.inner_text("#notebook-end-reason") == "Culled: idle"
    assert "Warned before culling" in page.inner_text("main")
    gone = page.request.get(portal.url + base + "api/status")  # the proxy no longer opens it, and says why
    assert gone.status == 503 and gone.json()["state"] == "ended"

    carol = browser.new_page()
    sign_in(carol, portal, "carol")
    refused = carol.goto(portal.url + base.removesuffix("proxy/"))
    assert refused is not None and refused.status == 404
