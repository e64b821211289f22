"""The authenticated reverse proxy to a notebook's server: HTTP (an async view) and websockets (a consumer).

Only the notebook's owner and operators (audited, in notebooks.services.proxy_target) get through;
everyone else gets 404 or a closed socket. When they may open it but its server cannot be reached
(starting, ended, or not answering), they get a page saying so (notebooks.unavailable), or JSON.

The proxy adds the server's token to each request (code-server: its session cookie made from the
token, and the proxy's path stripped; notebooks.launch) and strips the portal's own cookies and
credentials, so neither the token reaches the browser nor the portal's session reaches the server.
The server listens only where the portal can reach it; the proxy is its one way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Any, cast

import httpx
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from notebooks import origin, services, unavailable
from notebooks.models import Notebook
from portal.access import websocket_user
from portal.fanout import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from portal.security import same_origin

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
NOT_UPSTREAM = HOP_BY_HOP | {"cookie", "authorization", "origin", "referer", "x-csrftoken"}
NOT_DOWNSTREAM = HOP_BY_HOP | {"set-cookie", "content-encoding"}  # the body comes decoded
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
log = logging.getLogger(__name__)
CLOSE_NOT_READY = 1013  # try again later: the server is starting or has ended
CLOSE_UNREACHABLE = 1011
UPSTREAM_TIMEOUT_S = 60.0


def _from_this_site(request: HttpRequest) -> bool:
    """A state-changing request must come from the portal's own pages (the server's XSRF check is bypassed
    by the token the proxy adds, so the proxy does that check itself). On the notebooks' own origin
    only that origin counts; on the portal's, the portal and its trusted origins."""
    sent = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if sent.count("/") > 2:
        sent = "/".join(sent.split("/")[:3])
    trusted = [] if origin.is_notebook_host(request.get_host()) else list(getattr(settings, "CSRF_TRUSTED_ORIGINS", []))
    return same_origin(sent, request.get_host(), trusted)


def _upstream_headers(request: HttpRequest, auth: dict[str, str]) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_UPSTREAM}
    return headers | auth


_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def upstream_client() -> httpx.AsyncClient:
    """One client per event loop, kept: making one costs more than a proxied request (measured: 65 ms
    against 4 ms), and its connections to the servers are reused (keep-alive)."""
    loop = asyncio.get_running_loop()
    client = _CLIENTS.get(loop)
    if client is None:
        client = _CLIENTS[loop] = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT_S)
    return client


@csrf_exempt  # the Origin check below stands in for it: the server's own pages carry no portal CSRF token
async def http_proxy(request: HttpRequest, notebook_id: int, path: str = "") -> HttpResponse:
    if origin.origin():  # notebooks on an origin of their own (notebooks/origin.py)
        if origin.is_notebook_host(request.get_host()):
            return await _on_notebook_origin(request, notebook_id, path)
        return await _hand_over(request, notebook_id, path)
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    return await _proxy(request, user, notebook_id, path)


async def _hand_over(request: HttpRequest, notebook_id: int, path: str) -> HttpResponse:
    """On the portal's origin: a user who may open the notebook is sent to its origin with a one-time ticket."""
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    target = await _target(request, user, notebook_id, path)
    if isinstance(target, HttpResponse):
        return target
    if request.method not in SAFE_METHODS:
        return HttpResponse("refused: notebooks are served from their own origin", status=403, content_type="text/plain")
    return HttpResponseRedirect(origin.ticket_url(user, notebook_id, request.path, request.META.get("QUERY_STRING", "")))


async def _on_notebook_origin(request: HttpRequest, notebook_id: int, path: str) -> HttpResponse:
    """On the notebook origin: a ticket becomes the notebook's cookie; the cookie alone lets a request through."""
    ticket = request.GET.get(origin.TICKET_PARAM)
    if ticket is not None:
        user_id = await sync_to_async(origin.redeem_ticket)(ticket, notebook_id)
        if user_id is None:
            return HttpResponse(OPEN_FROM_PORTAL, status=403, content_type="text/plain")
        query = origin.without_ticket(request.META.get("QUERY_STRING", ""))
        response = HttpResponseRedirect(request.path + (f"?{query}" if query else ""))
        response.set_cookie(
            origin.cookie_name(notebook_id), origin.cookie_value(user_id, notebook_id),
            max_age=origin.cookie_max_age_s(), path=origin.cookie_path(notebook_id),
            secure=origin.origin().startswith("https:"), httponly=True, samesite="Lax",
        )  # fmt: skip
        return response
    user = await sync_to_async(origin.user_of)(request.COOKIES, notebook_id)
    if user is None:
        return HttpResponse(OPEN_FROM_PORTAL, status=403, content_type="text/plain")
    return await _proxy(request, user, notebook_id, path)


OPEN_FROM_PORTAL = "refused: open this notebook from the portal (the link you followed has expired or was used)"


async def _target(request: HttpRequest, user: Any, notebook_id: int, path: str) -> services.ProxyTarget | HttpResponse:
    """The notebook's server if the user may open it; the page saying why not when it is not open; 404 otherwise."""
    try:
        target = await sync_to_async(services.proxy_target)(user, notebook_id)
    except services.NotebookNotOpen as exc:
        return await sync_to_async(unavailable_answer)(request, exc.notebook, path)
    if target is None:
        raise Http404("No such notebook")
    return target


