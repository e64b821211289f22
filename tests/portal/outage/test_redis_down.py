"""With Redis unreachable the portal degrades, never fails: cache, enqueue, pushes, health and the API.

Redis is "down" here by pointing at a port nothing listens on (127.0.0.1:1), so every call is
refused at once; the drill in tests/drills/test_redis_restart.py does the same with a real restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.db import OperationalError
from django.test import Client
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal import broadcast, queue
from portal.breaker import Breaker
from portal.cache import ResilientRedisCache
from portal.models import Heartbeat, User

DOWN = "redis://127.0.0.1:1/0"
JOB = {"name": "x", "command": ["train"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}


@pytest.fixture
def broker_down(settings: Settings) -> Any:
    """A non-eager Celery app whose broker refuses connections; the breaker starts closed."""
    from portal.celery import app

    old = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.update(broker_url=DOWN, task_always_eager=False)
    app._pool, app.amqp._producer_pool = None, None
    settings.CELERY_TASK_ALWAYS_EAGER = False
    queue.broker.succeeded()
    yield app
    app.conf.update(broker_url=old[0], task_always_eager=old[1])
    app._pool, app.amqp._producer_pool = None, None
    queue.broker.succeeded()


def test_the_breaker_opens_on_a_failure_and_closes_on_the_next_success() -> None:
    breaker = Breaker("thing", cooldown_s=0.05)
    assert not breaker.is_open and not breaker.is_down
    breaker.failed(ConnectionError("refused"))
    assert breaker.is_open and breaker.is_down and breaker.state()["ok"] is False
    time.sleep(0.06)
    assert not breaker.is_open and breaker.is_down  # try again, but still believed down
    breaker.succeeded()
    assert breaker.state() == {"ok": True}


def test_the_cache_falls_back_to_memory_and_comes_back_to_redis() -> None:
    down = ResilientRedisCache(DOWN, {})
    started = time.monotonic()
    assert down.add("k", 1, 30) is True
    assert down.incr("k") == 2 and down.get("k") == 2
    assert time.monotonic() - started < 2.0, "an unreachable Redis must not stall each call"
    assert down.breaker.is_down and "ConnectionError" in str(down.breaker.state()["error"])


@pytest.mark.redis
def test_the_cache_uses_redis_when_it_answers(redis_url_or_skip: str) -> None:
    shared = ResilientRedisCache(redis_url_or_skip, {})
    other_process = ResilientRedisCache(redis_url_or_skip, {})
    shared.set("outage-test", "in redis", 30)
    assert other_process.get("outage-test") == "in redis"  # not a per-process memory cache
    assert not shared.breaker.is_down
    shared.delete("outage-test")


def test_failed_token_logins_are_still_limited_per_process_while_redis_is_down(
    api: Callable[[User | None], APIClient], alice: User, settings: Settings
) -> None:
    settings.CACHES = {"default": {"BACKEND": "portal.cache.ResilientRedisCache", "LOCATION": DOWN}}
    settings.TOKEN_AUTH_FAILURE_LIMIT = 3
    client = api(None)
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    answers = [client.get("/api/v1/jobs/").status_code for _ in range(5)]
    assert answers == [401, 401, 401, 429, 429]
    assert cache.breaker.is_down  # type: ignore[attr-defined]


def test_a_submit_while_the_broker_is_down_is_saved_and_answers_201(
    api: Callable[[User | None], APIClient],
    alice: User,
    grid: SimulatorBackend,
    broker_down: Any,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    caplog.set_level(logging.INFO, logger="portal.queue")
    client = api(alice)
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post("/api/v1/jobs/", JOB, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        second = client.post("/api/v1/jobs/", {**JOB, "name": "y"}, format="json")
    assert (first.status_code, second.status_code) == (201, 201), first.content
    assert set(Job.objects.values_list("state", flat=True)) == {JobState.PENDING}
    assert "could not enqueue jobs.tasks.admission_cycle, left to the periodic cycle" in caplog.text
    assert "broker down: jobs.tasks.admission_cycle left to the periodic cycle" in caplog.text  # no second wait
    assert queue.broker.is_down


def test_an_enqueue_skipped_while_the_breaker_is_open_does_not_touch_the_broker(broker_down: Any) -> None:
    class Counting:
        name = "counting"
        calls = 0

        def delay(self, *args: Any) -> None:
            Counting.calls += 1
            raise OSError("refused")

    task = Counting()
    assert queue.enqueue_now(task) is False and queue.enqueue_now(task) is False
    assert Counting.calls == 1


def test_a_push_that_cannot_be_delivered_is_dropped_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            raise ConnectionError("Connection closed by server.")

    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: Broken())
    broadcast.send_now("grid", {"type": "grid.changed"})
    assert "push to grid dropped: ConnectionError" in caplog.text


def test_healthz_says_degraded_with_200_when_only_the_broker_is_down(
    web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend, settings: Settings
) -> None:
    Heartbeat.beat("worker")
    settings.REDIS_URL = DOWN
    response = web(olivia).get("/healthz")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "degraded" and body["failing"] == ["broker"] and not body["ok"]


def test_healthz_answers_503_when_the_database_is_down(
    web: Callable[[User | None], Client], grid: SimulatorBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grid import health

    def unreachable() -> dict[str, Any]:
        raise OperationalError("connection to server at 127.0.0.1 failed")

    monkeypatch.setitem(health.CHECKS, "database", unreachable)
    response = web(None).get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "down"


def test_an_api_call_that_meets_a_database_outage_answers_503_with_retry_after(
    api: Callable[[User | None], APIClient], alice: User, grid: SimulatorBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("the connection is closed")

    monkeypatch.setattr(job_services, "submit_request", down)
    client = api(alice)
    client.raise_request_exception = False
    response = client.post("/api/v1/jobs/", JOB, format="json")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "the database is unreachable; the request was not carried out" in response.json()["detail"]
    assert not Job.objects.exists()


def test_a_page_that_meets_a_database_outage_answers_503_not_500(
    web: Callable[[User | None], Client], alice: User, grid: SimulatorBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grid import live

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(live, "grid_snapshot", down)
    client = web(alice)
    client.raise_request_exception = False
    response = client.get("/")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert b"Temporarily unavailable" in response.content


def test_any_other_error_is_still_a_500(
    web: Callable[[User | None], Client], alice: User, grid: SimulatorBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grid import live

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a real bug")

    monkeypatch.setattr(live, "grid_snapshot", broken)
    client = web(alice)
    client.raise_request_exception = False
    assert client.get("/").status_code == 500


def test_the_admission_cycle_dispatches_what_it_admits_without_a_broker(
    alice: User, submit: Callable[..., Job], broker_down: Any
) -> None:
    job = submit(alice)
    assert job_services.admit_and_dispatch() == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.DISPATCHED and job.backend_job_id


def test_a_backend_away_at_dispatch_leaves_the_job_admitted_for_the_retrying_task(
    alice: User, submit: Callable[..., Job], grid: SimulatorBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cluster.backends.base import BackendUnavailable

    queued: list[tuple[Any, tuple[Any, ...]]] = []

    def enqueue_now(task: Any, *args: Any) -> bool:
        queued.append((task, args))
        return True

    monkeypatch.setattr(job_services, "enqueue_now", enqueue_now)

    class Away(type(grid)):  # type: ignore[misc]
        def submit(self, request: Any) -> str:
            raise BackendUnavailable("controller restarting")

    job = submit(alice)
    away = Away(pools=grid.pools, speed=1.0, failure_rate=0.0)
    assert job_services.admit_and_dispatch(away) == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED
    assert queued == [("jobs.tasks.dispatch_jobs", ([job.pk],))]


def test_a_worker_retries_a_lost_broker_every_second_for_ever() -> None:
    from portal.celery import PromptConsumer
    from portal.celery import app as celery_app

    seen: dict[str, Any] = {}

    class Connection:
        def ensure_connection(self, errback: Any, max_retries: Any, **kwargs: Any) -> Connection:
            seen.update(kwargs, max_retries=max_retries)
            return self

    consumer = object.__new__(PromptConsumer)
    consumer.app = celery_app
    consumer.first_connection_attempt = False
    consumer.broker_connection_retry_attempt = 0
    conn = Connection()
    assert consumer.ensure_connected(conn) is conn
    assert seen["interval_start"] == 0 and seen["interval_step"] == seen["interval_max"] == 1.0
    assert seen["max_retries"] is None
