"""A notebook whose server cannot be reached: the proxy answers its owner with a page (or JSON) that says
the session's state and what to do, linking to its page; everyone else is still refused."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from jobs import services as job_services
from jobs.states import JobState
from notebooks import servers, services, unavailable
from notebooks.models import Notebook
from notebooks.states import EndReason, NotebookState
from portal.models import User
from tests.notebooks.conftest import notebook_request

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def session(state: str, end_reason: str = "", end_label: str = "", detail: str = "") -> unavailable.Session:
    return unavailable.Session(7, state, state.title(), end_reason, end_label, detail, "running")


def test_it_says_what_each_state_means_and_whether_to_retry() -> None:
    starting = unavailable.explain(session("starting"))
    assert (starting.status, starting.retry_after_s) == (503, 5) and "Open button" in starting.advice
    culled = unavailable.explain(session("ended", "idle", "Culled: idle", "culled: idle"))
    assert (culled.status, culled.retry_after_s) == (503, None)
    assert culled.headline == "Notebook #7 has ended: Culled: idle." and "Start a new notebook" in culled.advice
    gone = unavailable.explain(session("ready"), "ConnectError")
    assert gone.status == 502 and gone.headline == "Notebook #7's server did not answer (ConnectError)."
    assert "node may have failed" in gone.advice


def kill_server(notebook: Notebook) -> None:
    """The server dies under a ready notebook (its node failed, it crashed): the row still says ready."""
    assert notebook.server_pid and servers.stop_local_server(notebook.server_pid, notebook.pk)
    os.waitpid(notebook.server_pid, 0)  # reaped: its port refuses connections from now on


def test_a_server_that_died_under_a_ready_notebook_gets_a_502_page_linking_to_the_notebook(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User, bob: User, carol: User
) -> None:
    notebook = start_ready()
    kill_server(notebook)
    page = web(alice).get(notebook.proxy_path, headers=HTML)
    assert page.status_code == 502 and page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    assert f"Notebook #{notebook.pk}&#x27;s server did not answer (ConnectError)." in text
    assert f'href="/notebooks/{notebook.pk}/"' in text and 'data-state="ready"' in text
    assert services.token_for(notebook) not in text

    data = web(alice).get(f"{notebook.proxy_path}api/kernels")  # the server's own scripts ask for JSON
    assert data.status_code == 502 and data.json()["state"] == "ready" and data.json()["page"] == f"/notebooks/{notebook.pk}/"
    xhr = web(alice).get(f"{notebook.proxy_path}tree", headers={"X-Requested-With": "XMLHttpRequest"})
    assert xhr.status_code == 502 and xhr.json()["error"] == "notebook_unavailable"

    for outsider in (bob, carol):  # a lead of the team and another team: refused, not told of the session
        refused = web(outsider).get(notebook.proxy_path, headers=HTML)
        assert refused.status_code == 404 and b"did not answer" not in refused.content
    assert web(None).get(notebook.proxy_path, headers=HTML).status_code == 302


def test_a_preempted_notebook_ends_at_the_next_request_and_the_page_says_so(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User, carol: User
) -> None:
    notebook = start_ready()
    kill_server(notebook)
    assert job_services.transition(notebook.job_id, JobState.PREEMPTING, why="reclaimed for a guarantee")
    page = web(alice).get(f"{notebook.proxy_path}lab", headers=HTML)
    assert page.status_code == 503 and "Retry-After" not in page
    text = page.content.decode()
    assert f"Notebook #{notebook.pk} has ended: Its job ended (job #{notebook.job_id} was preempted (preempting)" in text
    assert "Start a new notebook" in text and f'href="/notebooks/{notebook.pk}/"' in text
    notebook.refresh_from_db()
    assert (notebook.state, notebook.end_reason) == (NotebookState.ENDED, EndReason.JOB_ENDED)
    notebook.job.refresh_from_db()
    assert notebook.job.state == JobState.CANCELLED  # its GPUs are not asked for again
    assert web(carol).get(f"{notebook.proxy_path}lab", headers=HTML).status_code == 404


def test_a_starting_notebook_answers_503_with_retry_after_as_a_page_and_as_json(
    grid: Any, web: Callable[[User | None], Client], alice: User, carol: User, caplog: pytest.LogCaptureFixture
) -> None:
    notebook = services.start(alice, notebook_request())
    with caplog.at_level(logging.INFO):
        page = web(alice).get(notebook.proxy_path, headers=HTML)
    # An answer the portal chose, logged once at INFO by the proxy, not as a server error by Django.
    assert [(r.name, r.levelname) for r in caplog.records if "unavailable" in r.getMessage().lower()] == [
        ("notebooks.proxy", "INFO")
    ]
    assert not [r for r in caplog.records if r.name == "django.request"]
    assert page.status_code == 503 and page["Retry-After"] == "5" and page["Cache-Control"] == "no-store"
    assert f"Notebook #{notebook.pk} is starting." in page.content.decode()
    data = web(alice).get(f"{notebook.proxy_path}api/status")
    assert data.status_code == 503 and data.json()["state"] == "starting" and data.json()["retry_after_s"] == 5
    assert web(carol).get(f"{notebook.proxy_path}api/status").status_code == 404


def test_a_refresh_ends_a_ready_notebook_whose_job_was_requeued(start_ready: Callable[..., Notebook]) -> None:
    notebook = start_ready()
    assert job_services.transition(notebook.job_id, JobState.REQUEUED, why="its node failed")
    assert services.refresh(notebook.pk) == NotebookState.ENDED
    notebook.refresh_from_db()
    assert notebook.end_reason == EndReason.JOB_ENDED and "preempted (requeued)" in notebook.detail
