"""The live pages' fan-out: one subscription per process, one frame for many sockets, and still a check per socket per message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from jobs.models import Job
from portal import fanout
from portal.models import Membership, Team, User
from portal.permissions import VIEW, allows
from portal.viewers import load_viewers
from tests.security import test_access_websockets as access
from tests.security.test_access_websockets import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, TIMEOUT_S, websocket

alice_job = access.alice_job
carol_job = access.carol_job
full_grid = access.full_grid
close_connections_of_the_async_tests = access.close_connections_of_the_async_tests

SAMPLE = {"type": "telemetry.job", "t": "2026-01-01T00:00:00+00:00", "stale": False, "values": {"utilization": {"n/gpu0": 97.0}}}


# The rule, decided in memory, says what the database says


@pytest.mark.django_db
def test_the_jobs_rule_in_memory_agrees_with_the_database_for_every_persona(
    request: pytest.FixtureRequest, alice_job: Job, carol_job: Job
) -> None:
    for persona in ("alice", "bob", "carol", "olivia", "fiona"):
        user: User = request.getfixturevalue(persona)
        viewer = load_viewers([user.pk])[user.pk]
        for job in (alice_job, carol_job):
            in_memory = allows(Job.access_rule(viewer, VIEW), job)
            assert in_memory == Job.objects.visible_to(user).filter(pk=job.pk).exists(), (persona, job.name)


@pytest.mark.django_db
def test_teams_rule_in_memory_agrees_with_the_database(alice: User, olivia: User, vision: Team, render: Team) -> None:
    for user in (alice, olivia):
        viewer = load_viewers([user.pk])[user.pk]
        for team in (vision, render):
            assert allows(Team.access_rule(viewer, VIEW), team) == Team.objects.restrict(user).filter(pk=team.pk).exists()


def test_a_lookup_the_memory_check_does_not_know_fails_loudly() -> None:
    from django.db.models import Q

    with pytest.raises(ValueError, match="team__slug"):
        allows(Q(team__slug="vision"), object())


# Writing: in order, never held up by a slow client


async def test_a_slow_socket_holds_up_no_other_and_gets_its_frames_in_order() -> None:
    released = asyncio.Event()
    slow_got: list[str] = []
    fast_got: list[str] = []

    async def slow_send(message: dict[str, Any]) -> None:
        await released.wait()  # the server's buffer for this client is full
        slow_got.append(message.get("text", message["type"]))

    async def fast_send(message: dict[str, Any]) -> None:
        fast_got.append(message.get("text", message["type"]))

    slow, fast = fanout.Subscriber(slow_send, {}), fanout.Subscriber(fast_send, {})
    for n in range(3):
        for subscriber in (slow, fast):
            subscriber.push_text(str(n))
    assert fast_got == ["0", "1", "2"] and slow_got == []  # written at once, not after the slow one
    released.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert slow_got == ["0", "1", "2"]


async def test_a_socket_that_stops_reading_is_closed_past_its_backlog() -> None:
    sent: list[dict[str, Any]] = []
    released = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        await released.wait()
        sent.append(message)

    subscriber = fanout.Subscriber(send, {})
    for n in range(fanout.Subscriber.MAX_BACKLOG + 5):
        subscriber.push_text(str(n))
    assert subscriber.closed
    released.set()
    for _ in range(fanout.Subscriber.MAX_BACKLOG + 10):
        await asyncio.sleep(0)
    assert sent[-1] == {"type": "websocket.close", "code": fanout.CLOSE_TOO_SLOW}


# Through the real ASGI stack, with signed-in sessions


async def first_of(ws: WebsocketCommunicator, kind: str, reads: int = 6) -> dict[str, Any] | None:
    """The first message of this type (or a close), within `reads` messages."""
    for _ in range(reads):
        message: dict[str, Any] = await ws.receive_output(timeout=TIMEOUT_S)
        if message["type"] == "websocket.close":
            return message
        if kind in message.get("text", ""):
            return message
    return None


@pytest.mark.django_db(transaction=True)
async def test_the_process_joins_a_group_once_however_many_pages_watch(carol: User, full_grid: None) -> None:
    async with websocket("/ws/grid/", carol) as one, websocket("/ws/grid/", carol) as two:
        assert await one.connect(timeout=TIMEOUT_S) == (True, None)
        assert await two.connect(timeout=TIMEOUT_S) == (True, None)
        await one.receive_json_from(timeout=TIMEOUT_S)
        await two.receive_json_from(timeout=TIMEOUT_S)
        assert len(get_channel_layer().groups["grid"]) == 1


@pytest.mark.django_db(transaction=True)
async def test_each_push_is_checked_per_page_a_member_removed_is_closed_and_the_teammate_still_hears(
    alice: User, bob: User, vision: Team, render: Team, alice_job: Job
) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/", alice) as alices, websocket(f"/ws/jobs/{alice_job.pk}/", bob) as bobs:
        for ws in (alices, bobs):
            assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
            assert (await ws.receive_json_from(timeout=TIMEOUT_S))["type"] == "snapshot"
        # Alice moves to another team by an UPDATE, which sends no signal: only the per-message check can notice.
        await sync_to_async(Membership.objects.filter(user=alice, team=vision).update)(team=render)
        fanout.hub().viewers.forget(users=[alice.pk])  # what the periodic reload (REFRESH_S) would do
        await get_channel_layer().group_send(f"job.{alice_job.pk}", SAMPLE)
        assert await first_of(alices, '"gpus"') == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}
        bobs_sample = await first_of(bobs, '"gpus"')
    assert bobs_sample is not None and '"n/gpu0": 97.0' in bobs_sample["text"]


@pytest.mark.django_db(transaction=True)
async def test_a_membership_removed_in_another_process_is_announced_and_closes_the_page(
    alice: User, vision: Team, alice_job: Job
) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/", alice) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        await ws.receive_json_from(timeout=TIMEOUT_S)
        await sync_to_async(Membership.objects.filter(user=alice, team=vision).delete)()
        assert await first_of(ws, "websocket.close") == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}


@sync_to_async
def signed_in_client(user: User) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    return client, f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def page(path: str, cookie: bytes) -> WebsocketCommunicator:
    from grid.asgi import application

    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"cookie", cookie)]
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["job", "grid"])
async def test_signing_out_closes_that_sessions_pages_only(alice: User, alice_job: Job, path: str) -> None:
    url = f"/ws/jobs/{alice_job.pk}/" if path == "job" else "/ws/grid/"
    laptop, laptop_cookie = await signed_in_client(alice)
    _, desktop_cookie = await signed_in_client(alice)
    left, stays = page(url, laptop_cookie), page(url, desktop_cookie)
    try:
        for ws in (left, stays):
            assert (await ws.connect(timeout=TIMEOUT_S))[0]
            await ws.receive_output(timeout=TIMEOUT_S)
        await sync_to_async(laptop.logout)()
        # Announced on sign-out: closed at once, not at the next periodic reload.
        assert await asyncio.wait_for(first_of(left, "websocket.close", 10), timeout=fanout.HOUSEKEEPING_S + 0.5) == {
            "type": "websocket.close",
            "code": CLOSE_UNAUTHENTICATED,
        }
        group = f"job.{alice_job.pk}" if path == "job" else "grid"
        push = SAMPLE if path == "job" else {"type": "telemetry.grid", "at": "t", "stale": True, "why": "test"}
        await get_channel_layer().group_send(group, push)
        kept = await first_of(stays, '"gpus"' if path == "job" else '"telemetry.grid"', 10)
        assert kept is not None and kept["type"] == "websocket.send"
    finally:
        await left.disconnect()
        await stays.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_password_change_closes_the_other_sessions_pages(alice: User, full_grid: None) -> None:
    _, cookie = await signed_in_client(alice)
    ws = page("/ws/grid/", cookie)
    try:
        assert (await ws.connect(timeout=TIMEOUT_S))[0]
        await ws.receive_output(timeout=TIMEOUT_S)

        def change_password() -> None:
            alice.set_password("a-new-password-for-alice")
            alice.save()

        await sync_to_async(change_password)()
        assert await first_of(ws, "websocket.close", 10) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    finally:
        await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_dashboard_frame_is_shared_only_by_viewers_who_see_the_same_teams(
    alice: User, carol: User, olivia: User, alice_job: Job, carol_job: Job
) -> None:
    pages = {name: websocket("/ws/grid/", user) for name, user in (("alice", alice), ("carol", carol), ("olivia", olivia))}
    teams: dict[str, list[str]] = {}
    async with pages["alice"] as a, pages["carol"] as c, pages["olivia"] as o:
        for ws in (a, c, o):
            assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
            await ws.receive_json_from(timeout=TIMEOUT_S)  # the snapshot made at connect
        await get_channel_layer().group_send("grid", {"type": "grid.changed"})
        for name, ws in (("alice", a), ("carol", c), ("olivia", o)):
            for _ in range(6):
                message = await ws.receive_json_from(timeout=TIMEOUT_S)
                if message["type"] == "grid":
                    teams[name] = [row["team"] for row in message["queue"]["by_team"]]
                    break
    assert teams == {"alice": ["vision"], "carol": ["render"], "olivia": ["render", "vision"]}
