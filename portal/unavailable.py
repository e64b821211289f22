"""Answers for a request that met a service outage: 503 with Retry-After, never a bare 500.

A request that fails because the database (or Redis, where something still needs it) is
unreachable has had its transaction rolled back, so the client is told that nothing was done
and when to try again. Any other error is a real bug and stays a 500.
"""

from __future__ import annotations

import sys

import redis
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.template import loader
from kombu.exceptions import OperationalError as BrokerError

RETRY_AFTER_S = 5
OUTAGES: dict[type[BaseException], str] = {
    OperationalError: "the database",
    InterfaceError: "the database",
    redis.RedisError: "Redis",
    BrokerError: "the task broker",
}


def unreachable_service(exc: BaseException | None) -> str | None:
    """The service whose outage `exc` reports (also through its causes), or None for any other error."""
    seen = 0
    while exc is not None and seen < 5:
        for kind, service in OUTAGES.items():
            if isinstance(exc, kind):
                return service
        if isinstance(exc, DatabaseError) and "connection" in str(exc).lower():
            return "the database"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def service_unavailable(request: HttpRequest, service: str) -> HttpResponse:
    detail = f"{service} is unreachable; the request was not carried out. Try again in {RETRY_AFTER_S} s."
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response: HttpResponse = JsonResponse({"detail": detail, "retry_after_s": RETRY_AFTER_S}, status=503)
    else:
        body = f"<!doctype html><title>Temporarily unavailable</title><h1>Temporarily unavailable</h1><p>{detail}</p>"
        response = HttpResponse(body, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a 503 with Retry-After when the error is an outage, else Django's plain 500."""
    service = unreachable_service(sys.exc_info()[1])
    if service is not None:
        return service_unavailable(request, service)
    try:
        template = loader.get_template("500.html")
    except Exception:  # noqa: BLE001 - no template: Django's own minimal page
        return HttpResponseServerError("<h1>Server Error (500)</h1>", content_type="text/html")
    return HttpResponseServerError(template.render())
