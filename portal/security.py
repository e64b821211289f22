"""Security plumbing: the Content Security Policy and a limit on failed token logins.

The policy allows scripts from the portal itself and, for the few inline bootstraps at the end of
a page, a per-response nonce (`request.csp_nonce`, written as `nonce="{{ request.csp_nonce }}"`).
Styles may be inline: templates size bars with `style=` attributes and Plotly adds its own
<style> rules when it draws. Websockets connect back to the same host (ws: or wss:).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions

from portal.models import ApiToken, hash_token
from portal.tokens import ApiTokenAuthentication, read_shared, token_cache_key

CSP_HEADER = "Content-Security-Policy"


def identity_provider_origin() -> str:
    """The OpenID Connect provider's origin when single sign-on is on, else ''.

    Signing in and out through it are form posts answered by a redirect there, and browsers check
    such redirects against form-action."""
    if not getattr(settings, "OIDC_CLIENT_ID", None):
        return ""
    parts = urlsplit(getattr(settings, "OIDC_SERVER_URL", "") or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""


def content_security_policy(nonce: str, form_origin: str = "") -> str:
    """The policy for one response. Every page, the API docs included, runs only the portal's own scripts
    (Swagger UI comes from drf-spectacular-sidecar and starts from a script file, not inline)."""
    directives = {
        "default-src": "'self'",
        "script-src": f"'self' 'nonce-{nonce}'",
        "style-src": "'self' 'unsafe-inline'",
        "img-src": "'self' data: blob:",
        "font-src": "'self' data:",
        "connect-src": "'self' ws: wss:",
        "frame-ancestors": "'none'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": f"'self' {form_origin}".strip(),
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


class ContentSecurityPolicyMiddleware:
    """Give each request a nonce and each response the policy (unless the view set its own)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(18)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = self.get_response(request)
        if CSP_HEADER not in response:
            response[CSP_HEADER] = content_security_policy(nonce, identity_provider_origin())
        return response


class NoStoreForSignedInMiddleware:
    """Nothing a signed-in user is shown (a new token, a job's logs, an invoice) is kept by a browser or
    proxy cache: such responses get `Cache-Control: no-store` unless the view chose its own policy."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and "Cache-Control" not in response:
            add_never_cache_headers(response)
        return response


# --- websocket origins -----------------------------------------------------------------------


def same_origin(origin: str, host: str, trusted: list[str]) -> bool:
    """Whether a websocket handshake's Origin is this site: scheme-less host *and port* equal to the Host
    header, or an origin listed in CSRF_TRUSTED_ORIGINS (a proxy on another port or name)."""
    if not origin or origin == "null":
        return False
    if origin.rstrip("/") in (t.rstrip("/") for t in trusted):
        return True
    parsed = urlsplit(origin)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    default = {"http": 80, "https": 443}[parsed.scheme]
    return _netloc(parsed.netloc, default) == _netloc(host, default)


def _netloc(netloc: str, default_port: int) -> tuple[str, int]:
    host, _, port = netloc.lower().rpartition(":") if netloc.rsplit(":", 1)[-1].isdigit() else (netloc.lower(), "", "")
    return host, int(port) if port else default_port


class SameOriginWebsocket:
    """ASGI wrapper that refuses a websocket whose Origin is not the page's own scheme, host and port."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            trusted = list(getattr(settings, "CSRF_TRUSTED_ORIGINS", []))
            if not same_origin(headers.get("origin", ""), headers.get("host", ""), trusted):
                await receive()  # the connect message
                await send({"type": "websocket.close", "code": 4403})
                return None
        return await self.app(scope, receive, send)


# --- failed token logins ---------------------------------------------------------------------


def client_ip(request: Any) -> str:
    """The client's address. With TRUSTED_PROXY_COUNT = n > 0 (the portal sits behind n proxies that each
    append to X-Forwarded-For) it is the n-th address from the right of that header, the one the
    outermost trusted proxy saw; otherwise REMOTE_ADDR. The header is never read when nothing is
    configured, so a client cannot pick its own address."""
    proxies = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if proxies > 0:
        hops = [h.strip() for h in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if h.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _failure_key(ip: str, prefix: str) -> str:
    return f"token-auth-failures:{ip}:{prefix}"


def token_failure_limit() -> tuple[int, int]:
    """(failures allowed, window in seconds), read at call time so tests and deployments can change them."""
    return int(getattr(settings, "TOKEN_AUTH_FAILURE_LIMIT", 20)), int(getattr(settings, "TOKEN_AUTH_FAILURE_WINDOW_S", 300))


def record_token_failure(ip: str, prefix: str, window_s: int) -> int:
    key = _failure_key(ip, prefix)
    cache.add(key, 0, timeout=window_s)  # the window starts at the first failure
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window_s)
        return 1


def presented_prefix(request: Any, keyword: str) -> str | None:
    """The first characters of the token in `Authorization: Token <key>` (what ApiToken.prefix stores); None
    when no token is presented."""
    parts = (request.META.get("HTTP_AUTHORIZATION") or "").split()
    if len(parts) != 2 or parts[0].lower() != keyword.lower():
        return None
    return parts[1][: ApiToken.PREFIX_LENGTH]