async def _proxy(request: HttpRequest, user: Any, notebook_id: int, path: str) -> HttpResponse:
    target = await _target(request, user, notebook_id, path)
    if isinstance(target, HttpResponse):
        return target
    if request.method not in SAFE_METHODS and not _from_this_site(request):
        return HttpResponse("refused: the request did not come from this site", status=403, content_type="text/plain")
    query = request.META.get("QUERY_STRING", "")
    url = f"{target.url}{target.path(request.path)}" + (f"?{query}" if query else "")
    try:
        answer = await upstream_client().request(
            str(request.method), url, content=request.body, headers=_upstream_headers(request, target.auth())
        )
    except httpx.HTTPError as exc:
        notebook = await sync_to_async(services.server_unreachable)(target.notebook_id)
        return await sync_to_async(unavailable_answer)(request, notebook, path, type(exc).__name__)
    await sync_to_async(services.record_proxy_activity)(target.notebook_id)
    response = HttpResponse(answer.content, status=answer.status_code)
    for name, value in answer.headers.multi_items():
        if name.lower() not in NOT_DOWNSTREAM:
            response[name] = value
    return response


def _wants_json(request: HttpRequest, path: str) -> bool:
    """A script or the server's own page asking (its REST API, XHR, fetch for JSON), not a browser navigating."""
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return True
    accept = request.headers.get("Accept", "")
    if "text/html" in accept:
        return False
    return "json" in accept or path.startswith("api/") or "/api/" in path


def unavailable_answer(request: HttpRequest, notebook: Notebook, path: str, cause: str = "") -> HttpResponse:
    """The page (or JSON) for a notebook whose server cannot be reached: its state, what to do, a link to its page.

    Only called once the user was found allowed to open the notebook: everyone else still gets 404."""
    session = unavailable.Session(
        notebook.pk, notebook.state, notebook.get_state_display(), notebook.end_reason,
        notebook.get_end_reason_display() if notebook.end_reason else "", notebook.detail,
        notebook.job.get_state_display().lower(), notebook.get_server_type_display(),
    )  # fmt: skip
    answer = unavailable.explain(session, cause)
    page = reverse("notebook_detail", args=[notebook.pk])
    if _wants_json(request, path):
        response: HttpResponse = JsonResponse(answer.as_json(session, page), status=answer.status)
    else:
        context = {"notebook": notebook, "answer": answer, "page": page}
        response = render(request, "notebooks/unavailable.html", context, status=answer.status)
    if answer.retry_after_s:
        response["Retry-After"] = str(answer.retry_after_s)
    response["Cache-Control"] = "no-store"
    # An answer the portal chose (a session starting or ended, a server gone), not a fault of the portal:
    # logged here at its own level, not by Django as a server error on every poll of a starting notebook.
    log.log(
        logging.WARNING if answer.status == 502 else logging.INFO,
        "notebook %s unavailable (%s, %s): %s", notebook.pk, answer.status, notebook.state, cause or "-",
    )  # fmt: skip
    response._has_been_logged = True  # type: ignore[attr-defined]  # django.utils.log.log_response reads it
    return response


class NotebookProxyConsumer(AsyncWebsocketConsumer):
    """One browser websocket (a kernel's channels, a terminal) joined to the same path on the server."""

    upstream: ClientConnection | None = None
    pump: asyncio.Task[None] | None = None
    notebook_id = 0
    noted_at = 0.0

    async def connect(self) -> None:
        self.notebook_id = int(self.scope["url_route"]["kwargs"]["notebook_id"])
        if origin.origin():  # on their own origin, notebooks are opened with the notebook's cookie only
            host, cookies = origin.ws_cookies(self.scope)
            if not origin.is_notebook_host(host):
                await self.close(code=CLOSE_FORBIDDEN)
                return
            current = await database_sync_to_async(origin.user_of)(cookies, self.notebook_id)
        else:
            user = self.scope.get("user")
            current = (
                await database_sync_to_async(websocket_user)(self.scope) if user is not None and user.is_authenticated else None
            )
        if current is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        try:
            target = await database_sync_to_async(services.proxy_target)(current, self.notebook_id)
        except services.NotebookNotOpen:
            await self.close(code=CLOSE_NOT_READY)
            return
        if target is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self._open_upstream(target)

    async def _open_upstream(self, target: services.ProxyTarget) -> None:
        query = self.scope.get("query_string", b"").decode("latin-1")
        url = "ws" + target.url.removeprefix("http") + target.path(self.scope["path"]) + (f"?{query}" if query else "")
        offered = [Subprotocol(p) for p in self.scope.get("subprotocols") or []]
        try:
            self.upstream = await connect(
                url, additional_headers=target.auth(), subprotocols=offered or None,
                max_size=None, open_timeout=10,
            )  # fmt: skip
        except (OSError, TimeoutError, WebSocketException):
            await self.close(code=CLOSE_UNREACHABLE)
            return
        await self.accept(subprotocol=self.upstream.subprotocol)
        self.pump = asyncio.create_task(self._pump(self.upstream))

    async def _pump(self, upstream: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                if isinstance(message, bytes):
                    await self.send(bytes_data=message)
                else:
                    await self.send(text_data=message)
        await self.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.upstream is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self.upstream.send(bytes_data if bytes_data is not None else cast(str, text_data))
        if time.monotonic() - self.noted_at >= services.ACTIVITY_EVERY_S:
            self.noted_at = time.monotonic()
            await database_sync_to_async(services.record_proxy_activity)(self.notebook_id)

    async def disconnect(self, code: Any) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.upstream is not None:
            await self.upstream.close()
