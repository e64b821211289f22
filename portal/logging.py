"""Structured logs: one JSON object per line, each carrying the request id or job id it belongs to.

`RequestIdMiddleware` gives every request an id (the caller's `X-Request-ID` when it is sane, a
fresh one otherwise), keeps it in a context variable for every log line written while the request
runs, echoes it in the response header and writes one access line (path, status, user, duration).
Celery tasks get their task id as the request id and, when their first argument is `job_id`, the
job id too. `JsonFormatter` turns records into the lines; `LOG_FORMAT=json` selects it.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from celery import signals
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import empty

request_id: ContextVar[str] = ContextVar("request_id", default="")
job_id: ContextVar[int | None] = ContextVar("job_id", default=None)

HEADER = "X-Request-ID"
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a caller's id goes into every line: bound it, no control characters
ACCESS = logging.getLogger("portal.request")
FIELDS = ("request_id", "user", "method", "path", "status", "duration_ms", "job_id", "task")
_TASK_TOKENS: dict[str, tuple[Token[str], Token[int | None]]] = {}


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message, then whichever context fields it has."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        connect_task_context()  # a worker configured for JSON lines gets job ids without further wiring

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = {"request_id": request_id.get() or None, "job_id": job_id.get()}
        for name in FIELDS:
            value = getattr(record, name, context.get(name))
            if value not in (None, ""):
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def new_request_id(offered: str | None) -> str:
    return offered if offered and SANE_ID.fullmatch(offered) else uuid.uuid4().hex


def username(request: HttpRequest) -> str:
    """Who made the request, if authentication already looked (never triggers a session lookup itself)."""
    user = request.__dict__.get("user")
    if user is None or getattr(user, "_wrapped", None) is empty:
        return ""
    return str(getattr(user, "username", "") or "")


def log_access(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
    response[HEADER] = request_id.get()
    ACCESS.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "user": username(request),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )


class RequestIdMiddleware:
    """First in MIDDLEWARE: every later log line of the request carries its id."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        token, started = request_id.set(new_request_id(request.headers.get(HEADER))), time.perf_counter()
        try:
            response = self.get_response(request)
            log_access(request, response, started)
            return response
        finally:
            request_id.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        token, started = request_id.set(new_request_id(request.headers.get(HEADER))), time.perf_counter()
        try:
            get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
            response = await get_response(request)
            log_access(request, response, started)
            return response
        finally:
            request_id.reset(token)


@contextmanager
def job_context(id_: int | None) -> Iterator[None]:
    """Log lines written inside carry this job id."""
    token = job_id.set(id_)
    try:
        yield
    finally:
        job_id.reset(token)


def job_id_of(task: Any, args: Any, kwargs: Any) -> int | None:
    """The job a task works on: its `job_id` argument, by keyword or as the first parameter."""
    if isinstance(kwargs, dict) and isinstance(kwargs.get("job_id"), int):
        return int(kwargs["job_id"])
    try:
        parameters = list(inspect.signature(task.run).parameters)
    except (TypeError, ValueError, AttributeError):
        return None
    if parameters[:1] == ["job_id"] and args and isinstance(args[0], int):
        return int(args[0])
    return None


def _task_started(task_id: str = "", task: Any = None, args: Any = (), kwargs: Any = None, **_: Any) -> None:
    _TASK_TOKENS[task_id] = (request_id.set(task_id), job_id.set(job_id_of(task, args, kwargs)))


def _task_finished(task_id: str = "", **_: Any) -> None:
    tokens = _TASK_TOKENS.pop(task_id, None)
    if tokens is not None:
        request_id.reset(tokens[0])
        job_id.reset(tokens[1])


def connect_task_context() -> None:
    """Give Celery tasks their task id and job id in the context; safe to call more than once."""
    signals.task_prerun.connect(_task_started, weak=False, dispatch_uid="portal.logging.task_started")
    signals.task_postrun.connect(_task_finished, weak=False, dispatch_uid="portal.logging.task_finished")
