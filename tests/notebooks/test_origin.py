"""Notebooks on an origin of their own (NOTEBOOK_ORIGIN): the portal hands a one-time ticket to who may
open the notebook, the notebook origin turns it into a cookie for that notebook alone, and a portal
session is never what lets a request through there. A real local Jupyter server stands behind it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from pytest_django import Settings

from grid.asgi import application
from notebooks import origin
from notebooks.models import Notebook, NotebookEvent
from notebooks.states import EventKind
from portal.models import User
from tests.notebooks.test_proxy import _cookie, _execute, _stream_text

NOTEBOOKS = "http://notebooks.testserver"
HOST = "notebooks.testserver"


@pytest.fixture(autouse=True)
def own_origin(settings: Settings) -> Iterator[None]:
    settings.NOTEBOOK_ORIGIN = NOTEBOOKS
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, HOST]
    yield


def handed_over(client: Client, notebook: Notebook, rest: str = "api/status") -> str:
    """The portal's answer to the proxy path: a redirect to the notebook origin with a ticket."""
    answer = client.get(f"{notebook.proxy_path}{rest}")
    assert answer.status_code == 302, answer.content[:200]
    location = answer["Location"]
    assert location.startswith(f"{NOTEBOOKS}{notebook.proxy_path}{rest}?{origin.TICKET_PARAM}=")
    return location


def on_notebook_origin(client: Client, url: str) -> Client:
    """Follow the ticket on the notebook origin; the client then holds the notebook's cookie."""
    parts = urlsplit(url)
    answer = client.get(f"{parts.path}?{parts.query}", HTTP_HOST=HOST)
    assert answer.status_code == 302 and answer["Location"] == parts.path
    cookie = answer.cookies[origin.cookie_name(int(parts.path.split("/")[2]))]
    assert cookie["httponly"] and cookie["path"] == parts.path.rsplit("proxy/", 1)[0] + "proxy/"
    return client


def test_the_owner_is_handed_over_with_a_ticket_that_becomes_the_notebooks_cookie(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User
) -> None:
    notebook = start_ready()
    url = handed_over(web(alice), notebook)
    browser = on_notebook_origin(Client(), url)  # a fresh browser: no portal session at all
    answer = browser.get(f"{notebook.proxy_path}api/status", HTTP_HOST=HOST)
    assert answer.status_code == 200 and "started" in answer.json()
    # The ticket worked once; a second use, or a ticket of another notebook, gets nothing.
    parts = urlsplit(url)
    assert Client().get(f"{parts.path}?{parts.query}", HTTP_HOST=HOST).status_code == 403
    other = handed_over(web(alice), start_ready(), "api/status")
    forged = f"{notebook.proxy_path}api/status?{urlsplit(other).query}"
    assert Client().get(forged, HTTP_HOST=HOST).status_code == 403


def test_a_portal_session_opens_nothing_on_the_notebook_origin_and_it_serves_nothing_else(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User
) -> None:
    notebook = start_ready()
    signed_in = web(alice)
    refused = signed_in.get(f"{notebook.proxy_path}api/status", HTTP_HOST=HOST)
    assert refused.status_code == 403 and b"open this notebook from the portal" in refused.content
    for path in ("/", "/api/v1/jobs/", "/notebooks/", f"/notebooks/{notebook.pk}/", "/admin/"):
        assert signed_in.get(path, HTTP_HOST=HOST).status_code == 404, path
    assert signed_in.post(f"{notebook.proxy_path}api/contents", "{}", content_type="application/json").status_code == 403


def test_others_get_no_ticket_and_an_operator_is_audited(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], bob: User, carol: User, olivia: User
) -> None:
    notebook = start_ready()
    for user in (bob, carol):
        assert web(user).get(f"{notebook.proxy_path}api/status").status_code == 404
    assert web(None).get(f"{notebook.proxy_path}api/status").status_code == 302  # to the sign-in page
    browser = on_notebook_origin(Client(), handed_over(web(olivia), notebook))
    assert browser.get(f"{notebook.proxy_path}api/status", HTTP_HOST=HOST).status_code == 200
    assert [e.actor for e in NotebookEvent.objects.filter(notebook=notebook, kind=EventKind.OPENED_BY_OPERATOR)] == ["olivia"]


