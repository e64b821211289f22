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
from portal.models import ApiToken, Membership, Team, User
from portal.security import same_origin
from portal.tokens import revoke

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
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
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


# The origin check compares scheme, host and port with the page's own


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://testserver", "testserver", True),
        ("http://testserver:80", "testserver", True),
        ("https://portal.example:8443", "portal.example:8443", True),
        ("http://testserver:8001", "testserver", False),
        ("https://portal.example:9443", "portal.example:8443", False),
        ("http://evil.example", "testserver", False),
        ("null", "testserver", False),
        ("", "testserver", False),
    ],
)
def test_the_websocket_origin_must_match_scheme_host_and_port(origin: str, host: str, allowed: bool) -> None:
    assert same_origin(origin, host, []) is allowed


async def test_a_websocket_from_another_port_of_the_same_host_is_refused(alice: User, alice_job: Job) -> None:
    headers = [(b"origin", b"http://testserver:8666"), (b"host", b"testserver"), (b"cookie", await session_cookie(alice))]
    communicator = WebsocketCommunicator(application, f"/ws/jobs/{alice_job.pk}/", headers=headers)
    connected, code = await communicator.connect(timeout=TIMEOUT_S)
    assert (connected, code) == (False, 4403)


# Signing out ends the sockets the session opened


@sync_to_async
def end_sessions() -> None:
    from django.contrib.sessions.models import Session

    Session.objects.all().delete()  # what signing out does to the session row


async def closed_with(ws: WebsocketCommunicator, messages: int) -> int | None:
    """Read what the socket sends (it ticks every second or two) until it closes: its close code, or
    None if it still streams after `messages` messages."""
    for _ in range(messages):
        message = await ws.receive_output(timeout=3 * TIMEOUT_S)
        if message["type"] == "websocket.close":
            return int(message["code"])
    return None


@pytest.mark.parametrize("path", ["job", "grid"])
async def test_a_socket_is_closed_once_its_session_is_signed_out(alice: User, alice_job: Job, path: str) -> None:
    url = f"/ws/jobs/{alice_job.pk}/" if path == "job" else "/ws/grid/"
    async with websocket(url, alice) as ws:
        connected, _ = await ws.connect(timeout=TIMEOUT_S)
        assert connected
        await ws.receive_json_from(timeout=TIMEOUT_S)  # the snapshot
        await end_sessions()
        assert await closed_with(ws, 5) == CLOSE_UNAUTHENTICATED


# Scripts open the job socket with an API token (gridctl logs -f)


@asynccontextmanager
async def token_websocket(path: str, key: str) -> AsyncIterator[WebsocketCommunicator]:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"authorization", f"Token {key}".encode())]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def test_a_token_opens_the_job_socket_of_its_own_team(alice: User, alice_job: Job) -> None:
    _, key = await sync_to_async(ApiToken.issue)(alice, "ci")
    async with token_websocket(f"/ws/jobs/{alice_job.pk}/", key) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        message = await ws.receive_json_from(timeout=TIMEOUT_S)
    assert message["type"] == "snapshot" and message["job"]["id"] == alice_job.pk


async def test_an_outsiders_token_is_refused_another_teams_job(carol: User, alice_job: Job) -> None:
    _, key = await sync_to_async(ApiToken.issue)(carol, "ci")
    async with token_websocket(f"/ws/jobs/{alice_job.pk}/", key) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_FORBIDDEN)


@pytest.mark.parametrize("key", ["not-a-real-token", ""])
async def test_a_bad_token_is_closed_with_4401(alice_job: Job, key: str) -> None:
    async with token_websocket(f"/ws/jobs/{alice_job.pk}/", key) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_UNAUTHENTICATED)


async def test_a_revoked_token_ends_the_socket_it_opened(alice: User, alice_job: Job) -> None:
    token, key = await sync_to_async(ApiToken.issue)(alice, "ci")
    async with token_websocket(f"/ws/jobs/{alice_job.pk}/", key) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        assert (await ws.receive_json_from(timeout=TIMEOUT_S))["type"] == "snapshot"
        assert await sync_to_async(revoke)(alice, token.pk)
        code = await closed_with(ws, messages=10)
    assert code == CLOSE_UNAUTHENTICATED
