"""Structured logs: JSON lines with the request id (from X-Request-ID or made up), the user, and the job id of a task."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import shared_task
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings

from cluster.simulator.backend import SimulatorBackend
from portal import logging as portal_logging
from portal.logging import HEADER, JsonFormatter, RequestIdMiddleware, job_context
from portal.models import User

MIDDLEWARE = list(settings.MIDDLEWARE)  # RequestIdMiddleware comes first there


@contextmanager
def json_lines(logger: str = "") -> Iterator[list[dict[str, Any]]]:
    """The lines a logger (default: root) writes inside the block, parsed back from JSON when it ends."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    target = logging.getLogger(logger or None)
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    parsed: list[dict[str, Any]] = []
    try:
        yield parsed
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
        parsed.extend(json.loads(line) for line in stream.getvalue().splitlines())


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_it_gives_each_request_an_id_and_echoes_it(
    web: Callable[[User | None], Client], alice: User, grid: SimulatorBackend
) -> None:
    first, second = web(alice).get("/jobs/"), web(alice).get("/jobs/")
    assert len(first[HEADER]) == 32 and first[HEADER] != second[HEADER]


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_the_access_line_has_path_status_user_duration_and_the_callers_id(
    web: Callable[[User | None], Client], alice: User, grid: SimulatorBackend
) -> None:
    with json_lines("portal.request") as lines:
        response = web(alice).get("/jobs/", HTTP_X_REQUEST_ID="trace-42")
    assert response[HEADER] == "trace-42"
    (line,) = lines
    assert line["request_id"] == "trace-42" and line["path"] == "/jobs/" and line["status"] == 200
    assert line["user"] == "alice" and line["method"] == "GET" and line["duration_ms"] >= 0
    assert set(line) >= {"time", "level", "logger", "message"}


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_an_anonymous_request_is_logged_without_a_user(client: Client, grid: SimulatorBackend) -> None:
    with json_lines("portal.request") as lines:
        client.get("/jobs/")
    (line,) = lines
    assert line["status"] == 302 and "user" not in line


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_an_unsafe_request_id_is_replaced(web: Callable[[User | None], Client], alice: User, grid: SimulatorBackend) -> None:
    response = web(alice).get("/jobs/", HTTP_X_REQUEST_ID="bad id\nwith newline")
    replaced = response[HEADER]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced), replaced


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_lines_written_while_a_request_runs_carry_its_id(
    client: Client, grid: SimulatorBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grid import views

    def noisy_checks() -> dict[str, Any]:
        logging.getLogger("grid.health").warning("checking")
        return {"ok": True, "status": "ok", "failing": [], "checks": {}}

    monkeypatch.setattr(views, "run_checks", noisy_checks)
    monkeypatch.setattr(logging.getLogger("portal.request"), "level", logging.INFO)  # quiet in plain mode
    with json_lines() as lines:
        client.get("/healthz", HTTP_X_REQUEST_ID="inside-1")
    by_logger = {line["logger"]: line for line in lines}
    assert by_logger["grid.health"]["request_id"] == "inside-1"
    assert by_logger["portal.request"]["request_id"] == "inside-1"


async def test_under_asgi_the_view_sees_the_id_and_the_response_carries_it() -> None:
    async def view(request: Any) -> HttpResponse:
        return HttpResponse(portal_logging.request_id.get())

    middleware = RequestIdMiddleware(view)
    with json_lines("portal.request") as lines:
        response = await middleware(RequestFactory().get("/x", headers={HEADER: "async-7"}))
    assert response.content == b"async-7" and response[HEADER] == "async-7"
    assert lines[0]["request_id"] == "async-7" and portal_logging.request_id.get() == ""


def test_a_record_inside_a_request_context_carries_its_id() -> None:
    formatter = JsonFormatter()
    token = portal_logging.request_id.set("req-9")
    try:
        record = logging.LogRecord("jobs.services", logging.WARNING, __file__, 1, "held %s", ("x",), None)
        line = json.loads(formatter.format(record))
    finally:
        portal_logging.request_id.reset(token)
    assert line["request_id"] == "req-9" and line["message"] == "held x" and line["level"] == "WARNING"
    assert "job_id" not in line


def test_a_job_id_comes_from_the_context_or_from_extra() -> None:
    formatter = JsonFormatter()
    with job_context(17):
        record = logging.LogRecord("jobs", logging.INFO, __file__, 1, "dispatched", (), None)
        assert json.loads(formatter.format(record))["job_id"] == 17
    record = logging.LogRecord("jobs", logging.INFO, __file__, 1, "dispatched", (), None)
    record.job_id = 23
    assert json.loads(formatter.format(record))["job_id"] == 23


def test_an_exception_is_one_line_with_its_traceback() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("jobs", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exc"]


@shared_task
def _job_task(job_id: int) -> dict[str, Any]:
    return {"job_id": portal_logging.job_id.get(), "request_id": portal_logging.request_id.get()}


@shared_task
def _other_task(count: int) -> int | None:
    return portal_logging.job_id.get()


def test_a_celery_task_that_takes_a_job_id_logs_with_it() -> None:
    portal_logging.connect_task_context()
    seen = _job_task.apply(args=(41,), task_id="task-abc").result
    assert seen == {"job_id": 41, "request_id": "task-abc"}
    assert _job_task.apply(kwargs={"job_id": 5}).result["job_id"] == 5
    assert _other_task.apply(args=(3,)).result is None  # an int that is not a job id is not taken for one
    assert portal_logging.job_id.get() is None and portal_logging.request_id.get() == ""


def test_the_settings_switch_selects_json_lines() -> None:
    """LOGGING's `json` formatter entry (`{"()": "portal.logging.JsonFormatter"}`) builds the formatter."""
    formatter = logging.config.DictConfigurator({"version": 1}).configure_formatter({"()": "portal.logging.JsonFormatter"})
    assert isinstance(formatter, JsonFormatter)


def test_the_middleware_is_sync_and_async_capable() -> None:
    assert RequestIdMiddleware.sync_capable and RequestIdMiddleware.async_capable
