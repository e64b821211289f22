"""Drill: Redis goes away while a worker is in the middle of an acked-late task.

kombu's Redis transport, closing after the lost connection, tries to put the unacknowledged
message back through a connection it has just closed; unpatched, the worker process dies with an
"unrecoverable error" and the grid stops until someone restarts it (portal/broker.py). Here the
simulated controller is slowed (SIM_SUBMIT_DELAY_S) so the admission cycle that dispatches the
first job is still running when Redis stops. The worker must stay up, reconnect when Redis is
back and admit and dispatch the next job, with the first on the grid once.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import postgres_reachable
from tests.stack import OwnRedis, Stack, copies_on_grid, job_states, portal_stack, scratch_database, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Stack, OwnRedis, str]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    if not postgres_reachable("postgresql://postgres@127.0.0.1:5432/postgres"):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with (
        OwnRedis(6394) as own,
        scratch_database() as db,
        portal_stack(db, own.url, tmp_path, parts=("web", "worker"), SIM_SUBMIT_DELAY_S="4", GRID_CYCLE_S="30") as stack,
    ):
        yield stack, own, db


def test_a_worker_that_loses_redis_mid_task_stays_up_and_carries_on(world: tuple[Stack, OwnRedis, str]) -> None:
    stack, own, db = world
    token = stack.credentials(["alice"])["alice"]["token"]
    client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Token {token}"}, timeout=20)
    body = {"command": ["train"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}
    first = client.post("/api/v1/jobs/", json={**body, "name": "first"}).json()["id"]
    # The submit enqueued an admission cycle; it admits, then spends 4 s submitting to the controller.
    wait_for(lambda: job_states(db).get(first) == "admitted", 20, "the first job admitted", 0.05)
    own.stop()
    time.sleep(3)
    worker = stack.processes["worker"]
    assert worker.poll() is None, f"the worker died with the broker:\n{stack.log_tail(4000)}"
    own.start()
    restarted = time.monotonic()
    second = client.post("/api/v1/jobs/", json={**body, "name": "second"}).json()["id"]
    try:
        wait_for(lambda: job_states(db).get(second) in ("dispatched", "running"), 40, "the second job dispatched")
        wait_for(lambda: job_states(db).get(first) in ("dispatched", "running"), 40, "the first job dispatched")
        recovery_s = time.monotonic() - restarted
    except AssertionError:
        print(job_states(db), stack.log_tail(6000))
        raise
    assert copies_on_grid(db) == {first: 1, second: 1}
    client.close()
    print(
        f"drill broker-loss-mid-task: worker stayed up through the outage; jobs {first} and {second} on the grid once each, "
        f"{recovery_s:.1f} s after Redis returned (the controller takes 4 s a submit here)"
    )
    print("drill-result " + json.dumps({"drill": "broker-loss-mid-task", "recovery_s": round(recovery_s, 2)}))
