"""Live pages: the job websocket sends a snapshot, then ticks with GPU samples and new log lines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from cluster.simulator.backend import SimulatorBackend
from grid.live import SharedFigures
from grid.routing import websocket_urlpatterns
from jobs import live, services
from jobs.models import Job
from portal import charts
from portal.models import User


def as_user(user: User) -> Callable[[dict[str, Any], Any, Any], Awaitable[Any]]:
    router = URLRouter(websocket_urlpatterns)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await router({**scope, "user": user}, receive, send)

    return app


def start_running(alice: User, submit: Callable[..., Job]) -> Job:
    job = submit(alice, name="live", gpus_per_node=2)
    services.run_admission_cycle()
    services.dispatch(job.pk)
    services.sync_jobs()
    job.refresh_from_db()
    return job


@pytest.mark.django_db(transaction=True)
async def test_a_running_job_streams_its_state_gpus_and_log(alice: User, submit: Callable[..., Job]) -> None:
    job = await database_sync_to_async(start_running)(alice, submit)
    socket = WebsocketCommunicator(as_user(alice), f"/ws/jobs/{job.pk}/")
    connected, _ = await socket.connect()
    assert connected
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot" and snapshot["job"]["state"] == "running"
    assert set(snapshot["charts"]) == {"utilization", "temperature_c", "fb_used_mib"}
    assert snapshot["log"]["lines"][0].startswith(f"[portal] job {job.pk}")
    tick = await socket.receive_json_from(timeout=5)
    assert tick["type"] == "tick"
    labels = set(tick["gpus"]["values"]["utilization"])
    assert len(labels) == 2 and all(label.startswith(next(iter(job.placement))) for label in labels)
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_cancel_reaches_the_page_with_its_event(alice: User, submit: Callable[..., Job]) -> None:
    job = await database_sync_to_async(start_running)(alice, submit)
    socket = WebsocketCommunicator(as_user(alice), f"/ws/jobs/{job.pk}/")
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await database_sync_to_async(services.cancel)(alice, job)
    for _ in range(5):
        message = await socket.receive_json_from(timeout=5)
        if message["job"]["state"] == "cancelled":
            break
    assert message["job"]["ended"] and any(e["to"] == "cancelled" for e in message["events"])
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_grid_socket_sends_pools_queue_and_nodes(alice: User, grid: SimulatorBackend) -> None:
    socket = WebsocketCommunicator(as_user(alice), "/ws/grid/")
    connected, _ = await socket.connect()
    assert connected
    message = await socket.receive_json_from(timeout=5)
    assert message["type"] == "grid"
    assert {p["name"] for p in message["pools"]} >= {"onprem-a100", "onprem-h100"}
    assert len(message["nodes"]) == 3 and message["queue"]["jobs"] == 0
    await socket.disconnect()


def test_job_history_is_per_gpu_and_only_the_jobs_own_gpus(alice: User, submit: Callable[..., Job]) -> None:
    job = start_running(alice, submit)
    assert job.started_at is not None
    later = job.started_at + timedelta(seconds=30)
    history = live.gpu_history(job, now=later)
    assert set(history) == {"utilization", "temperature_c", "fb_used_mib"}
    assert len(history["utilization"]) == 2
    figures = live.charts(history)
    assert [t["name"] for t in figures["utilization"]["data"]] == sorted(history["utilization"])


def test_line_figures_are_plain_data_with_one_trace_per_series() -> None:
    figure = charts.line_figure("T", "%", {"a": [("2026-01-01T00:00:00", 1.0)], "b": []}, (0, 100))
    assert [t["name"] for t in figure["data"]] == ["a", "b"]
    assert figure["data"][0]["y"] == (1.0,) or list(figure["data"][0]["y"]) == [1.0]
    assert figure["layout"]["yaxis"]["range"] == [0, 100]
    assert figure["layout"]["title"]["text"] == "T"


def test_a_slow_shared_figure_is_kept_long_enough_to_take_at_most_its_share_of_the_process() -> None:
    now = [0.0]
    calls = []

    def compute() -> dict[str, Any]:
        calls.append(now[0])
        now[0] += 2.0  # the heat map of a thousand nodes: two seconds to read
        return {"n": len(calls)}

    shared = SharedFigures(compute, ttl_s=1.0, busy_share=0.25, clock=lambda: now[0])
    assert shared.get() == {"n": 1}
    now[0] += 5.0  # 7 s after it began, 5 after it ended: within 2 / 0.25 = 8 s
    assert shared.get() == {"n": 1}
    now[0] += 1.5
    assert shared.get() == {"n": 2}
    quick = SharedFigures(lambda: {"n": 0}, ttl_s=1.0, busy_share=0.25, clock=lambda: now[0])
    quick.get()
    assert quick.kept_s == 1.0  # a quick computation keeps the plain TTL
    shared.changed()
    assert shared.get() == {"n": 3}  # a change notice still recomputes at once