def test_writes_must_come_from_the_notebook_origin_itself(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User
) -> None:
    notebook = start_ready()
    browser = on_notebook_origin(Client(), handed_over(web(alice), notebook))
    url, body = f"{notebook.proxy_path}api/contents", json.dumps({"type": "notebook"})
    for sent in ("http://testserver", "https://evil.example"):  # not even the portal's own pages
        refused = browser.post(url, body, content_type="application/json", HTTP_HOST=HOST, HTTP_ORIGIN=sent)
        assert refused.status_code == 403
    made = browser.post(url, body, content_type="application/json", HTTP_HOST=HOST, HTTP_ORIGIN=NOTEBOOKS)
    assert made.status_code == 201 and made.json()["type"] == "notebook"


@pytest.mark.django_db(transaction=True)
async def test_the_kernel_websocket_opens_on_the_notebook_origin_with_its_cookie_only(request: pytest.FixtureRequest) -> None:
    await sync_to_async(request.getfixturevalue)("own_origin")
    start_ready = await sync_to_async(request.getfixturevalue)("start_ready")
    alice = await sync_to_async(request.getfixturevalue)("alice")
    notebook = await sync_to_async(start_ready)()
    portal = await sync_to_async(Client)()
    await sync_to_async(portal.force_login)(alice)
    browser = await sync_to_async(on_notebook_origin)(Client(), await sync_to_async(handed_over)(portal, notebook))
    made = await sync_to_async(browser.post)(
        f"{notebook.proxy_path}api/kernels", "{}", content_type="application/json", HTTP_HOST=HOST, HTTP_ORIGIN=NOTEBOOKS
    )
    assert made.status_code == 201, made.content[:300]
    path = f"{notebook.proxy_path}api/kernels/{made.json()['id']}/channels"
    name = origin.cookie_name(notebook.pk)
    ours = f"{name}={browser.cookies[name].value}".encode()
    session = await sync_to_async(_cookie)(alice)
    tries = {
        "portal origin, portal session": [(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"cookie", session)],
        "notebook origin, portal session": [(b"origin", NOTEBOOKS.encode()), (b"host", HOST.encode()), (b"cookie", session)],
    }
    got = {}
    try:
        for what, headers in tries.items():
            communicator = WebsocketCommunicator(application, path, headers=headers)
            got[what] = await communicator.connect(timeout=10)
            await communicator.disconnect()
        communicator = WebsocketCommunicator(
            application, path, headers=[(b"origin", NOTEBOOKS.encode()), (b"host", HOST.encode()), (b"cookie", ours)]
        )
        connected, _ = await communicator.connect(timeout=30)
        assert connected
        await communicator.send_to(text_data=json.dumps(_execute("print(6 * 7)")))
        assert (await _stream_text(communicator)).strip() == "42"
        await communicator.disconnect()
    finally:
        await sync_to_async(connections.close_all)()
    assert got == {"portal origin, portal session": (False, 4403), "notebook origin, portal session": (False, 4401)}


def test_a_notebook_origin_with_a_path_stops_start_up_naming_the_setting(tmp_path: object) -> None:
    from tests.portal.test_settings_env import run_check

    result = run_check(DEBUG="true", PORTAL_DATA_DIR=str(tmp_path), NOTEBOOK_ORIGIN="https://notebooks.example/lab")
    assert result.returncode != 0 and "NOTEBOOK_ORIGIN='https://notebooks.example/lab'" in result.stderr
    assert (
        run_check(DEBUG="true", PORTAL_DATA_DIR=str(tmp_path), NOTEBOOK_ORIGIN="https://notebooks.example:8443").returncode == 0
    )