class RateLimitedTokenAuthentication(ApiTokenAuthentication):
    """`Authorization: Token` that answers 429 (with Retry-After) once a client has failed too often with
    tokens of one prefix.

    Failures count per client address *and* token prefix: whoever hammers one token (or sprays
    keys that look like it) is stopped, while a good token with another prefix from the same address,
    say a colleague behind the same proxy or NAT, still works. Only failures count; a client with a
    good token is never slowed. Guessing a whole key is hopeless anyway (256 random bits). The
    failure count and the cached token are read in one round trip to the shared cache.
    """

    def authenticate(self, request: Any) -> Any:
        limit, window_s = token_failure_limit()
        prefix = presented_prefix(request, self.keyword)
        ip = client_ip(request)
        try:
            key = self.presented_key(request)
            if key is None:
                return None
            key_hash = hash_token(key)
            failure_key, token_key = _failure_key(ip, key[: ApiToken.PREFIX_LENGTH]), token_cache_key(key_hash)
            found = read_shared([failure_key, token_key])
            failures = int(found.get(failure_key, 0)) if found is not None else int(cache.get(failure_key, 0))
            if failures >= limit:
                raise exceptions.Throttled(wait=window_s, detail="Too many failed attempts with this token from this address.")
            return self.verify(key_hash, (found or {}).get(token_key))
        except exceptions.AuthenticationFailed:
            record_token_failure(ip, prefix or "", window_s)
            raise


# --- the admin's sign-in page -----------------------------------------------------------------


class AdminLoginLimitMiddleware:
    """/admin/login/ has no limit of its own: count wrong passwords per account (from any address) and per
    address, and answer 429 with Retry-After, without checking the password, once the account reaches
    ADMIN_LOGIN_FAILURE_LIMIT or the address four times that (an office behind one NAT) within the
    window. A successful sign-in clears the account's count."""

    ADDRESS_FACTOR = 4

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # The path test first: reversing the URL costs more than most requests spend here.
        if request.method != "POST" or not request.path_info.endswith("/login/") or request.path_info != reverse("admin:login"):
            return self.get_response(request)
        limit = int(getattr(settings, "ADMIN_LOGIN_FAILURE_LIMIT", 5))
        window_s = int(getattr(settings, "ADMIN_LOGIN_FAILURE_WINDOW_S", 300))
        keys = [f"admin-login:user:{request.POST.get('username', '')[:150].lower()}", f"admin-login:ip:{client_ip(request)}"]
        if int(cache.get(keys[0], 0)) >= limit or int(cache.get(keys[1], 0)) >= limit * self.ADDRESS_FACTOR:
            response = HttpResponse("Too many failed sign-in attempts; try again later.", status=429, content_type="text/plain")
            response["Retry-After"] = str(window_s)
            return response
        response = self.get_response(request)
        if response.status_code == 200:  # the form came back: a wrong password
            for key in keys:
                cache.add(key, 0, timeout=window_s)
                try:
                    cache.incr(key)
                except ValueError:
                    cache.set(key, 1, timeout=window_s)
        elif response.status_code == 302:
            cache.delete(keys[0])
        return response


class TokenScheme(OpenApiAuthenticationExtension):
    """Names `Authorization: Token <key>` in the OpenAPI schema, so clients and fuzzers know how to authenticate."""

    target_class = "portal.tokens.ApiTokenAuthentication"
    match_subclasses = True
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Token <key>"}


# --- websockets opened with a token ----------------------------------------------------------


def handshake_request(scope: dict[str, Any]) -> HttpRequest:
    """The handshake as a request the token authentication can read (headers, client address)."""
    request = HttpRequest()
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").upper().replace("-", "_")
        request.META[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value.decode("latin-1")
    client = scope.get("client")
    request.META["REMOTE_ADDR"] = client[0] if client else ""
    return request


def token_user(request: HttpRequest) -> Any | None:
    """The user behind the request's `Authorization: Token` header, with the API's rate limit on failures;
    None for a missing, bad, revoked or throttled token."""
    try:
        found = RateLimitedTokenAuthentication().authenticate(request)
    except (exceptions.AuthenticationFailed, exceptions.Throttled):
        return None
    return None if found is None else found[0]


class TokenWebsocket:
    """ASGI wrapper: a websocket whose handshake carries `Authorization: Token <key>` (scripts, gridctl;
    browsers cannot set that header) speaks for the token's user, with no session; the token is checked
    again on every tick (`portal.access.websocket_user`), so revoking it ends the socket. A bad token is
    refused with 4401. Without the header, `session_app` (cookie sessions) decides as before."""

    def __init__(self, session_app: Any, token_app: Any) -> None:
        self.session_app = session_app
        self.token_app = token_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.session_app(scope, receive, send)
        request = handshake_request(scope)
        if presented_prefix(request, ApiTokenAuthentication.keyword) is None:
            return await self.session_app(scope, receive, send)
        user = await database_sync_to_async(token_user)(request)
        if user is None:
            await receive()  # the connect message
            await send({"type": "websocket.close", "code": 4401})
            return None
        token_scope = dict(scope, user=user, api_token_header=request.META["HTTP_AUTHORIZATION"])
        return await self.token_app(token_scope, receive, send)
