"""Who may open the live websockets, through the real ASGI stack with a signed-in session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from cluster.models import Node
from cluster.simulator.backend import SimulatorBackend
from cluster.states import NodeState
from grid.asgi import application
from jobs.models import Job
from portal.models import Membership, Team, User

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_S = 5
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@pytest.fixture
def full_grid(grid: SimulatorBackend) -> None:
    """Every node cordoned: jobs stay pending, so the queue has something to break down by team."""
    Node.objects.update(state=NodeState.CORDONED)


@pytest.fixture(autouse=True)
async def close_connections_of_the_async_tests() -> AsyncIterator[None]:
    """Consumers reach the database from a worker thread; close its connections so the test database can go."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def alice_job(full_grid: None, alice: User, submit: Callable[..., Job]) -> Job:
    return submit(alice, name="vision-alice-resnet")


@pytest.fixture
def carol_job(full_grid: None, carol: User, submit: Callable[..., Job]) -> Job:
    return submit(carol, name="render-carol-frames")


@sync_to_async
def session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


@asynccontextmanager
async def websocket(path: str, user: User | None = None) -> AsyncIterator[WebsocketCommunicator]:
    """A websocket to the portal as a browser signed in as `user` (None: anonymous) would open it."""
    headers = [(b"origin", b"http://testserver")]
    if user is not None:
        headers.append((b"cookie", await session_cookie(user)))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


# The job page's websocket


async def test_an_anonymous_visitor_is_closed_with_4401_on_a_job(alice_job: Job) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/") as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_UNAUTHENTICATED)
        assert await ws.receive_nothing()


async def test_an_outsider_is_closed_with_4403_and_hears_nothing_of_another_teams_job(carol: User, alice_job: Job) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/", carol) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_FORBIDDEN)
        # A change to the job is pushed to its group; the refused socket must not be in it.
        await get_channel_layer().group_send(f"job.{alice_job.pk}", {"type": "job.changed"})
        assert await ws.receive_nothing(timeout=0.3)


async def test_a_user_in_no_team_is_closed_with_4403_on_a_job(fiona: User, alice_job: Job) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/", fiona) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_FORBIDDEN)


async def test_a_job_that_does_not_exist_is_refused_like_a_hidden_one(carol: User, alice_job: Job) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk + 1000}/", carol) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_FORBIDDEN)


@pytest.mark.parametrize("persona", ["alice", "bob", "olivia"])
async def test_the_owner_a_teammate_and_the_operator_get_the_jobs_snapshot_first(
    request: pytest.FixtureRequest, alice_job: Job, persona: str
) -> None:
    user = await sync_to_async(request.getfixturevalue)(persona)
    async with websocket(f"/ws/jobs/{alice_job.pk}/", user) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        message = await ws.receive_json_from(timeout=TIMEOUT_S)
    assert message["type"] == "snapshot"
    assert message["job"]["id"] == alice_job.pk
    assert message["job"]["state"] == "pending"
    assert [e["actor"] for e in message["events"]] == ["alice"]


async def test_a_member_removed_from_the_team_stops_receiving_the_jobs_updates(alice: User, vision: Team, alice_job: Job) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/", alice) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        assert (await ws.receive_json_from(timeout=TIMEOUT_S))["type"] == "snapshot"
        await sync_to_async(Membership.objects.filter(user=alice, team=vision).delete)()
        await get_channel_layer().group_send(f"job.{alice_job.pk}", {"type": "job.changed"})
        after = await ws.receive_output(timeout=TIMEOUT_S)
    assert after == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}


# The dashboard's websocket


async def test_an_anonymous_visitor_is_closed_with_4401_on_the_grid() -> None:
    async with websocket("/ws/grid/") as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_UNAUTHENTICATED)
        assert await ws.receive_nothing()


async def test_the_grid_feed_breaks_the_queue_down_only_by_the_users_own_teams(
    carol: User, alice_job: Job, carol_job: Job
) -> None:
    async with websocket("/ws/grid/", carol) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        message = await ws.receive_json_from(timeout=TIMEOUT_S)
    assert message["type"] == "grid"
    assert [row["team"] for row in message["queue"]["by_team"]] == ["render"]
    assert "vision-alice-resnet" not in str(message)


async def test_the_operator_sees_every_team_in_the_grid_feed(olivia: User, alice_job: Job, carol_job: Job) -> None:
    async with websocket("/ws/grid/", olivia) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        message = await ws.receive_json_from(timeout=TIMEOUT_S)
    assert [row["team"] for row in message["queue"]["by_team"]] == ["render", "vision"]
