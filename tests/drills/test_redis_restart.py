"""Drill: the portal's Redis (Celery broker and channel layer) restarts while jobs flow and pages watch.

The portal (daphne, worker, beat) runs on a Redis of the drill's own (port 6390, no persistence,
so the restart also empties the broker queue and the websocket groups). Afterwards every job
reaches running or succeeded once, nothing is on the grid twice, and the websocket clients get
messages again (reconnecting where the server closed them).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.drills.stack import (
    SHARED_ADMIN_URL,
    OwnRedis,
    Stack,
    Watcher,
    admissions,
    copies_on_grid,
    job_states,
    portal_stack,
    query,
    scratch_database,
    wait_for,
)
from tests.services import postgres_reachable

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
DONE = {"running", "succeeded"}
# A dispatch task lost with the broker's queue is sent again by the reaper (every 30 s) once the
# job has been admitted this long; the production default is 60 s.


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Stack, OwnRedis, str]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    if not postgres_reachable(SHARED_ADMIN_URL):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with (
        OwnRedis(6390) as own,
        scratch_database() as db,
        portal_stack(db, own.url, tmp_path, SIM_SPEED="60", DISPATCH_STALE_S="5") as stack,
    ):
        yield stack, own, db


def submit(client: httpx.Client, name: str) -> int | None:
    """A job's id, or None when the portal did not answer 201 (the caller does not know whether it was saved)."""
    body = {"name": name, "command": ["train"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}
    try:
        response = client.post("/api/v1/jobs/", json=body)
    except httpx.HTTPError:
        return None
    return int(response.json()["id"]) if response.status_code == 201 else None


def test_a_redis_restart_loses_no_job_and_runs_none_twice(world):
    stack, own, db = world
    creds = stack.credentials(["alice", "dave"])
    clients = {
        u: httpx.Client(base_url=stack.url, headers={"Authorization": f"Token {c['token']}"}, timeout=20)
        for u, c in creds.items()
    }
    acknowledged: dict[str, int] = {}
    unanswered: list[str] = []

    def wave(tag: str, count: int) -> None:
        for i in range(count):
            user = "alice" if i % 2 else "dave"
            name = f"{tag}-{i}"
            job_id = submit(clients[user], name)
            if job_id is None:
                unanswered.append(name)
            else:
                acknowledged[name] = job_id

    wave("before", 8)
    first = next(iter(acknowledged.values()))
    with (
        Watcher(stack, "/ws/grid/", creds["alice"]["session"]) as grid,
        Watcher(stack, f"/ws/jobs/{first}/", creds["dave"]["session"]) as job,
    ):
        wait_for(lambda: grid.messages and job.messages, 20, "websocket messages before the restart")
        own.stop()
        wave("during", 4)  # the broker is gone: the portal may answer 5xx, yet whatever it saved must run once
        time.sleep(3)
        own.start()
        restarted = time.monotonic()
        wave("after", 8)
        wait_for(
            lambda: grid.messages_since(restarted) >= 2 and job.messages_since(restarted) >= 2,
            30,
            "websocket messages after the restart",
        )
        wait_for(
            lambda: set(job_states(db).values()) <= DONE and len(job_states(db)) >= len(acknowledged),
            150,  # a dispatch lost with the broker waits for the reaper (every 30 s) on a busy machine
            "every job running or done",
        )
        reconnects = (len(grid.connects) - 1, len(job.connects) - 1)

    states = job_states(db)
    saved_names = dict(query_names(db))
    assert set(acknowledged.values()) <= set(states), "an acknowledged job is missing"
    assert set(states.values()) <= DONE, states
    assert max(copies_on_grid(db).values()) == 1 and set(copies_on_grid(db)) == set(states)
    assert max(admissions(db).values()) == 1
    assert len(saved_names) == len(states), "a job was saved twice under one name"
    for client in clients.values():
        client.close()
    print(
        f"drill redis-restart: {len(states)} jobs ({len(acknowledged)} acknowledged, {len(unanswered)} unanswered during the outage, "
        f"{sum(1 for n in unanswered if n in saved_names)} of those saved), 0 lost, 0 twice; websocket reconnects grid={reconnects[0]} job={reconnects[1]}"
    )


def query_names(db: str) -> list[tuple[str, int]]:
    return [(str(name), int(count)) for name, count in query(db, "SELECT name, count(*) FROM jobs_job GROUP BY name")]
