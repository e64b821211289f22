"""Telemetry on the websockets: pushed GPU samples reach only those who may see the job; the grid gets the heat map."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from jobs.models import Job
from portal import listeners
from portal.models import User
from tests.security import test_access_websockets as access
from tests.security.test_access_websockets import CLOSE_FORBIDDEN, TIMEOUT_S, websocket

# The access suite's fixtures, shared rather than copied.
alice_job = access.alice_job
full_grid = access.full_grid
close_connections_of_the_async_tests = access.close_connections_of_the_async_tests

pytestmark = pytest.mark.django_db(transaction=True)

SAMPLE = {"type": "telemetry.job", "t": "2026-01-01T00:00:00+00:00", "stale": False, "values": {"utilization": {"n/gpu0": 97.0}}}


async def test_an_outsider_receives_no_telemetry_of_another_teams_job(carol: User, alice_job: Job) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/", carol) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (False, CLOSE_FORBIDDEN)
        await get_channel_layer().group_send(f"job.{alice_job.pk}", SAMPLE)
        assert await ws.receive_nothing(timeout=0.3)


async def test_the_owner_receives_the_pushed_gpu_samples(alice: User, alice_job: Job) -> None:
    async with websocket(f"/ws/jobs/{alice_job.pk}/", alice) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        snapshot = await ws.receive_json_from(timeout=TIMEOUT_S)
        assert snapshot["type"] == "snapshot" and "efficiency" in snapshot and snapshot["stale"] is False
        await get_channel_layer().group_send(f"job.{alice_job.pk}", SAMPLE)
        for _ in range(5):
            message = await ws.receive_json_from(timeout=TIMEOUT_S)
            if message["type"] == "gpus":
                break
    assert message == {"type": "gpus", "t": SAMPLE["t"], "stale": False, "values": SAMPLE["values"]}


async def test_the_dashboard_gets_history_after_connecting_and_the_pushed_heat_map(carol: User, full_grid: None) -> None:
    async with websocket("/ws/grid/", carol) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        assert (await ws.receive_json_from(timeout=TIMEOUT_S))["type"] == "grid"
        history = await ws.receive_json_from(timeout=TIMEOUT_S)
        assert history["type"] == "history" and set(history["charts"]["heatmap"]) == {"temp", "util"}
        heat = {"type": "telemetry.grid", "at": "t", "stale": True, "why": "Prometheus down"}
        await get_channel_layer().group_send("grid", heat)
        for _ in range(5):
            message = await ws.receive_json_from(timeout=TIMEOUT_S)
            if message["type"] == "telemetry.grid":
                break
    assert message == heat


async def test_only_an_operator_may_override_over_the_dashboard_socket(carol: User, full_grid: None) -> None:
    async with websocket("/ws/grid/", carol) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        await ws.send_json_to({"type": "override", "node": "onprem-a100-01", "reason": "mine"})
        for _ in range(5):
            message = await ws.receive_json_from(timeout=TIMEOUT_S)
            if message["type"] == "override.result":
                break
    assert message["ok"] is False and "operators" in message["error"]


async def _listened(group: str) -> bool:
    return group in await sync_to_async(listeners.listened)([group])


async def _eventually(expected: bool, group: str) -> bool:
    for _ in range(50):  # the hub records its groups in a thread of its own
        if await _listened(group) == expected:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_an_open_job_page_makes_its_group_listened_until_it_closes(alice: User, alice_job: Job) -> None:
    group = f"job.{alice_job.pk}"
    assert not await _listened(group)
    async with websocket(f"/ws/jobs/{alice_job.pk}/", alice) as ws:
        assert await ws.connect(timeout=TIMEOUT_S) == (True, None)
        await ws.receive_json_from(timeout=TIMEOUT_S)
        assert await _eventually(True, group)
    assert await _eventually(False, group)
