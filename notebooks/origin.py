"""Notebooks on an origin of their own (`NOTEBOOK_ORIGIN`), so a notebook's scripts never run with a
portal session.

A proxied notebook page runs whatever its server sends, and in the portal's origin those scripts
could use the portal session of whoever opened it: an operator opening a user's notebook would lend
the user's code the operator's session. With `NOTEBOOK_ORIGIN` set (say `https://notebooks.grid.example`,
a host whose cookies the portal's do not share), the portal's proxy path hands out no page: it checks
the user may open the notebook and redirects to the same path on the notebook origin with a one-time
ticket (signed, bound to the user and the notebook, good for `TICKET_MAX_AGE_S`). There the ticket is
exchanged for a cookie scoped to that notebook's path; every request after that is allowed by that
cookie alone (the portal's session is not sent there and not read), with the user's right to open
the notebook checked again each time. The notebook host serves nothing but notebook paths.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from inspect import iscoroutinefunction
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseNotFound
from django.http.cookie import parse_cookie
from django.utils.decorators import sync_and_async_middleware

TICKET_PARAM = "grid_ticket"
TICKET_MAX_AGE_S = 60
COOKIE_PREFIX = "grid_notebook_"
TICKET_SALT = "notebooks.origin.ticket"
COOKIE_SALT = "notebooks.origin.cookie"


def origin() -> str:
    """The notebooks' own origin (scheme://host[:port]); empty: notebooks are proxied in the portal's origin."""
    return str(getattr(settings, "NOTEBOOK_ORIGIN", "") or "").rstrip("/")


def host() -> str:
    """The notebook origin's host[:port] as browsers send it in `Host`."""
    return urlsplit(origin()).netloc


def is_notebook_host(request_host: str) -> bool:
    return bool(origin()) and request_host.lower() == host().lower()


def cookie_name(notebook_id: int) -> str:
    return f"{COOKIE_PREFIX}{notebook_id}"


def cookie_path(notebook_id: int) -> str:
    return f"/notebooks/{notebook_id}/proxy/"


def ticket_url(user: Any, notebook_id: int, path: str, query: str) -> str:
    """Where the portal sends a user who may open the notebook: the same path on the notebook origin, with a ticket."""
    ticket = signing.dumps({"u": user.pk, "n": notebook_id, "x": secrets.token_urlsafe(12)}, salt=TICKET_SALT)
    return f"{origin()}{path}?{query + '&' if query else ''}{urlencode({TICKET_PARAM: ticket})}"


def redeem_ticket(ticket: str, notebook_id: int) -> int | None:
    """The user id a fresh, unused ticket for this notebook names; None for anything else (each ticket works once)."""
    try:
        data = signing.loads(ticket, salt=TICKET_SALT, max_age=TICKET_MAX_AGE_S)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("n") != notebook_id or not isinstance(data.get("u"), int):
        return None
    if not cache.add(f"notebooks:ticket:{data.get('x')}", 1, TICKET_MAX_AGE_S * 2):
        return None  # used before
    return int(data["u"])


def cookie_value(user_id: int, notebook_id: int) -> str:
    return signing.dumps({"u": user_id, "n": notebook_id}, salt=COOKIE_SALT)


def cookie_max_age_s() -> int:
    return int(getattr(settings, "NOTEBOOK_MAX_LIFETIME_S", 12 * 3600))


def user_of(cookies: Mapping[str, str], notebook_id: int) -> Any | None:
    """The active user the notebook's cookie names; None without a valid one."""
    raw = cookies.get(cookie_name(notebook_id))
    if not raw:
        return None
    try:
        data = signing.loads(raw, salt=COOKIE_SALT, max_age=cookie_max_age_s())
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("n") != notebook_id or not isinstance(data.get("u"), int):
        return None
    return get_user_model().objects.filter(pk=int(data["u"]), is_active=True).first()


def without_ticket(query: str) -> str:
    """The query string with the ticket taken out."""
    parts = [p for p in query.split("&") if p and not p.startswith(f"{TICKET_PARAM}=")]
    return "&".join(parts)


def ws_cookies(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A websocket's Host and cookies, from its scope's headers."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    return headers.get("host", ""), parse_cookie(headers.get("cookie", ""))


PROXY_PATH = re.compile(r"^/notebooks/\d+/proxy/")


def _off_limits(request: HttpRequest) -> bool:
    """A request to the notebook origin's host for anything but a notebook's proxy path."""
    if not origin():
        return False
    try:
        requested = request.get_host()
    except DisallowedHost:
        return False  # Django answers 400 itself
    return is_notebook_host(requested) and not PROXY_PATH.match(request.path)


@sync_and_async_middleware
def notebook_host_only(get_response: Any) -> Any:
    """The notebook origin serves notebooks' proxy paths and nothing else of the portal."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> Any:
            if _off_limits(request):
                return HttpResponseNotFound("not found", content_type="text/plain")
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> Any:
        if _off_limits(request):
            return HttpResponseNotFound("not found", content_type="text/plain")
        return get_response(request)

    return middleware
