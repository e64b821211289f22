"""Personas and a small simulated grid shared by the tests.

Personas: `alice` (researcher, team vision), `bob` (lead, vision), `carol` (researcher, team
render: the outsider to vision), `olivia` (operator), `fiona` (finance), and anonymous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from pytest_django import DjangoDbBlocker, Settings
from rest_framework.test import APIClient

from cluster import services as cluster_services
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import parse_pools
from grid import live
from jobs import services as job_services
from jobs.models import Job
from portal.models import ApiToken, Membership, Team, TeamRole, User
from quotas.models import TeamQuota

TEST_POOLS = "onprem-a100:onprem:a100:2x8,onprem-h100:onprem:h100:1x8,burst-a10g:cloud:a10g:0x4"
PASSWORD = "pw-for-tests"


@pytest.fixture(scope="session", autouse=True)
def close_stray_connections(django_db_setup: None, django_db_blocker: DjangoDbBlocker | None) -> Iterator[None]:
    """Websocket tests leave connections open in executor threads; close them so the test database can be dropped."""
    yield
    assert django_db_blocker is not None  # None only where Django is not configured
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql" and connection.settings_dict["NAME"].startswith("test_"):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture(autouse=True)
def fresh_dashboard_figures() -> None:
    """The dashboard's per-process figure cache must not carry one test's grid into the next."""
    live.shared_grid.changed()
    live.shared_history.changed()
    live.shared_telemetry.changed()


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> None:
    """Rate-limit counters live in the cache: one test's failed sign-ins must not block the next test's;
    per-process memos (portal.memo) must not carry one test's grid into the next either."""
    from django.core.cache import cache

    from portal.memo import forget_all

    cache.clear()
    forget_all()


@pytest.fixture(autouse=True)
def celery_may_join_results() -> None:
    """Clear Celery's process-wide "inside a task" flag before each test.

    Eager `apply_async` sets the flag for the task's duration and restores the value it found. When
    two threads (a live server, a websocket executor) run eager tasks at once, the second can restore
    the first's True after the first has left, and the flag stays set: a later test's `.get()` then
    fails with "Never call result.get() within a task!". Workers never run eager tasks.
    """
    from celery._state import _set_task_join_will_block

    _set_task_join_will_block(False)


@pytest.fixture(autouse=True)
def small_grid(settings: Settings) -> None:
    settings.SIM_POOLS = TEST_POOLS
    settings.SIM_SPEED = 1.0
    settings.SIM_FAILURE_RATE = 0.0
    settings.DEFAULT_TEAM_GPU_LIMIT = 16


@pytest.fixture
def grid(db: None) -> SimulatorBackend:
    """The simulated grid with its nodes synced into the portal."""
    backend = SimulatorBackend(pools=parse_pools(TEST_POOLS), speed=1.0, failure_rate=0.0)
    cluster_services.sync_nodes(backend)
    return backend


def _user(username: str, **flags: Any) -> User:
    user = User.objects.create_user(username=username, email=f"{username}@example.org", password=PASSWORD, **flags)
    return user


@pytest.fixture
def vision(db: None) -> Team:
    team = Team.objects.create(slug="vision", name="Vision")
    TeamQuota.objects.create(team=team, gpu_model="a100", guarantee=4, limit=12)
    return team


@pytest.fixture
def render(db: None) -> Team:
    return Team.objects.create(slug="render", name="Render")


@pytest.fixture
def alice(vision: Team) -> User:
    user = _user("alice")
    Membership.objects.create(user=user, team=vision, role=TeamRole.RESEARCHER)
    return user


@pytest.fixture
def bob(vision: Team) -> User:
    user = _user("bob")
    Membership.objects.create(user=user, team=vision, role=TeamRole.LEAD)
    return user


@pytest.fixture
def carol(render: Team) -> User:
    user = _user("carol")
    Membership.objects.create(user=user, team=render, role=TeamRole.RESEARCHER)
    return user


@pytest.fixture
def olivia(db: None) -> User:
    return _user("olivia", is_operator=True, is_staff=True)


@pytest.fixture
def fiona(db: None) -> User:
    return _user("fiona", is_finance=True)


@pytest.fixture
def web(db: None) -> Callable[[User | None], Client]:
    """A browser-like client signed in as the given user (None: anonymous)."""

    def make(user: User | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def api(db: None) -> Callable[[User | None], APIClient]:
    """An API client using a real token of the given user (None: no credentials)."""

    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            _, key = ApiToken.issue(user, "tests")
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return make


@pytest.fixture
def submit(grid: SimulatorBackend) -> Callable[..., Job]:
    """Submit one job as a user through the service layer; returns it."""

    def make(user: User, **fields: Any) -> Job:
        raw = {
            "name": "job",
            "command": ["python", "train.py"],
            "gpu_model": "a100",
            "gpus_per_node": 1,
            "walltime": 600,
            **fields,
        }
        return job_services.submit(user, raw)[0]

    return make


@pytest.fixture
def redis_url_or_skip() -> str:
    """The test Redis's URL (a database of its own), or a skip when no Redis answers."""
    from tests.services import redis_reachable, redis_url

    url = redis_url()
    if not redis_reachable(url):
        pytest.skip(f"Redis is not reachable at {url} (start redis-server, or run scripts/test)")
    return url
