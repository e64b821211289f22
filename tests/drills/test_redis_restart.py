"""Drill: the portal's Redis (Celery broker, channel layer and cache) goes away while jobs flow and pages watch.

The portal (daphne, worker, beat) runs on a Redis of the drill's own (port 6390, no persistence,
so the restart also empties the broker queue and the websocket groups). While Redis is down the
portal degrades rather than stops: every submit answers 201 (saved, left to the periodic cycle),
pages answer 200, /healthz says `degraded` with the broker failing, and the watching pages are
told "live updates paused". Once Redis is back every job saved before, during and after the
outage is running or done within RECOVERY_BOUND_S, exactly once, and pushes reach the pages again.
The reaper is left at its production delay (60 s): recovery must not depend on it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import postgres_reachable
from tests.stack import (
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

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
DONE = {"running", "succeeded"}
GRID_CYCLE_S = 0.5  # the drill stack's admission and sync period
BROKER_RETRY_S = 1.0  # how often a worker tries the broker again (portal.celery.PromptConsumer)
# Recovery: the worker's next broker try, two admission cycles, the dispatch and the sync that sees
# the jobs start, with room for a 2-core machine that also runs the load benchmark.
RECOVERY_BOUND_S = BROKER_RETRY_S + 2 * GRID_CYCLE_S + 8.0
OUTAGE_S = 6.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Stack, OwnRedis, str]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    if not postgres_reachable(SHARED_ADMIN_URL):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with (
        OwnRedis(6390) as own,
        scratch_database() as db,
        portal_stack(db, own.url, tmp_path, SIM_SPEED="60", BROKER_RETRY_S=str(BROKER_RETRY_S)) as stack,
    ):
        yield stack, own, db


def submit(client: httpx.Client, name: str, statuses: list[int]) -> int | None:
    """A job's id, or None when the portal did not answer 201; every status is noted in `statuses`."""
    body = {"name": name, "command": ["train"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}
    try:
        response = client.post("/api/v1/jobs/", json=body)
    except httpx.HTTPError:
        statuses.append(0)
        return None
    statuses.append(response.status_code)
    return int(response.json()["id"]) if response.status_code == 201 else None


def test_a_redis_outage_degrades_the_portal_and_loses_no_job_and_runs_none_twice(world: tuple[Stack, OwnRedis, str]) -> None:
    stack, own, db = world
    creds = stack.credentials(["alice", "dave"])
    clients = {
        u: httpx.Client(base_url=stack.url, headers={"Authorization": f"Token {c['token']}"}, timeout=20)
        for u, c in creds.items()
    }
    pages = httpx.Client(base_url=stack.url, cookies={"sessionid": creds["dave"]["session"]}, timeout=20)
    acknowledged: dict[str, int] = {}
    statuses: dict[str, list[int]] = {"before": [], "during": [], "after": []}
    page_statuses: list[int] = []
    health_during: list[dict[str, Any]] = []

    def wave(tag: str, count: int) -> None:
        for i in range(count):
            user = "alice" if i % 2 else "dave"
            name = f"{tag}-{len(statuses[tag])}"  # unique: the outage wave runs several times
            job_id = submit(clients[user], name, statuses[tag])
            if job_id is not None:
                acknowledged[name] = job_id

    wave("before", 8)
    first = next(iter(acknowledged.values()))
    with (
        Watcher(stack, "/ws/grid/", creds["alice"]["session"]) as grid,
        Watcher(stack, f"/ws/jobs/{first}/", creds["dave"]["session"]) as job,
    ):
        wait_for(lambda: grid.messages and job.messages, 20, "websocket messages before the outage")
        own.stop()
        stopped = time.monotonic()
        while time.monotonic() - stopped < OUTAGE_S:  # the broker, layer and cache are gone
            wave("during", 2)
            page_statuses += [pages.get(path).status_code for path in ("/", "/jobs/", f"/jobs/{first}/")]
            health_during.append(stack.health()[1])
            time.sleep(0.5)
        wait_for(lambda: paused(grid) and paused(job), 15, "the pages told that live updates are paused")
        own.start()
        restarted = time.monotonic()
        wave("after", 8)
        try:
            wait_for(
                lambda: set(job_states(db).values()) <= DONE and len(job_states(db)) >= len(acknowledged),
                60,
                "every job running or done",
                interval=0.1,
            )
        except AssertionError:
            print(job_states(db), stack.log_tail())
            raise
        recovery_s = time.monotonic() - restarted
        wait_for(
            lambda: grid.messages_since(restarted) >= 2 and job.messages_since(restarted) >= 2,
            30,
            "websocket messages after the restart",
        )
        wait_for(lambda: not paused(grid) and not paused(job), 15, "the pages told that live updates resumed")
        reconnects = (len(grid.connects) - 1, len(job.connects) - 1)

    states = job_states(db)
    saved_names = dict(query_names(db))
    assert [s for tag in statuses for s in statuses[tag] if s != 201] == [], statuses  # no 5xx, no refusal
    assert set(page_statuses) == {200}, page_statuses
    assert health_during and all(h.get("status") == "degraded" and "broker" in h.get("failing", []) for h in health_during)
    assert set(acknowledged.values()) == set(states), "an acknowledged job is missing, or a job nobody acknowledged exists"
    assert set(states.values()) <= DONE, states
    assert max(copies_on_grid(db).values()) == 1 and set(copies_on_grid(db)) == set(states)
    assert max(admissions(db).values()) == 1
    assert len(saved_names) == len(states), "a job was saved twice under one name"
    assert recovery_s <= RECOVERY_BOUND_S, f"recovery took {recovery_s:.1f} s, bound {RECOVERY_BOUND_S:.1f} s"
    for client in (*clients.values(), pages):
        client.close()
    print(
        f"drill redis-restart: Redis down {OUTAGE_S:.0f} s; {len(states)} jobs ({len(statuses['during'])} submitted during the "
        f"outage, all 201), {len(page_statuses)} page views 200, /healthz degraded; every job running or done "
        f"{recovery_s:.1f} s after Redis returned (bound {RECOVERY_BOUND_S:.1f} s); 0 lost, 0 twice; "
        f"websocket reconnects grid={reconnects[0]} job={reconnects[1]}"
    )
    print("drill-result " + json.dumps({"drill": "redis-restart", "recovery_s": round(recovery_s, 2)}))


def paused(watcher: Watcher) -> bool:
    """Whether the last live-status message on this page's current connection says pushes are paused."""
    since = watcher.connects[-1] if watcher.connects else 0.0  # a new connection starts unpaused
    said = [m.get("paused") for at, m in watcher.messages if at >= since and m.get("type") == "live"]
    return bool(said and said[-1])


def query_names(db: str) -> list[tuple[str, int]]:
    return [(str(name), int(count)) for name, count in query(db, "SELECT name, count(*) FROM jobs_job GROUP BY name")]
