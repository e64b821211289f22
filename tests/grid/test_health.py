"""/healthz reports the database, broker, worker and backend: 503 only when the database is down, else 200 `degraded`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from cluster.simulator.backend import SimulatorBackend
from portal.models import ControlLoop, Heartbeat, User


def test_healthy_when_everything_answers_and_the_worker_is_recent(
    web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend
) -> None:
    Heartbeat.beat("worker")
    response = web(olivia).get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] and set(body["checks"]) == {"database", "broker", "worker", "backend", "loops"}
    assert body["checks"]["backend"]["backend"] == "simulator"


def test_a_silent_worker_makes_it_degraded(web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend) -> None:
    Heartbeat.objects.create(name="worker", at=timezone.now() - timedelta(hours=1))
    response = web(olivia).get("/healthz")
    assert response.status_code == 200  # the pages and API still serve; the load balancer keeps this process
    body = response.json()
    assert body["status"] == "degraded" and body["failing"] == ["worker"] and not body["ok"]
    assert body["checks"]["worker"]["error"] == "worker is silent"


def test_an_unreachable_broker_is_reported_not_raised(
    web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend, settings: Settings
) -> None:
    Heartbeat.beat("worker")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    body = web(olivia).get("/healthz").json()
    assert not body["ok"] and not body["checks"]["broker"]["ok"]
    assert "ConnectionError" in body["checks"]["broker"]["error"]


def test_anonymous_callers_see_only_which_checks_pass(client: Client, grid: SimulatorBackend, settings: Settings) -> None:
    Heartbeat.beat("worker")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert response.json()["checks"]["broker"] == {"ok": False}
    assert "127.0.0.1" not in response.content.decode()


def test_a_loop_far_behind_its_period_makes_it_degraded(
    web: Callable[[User | None], Client], olivia: User, grid: SimulatorBackend
) -> None:
    Heartbeat.beat("worker")
    now = timezone.now()
    for name, ago in (("admission", 1), ("telemetry", 120)):
        ControlLoop.objects.create(
            name=name, period_s=2.0, last_started_at=now - timedelta(seconds=ago + 1), last_finished_at=now - timedelta(seconds=ago),
            last_ok_at=now - timedelta(seconds=ago), last_duration_s=0.4, runs=10,
        )  # fmt: skip
    body = web(olivia).get("/healthz").json()
    assert body["status"] == "degraded" and body["failing"] == ["loops"]
    loops = body["checks"]["loops"]
    assert loops["error"] == "behind: telemetry"
    assert loops["loops"]["admission"]["lag_s"] == 0.0 and loops["loops"]["telemetry"]["lag_s"] >= 117
