"""The proxy, HTTP and websockets, through the portal's ASGI app to a real local Jupyter server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client, RequestFactory
from django.utils import timezone

from grid.asgi import application
from notebooks import launch, proxy, services
from notebooks.models import Notebook, NotebookEvent
from notebooks.states import EventKind
from portal.models import User

ORIGIN = "http://testserver"


def test_the_owner_reaches_the_server_and_the_token_stays_in_the_portal(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User
) -> None:
    notebook = start_ready()
    answer = web(alice).get(f"{notebook.proxy_path}api/status")
    assert answer.status_code == 200 and "started" in answer.json()
    assert services.token_for(notebook) not in answer.content.decode() and "Set-Cookie" not in answer


def test_the_proxy_sends_the_token_and_never_the_portals_cookies_or_credentials() -> None:
    request = RequestFactory().get("/", HTTP_COOKIE="sessionid=secret", HTTP_AUTHORIZATION="Token portal-key", HTTP_X_KEEP="1")
    headers = {k.lower(): v for k, v in proxy._upstream_headers(request, launch.upstream_auth("jupyter", "tok")).items()}
    assert headers["authorization"] == "token tok" and headers["x-keep"] == "1"
    assert "cookie" not in headers and "host" not in headers


def test_others_are_refused_the_proxy(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], bob: User, carol: User
) -> None:
    notebook = start_ready()
    for user in (bob, carol):  # bob leads alice's team: a notebook is still one person's
        assert web(user).get(f"{notebook.proxy_path}api/status").status_code == 404
    anonymous = web(None).get(f"{notebook.proxy_path}api/status")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")


def test_an_operator_gets_in_and_is_recorded_once_an_hour(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], olivia: User
) -> None:
    notebook = start_ready()
    client = web(olivia)
    assert client.get(f"{notebook.proxy_path}api/status").status_code == 200
    assert client.get(f"{notebook.proxy_path}api/status").status_code == 200
    events = NotebookEvent.objects.filter(notebook=notebook, kind=EventKind.OPENED_BY_OPERATOR)
    assert [e.actor for e in events] == ["olivia"]


def test_a_write_from_another_site_is_refused_and_one_from_the_portal_goes_through(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User
) -> None:
    notebook = start_ready()
    client = web(alice)
    url = f"{notebook.proxy_path}api/contents"
    body = json.dumps({"type": "notebook"})
    refused = client.post(url, body, content_type="application/json", HTTP_ORIGIN="https://evil.example")
    assert refused.status_code == 403 and b"did not come from this site" in refused.content
    assert client.post(url, body, content_type="application/json").status_code == 403  # no Origin, no Referer
    made = client.post(url, body, content_type="application/json", HTTP_ORIGIN=ORIGIN)
    assert made.status_code == 201 and made.json()["type"] == "notebook"


def test_a_request_through_the_proxy_is_activity(
    start_ready: Callable[..., Notebook], web: Callable[[User | None], Client], alice: User
) -> None:
    notebook = start_ready()
    long_ago = timezone.now() - timedelta(hours=3)
    Notebook.objects.filter(pk=notebook.pk).update(last_activity=long_ago)
    web(alice).get(f"{notebook.proxy_path}api/status")
    notebook.refresh_from_db()
    assert notebook.last_activity is not None and notebook.last_activity > long_ago


# --- websockets ------------------------------------------------------------------------------


def _cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def _execute(code: str) -> dict[str, Any]:
    msg_id = uuid.uuid4().hex
    return {
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False},
    }  # fmt: skip


async def _stream_text(communicator: WebsocketCommunicator, timeout: float = 60) -> str:
    while True:
        frame = json.loads(await communicator.receive_from(timeout=timeout))
        if frame.get("msg_type") == "stream":
            return str(frame["content"]["text"])


@pytest.mark.django_db(transaction=True)
async def test_the_owner_runs_a_cell_over_the_proxied_kernel_websocket(request: pytest.FixtureRequest) -> None:
    start_ready = await sync_to_async(request.getfixturevalue)("start_ready")
    alice = await sync_to_async(request.getfixturevalue)("alice")
    notebook = await sync_to_async(start_ready)()
    client = await sync_to_async(Client)()
    await sync_to_async(client.force_login)(alice)
    made = await sync_to_async(client.post)(
        f"{notebook.proxy_path}api/kernels", "{}", content_type="application/json", HTTP_ORIGIN=ORIGIN
    )
    assert made.status_code == 201, made.content[:300]
    kernel = made.json()["id"]
    headers = [(b"origin", ORIGIN.encode()), (b"host", b"testserver"), (b"cookie", await sync_to_async(_cookie)(alice))]
    communicator = WebsocketCommunicator(application, f"{notebook.proxy_path}api/kernels/{kernel}/channels", headers=headers)
    try:
        connected, _ = await communicator.connect(timeout=30)
        assert connected
        await communicator.send_to(text_data=json.dumps(_execute("print(6 * 7)")))
        assert (await _stream_text(communicator)).strip() == "42"
    finally:
        await communicator.disconnect()
        await sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
async def test_a_teammate_and_an_outsider_are_refused_the_kernel_websocket(request: pytest.FixtureRequest) -> None:
    start_ready = await sync_to_async(request.getfixturevalue)("start_ready")
    notebook = await sync_to_async(start_ready)()
    got = []
    try:
        for role in ("bob", "carol", None):
            headers = [(b"origin", ORIGIN.encode()), (b"host", b"testserver")]
            if role:
                user = await sync_to_async(request.getfixturevalue)(role)
                headers.append((b"cookie", await sync_to_async(_cookie)(user)))
            communicator = WebsocketCommunicator(application, f"{notebook.proxy_path}api/kernels/k1/channels", headers=headers)
            got.append(await communicator.connect(timeout=10))
            await communicator.disconnect()
    finally:
        await sync_to_async(connections.close_all)()
    assert got == [(False, 4403), (False, 4403), (False, 4401)]
