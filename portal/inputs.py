"""One strict layer for what a request carries: query parameters, path, form fields and JSON bodies.

Every request passes `StrictInputMiddleware` before any view: a NUL or other control character in
the path, a query parameter or a form field, a JSON body nested too deep, a lone surrogate, a NUL
inside a JSON string or an integer no database column can hold is refused with HTTP 400 naming the
field and the limit. Views then read typed values through `month()` and `integer()`, which raise
`BadInput` (rendered the same way) instead of letting `int()` or `date()` fail into a 500.

The checks are pure functions of text and parsed JSON, so they are tested without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

# C0 controls and DEL, except tab, line feed and carriage return (scripts and reasons hold those).
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SURROGATE = re.compile(r"[\ud800-\udfff]")
JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"\s*(:)?|[\[\]{}]')
MAX_JSON_DEPTH = 32
MAX_PARAMETER_LENGTH = 4096
INT64 = 2**63 - 1
MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
FIRST_YEAR, LAST_YEAR = 2000, 2999
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,19}")


class BadInput(ValueError):
    """A value a request carried that the portal refuses; `field` names it, `message` says the limit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- text ------------------------------------------------------------------------------------


def check_text(field: str, value: str, max_length: int = MAX_PARAMETER_LENGTH) -> str:
    """`value` unchanged, or BadInput when it holds a control character or is longer than `max_length`."""
    if CONTROL.search(value):
        raise BadInput(field, "contains a control character (such as NUL), which no field accepts")
    if SURROGATE.search(value):
        raise BadInput(field, "is not valid Unicode text (a lone surrogate)")
    if len(value) > max_length:
        raise BadInput(field, f"is {len(value)} characters long; the limit is {max_length}")
    return value


# --- JSON ------------------------------------------------------------------------------------


def json_depth_check(body: str, limit: int = MAX_JSON_DEPTH) -> None:
    """BadInput naming the top-level key under which `body` nests deeper than `limit` (before parsing it:
    Python's parser would run out of stack on a body nested a few thousand levels deep)."""
    depth, key = 0, ""
    for token in JSON_TOKEN.finditer(body):
        text = token.group(0)
        if text in "[{":
            depth += 1
            if depth > limit:
                raise BadInput(key or "body", f"is nested more than {limit} levels deep")
        elif text in "]}":
            depth -= 1
        elif token.group(1) and depth == 1:
            key = _key_name(text)


def _key_name(token: str) -> str:
    try:
        return str(json.loads(token.rstrip()[:-1].rstrip()))
    except ValueError:
        return "body"


def check_json(value: Any, path: str = "") -> None:
    """BadInput naming the first place in parsed JSON that holds a NUL, a lone surrogate or an integer
    beyond 64 bits (no column of the portal's database can store those)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            _check_json_string(where or "body", item)
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if not -INT64 <= item <= INT64:
                raise _json_error(where or "body", f"{item} is beyond the largest whole number stored ({INT64})")
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{where}.{key}" if where else str(key)
                _check_json_string(f"{where or 'body'} key", key)
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))


def _check_json_string(where: str, value: str) -> None:
    if "\x00" in value:
        raise _json_error(where, "contains a NUL character, which no field accepts")
    if SURROGATE.search(value):
        raise _json_error(where, "is not valid Unicode text (a lone surrogate)")


def _json_error(where: str, message: str) -> BadInput:
    """Errors are keyed by the top-level field, as the API's own validation is; the message says where inside."""
    field = re.split(r"[.\[ ]", where, maxsplit=1)[0] or "body"
    return BadInput(field, message if where == field else f"{where} {message}")


def parse_json(body: str, field: str = "body") -> Any:
    """Parse untrusted JSON text with every check above; BadInput for anything else that is not JSON."""
    json_depth_check(body)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise BadInput(field, "is not valid JSON") from None
    check_json(value, "" if field == "body" else field)
    return value


# --- typed parameters ------------------------------------------------------------------------


def month(text: str | None, field: str = "month", default: date | None = None) -> date:
    """The first day of the month written `YYYY-MM` (ASCII digits, year 2000-2999)."""
    if not text:
        if default is None:
            raise BadInput(field, "is required; use YYYY-MM, e.g. 2025-03")
        return default
    found = MONTH.fullmatch(text)
    if found is None:
        raise BadInput(field, f"{text[:20]!r} is not a month; use YYYY-MM, e.g. 2025-03")
    year = int(found.group(1))
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise BadInput(field, f"{text} is outside {FIRST_YEAR}-01..{LAST_YEAR}-12")
    return date(year, int(found.group(2)), 1)


def integer(text: str | int | None, field: str, minimum: int, maximum: int, default: int | None = None) -> int:
    """A whole number written in ASCII digits, within [minimum, maximum]."""
    if text is None or text == "":
        if default is None:
            raise BadInput(field, f"is required: a whole number from {minimum} to {maximum}")
        return default
    if isinstance(text, bool) or not (isinstance(text, int) or WHOLE_NUMBER.fullmatch(str(text).strip())):
        raise BadInput(field, f"{str(text)[:20]!r} is not a whole number (from {minimum} to {maximum})")
    value = int(text)
    if not minimum <= value <= maximum:
        raise BadInput(field, f"{value} is outside {minimum}-{maximum}")
    return value


# --- the middleware --------------------------------------------------------------------------

JSON_TYPES = ("application/json", "application/merge-patch+json")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def check_request(request: HttpRequest) -> None:
    """Every check that does not depend on the view: path, query parameters, form fields, JSON body."""
    check_text("path", request.path_info, max_length=2048)
    for key, values in request.GET.lists():
        check_text(f"?{key[:40]}", key, max_length=200)
        for value in values:
            check_text(key, value)
    if request.method not in BODY_METHODS:
        return
    content_type = request.content_type or ""
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("body", "is not UTF-8 text") from None
        if text.strip():
            parse_json(text)
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, values in request.POST.lists():
            check_text(key[:40], key, max_length=200)
            for value in values:
                check_text(key, value, max_length=settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440)


def wants_json(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def bad_input_response(request: HttpRequest, error: BadInput) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({error.field: [error.message]}, status=400)
    html = render_to_string("portal/bad_input.html", {"field": error.field, "message": error.message}, request=request)
    return HttpResponse(html, status=400)


class StrictInputMiddleware:
    """Refuse malformed input before any view runs, and render a view's BadInput as a 400."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            check_request(request)
        except BadInput as error:
            return bad_input_response(request, error)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, BadInput):
            return bad_input_response(request, exception)
        return None
