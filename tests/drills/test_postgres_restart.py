"""Drill: PostgreSQL restarts (`pg_ctl restart -m fast`) while jobs flow.

The portal runs on a PostgreSQL cluster of the drill's own (port 5439, created and removed here);
the shared server on 5432 is never touched. /healthz says 503 while the database is down and 200
again after, without restarting any portal process (each process's connection pool replaces the
connections the restart broke), and every job reaches running or succeeded once. A request that
cannot be served (the database is down, or it met a connection the restart broke) answers 503
with Retry-After, never 500, and has saved nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import (
    PG_BIN,
    OwnPostgres,
    OwnRedis,
    Stack,
    admissions,
    copies_on_grid,
    job_states,
    portal_stack,
    query,
    scratch_database,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
DONE = {"running", "succeeded"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Stack, OwnPostgres, str]]:
    if not (PG_BIN / "pg_ctl").exists() or shutil.which("redis-server") is None:
        pytest.skip("PostgreSQL 15 server binaries or redis-server are not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("runuser is needed to start PostgreSQL as the postgres user")
    with (
        OwnPostgres(5439) as pg,
        OwnRedis(6391) as own,
        scratch_database(pg.url().replace("postgres://", "postgresql://")) as db,
        portal_stack(db, own.url, tmp_path, SIM_SPEED="60", DISPATCH_STALE_S="5") as stack,
    ):
        yield stack, pg, db


def submit(client: httpx.Client, name: str, refusals: list[str] | None = None) -> int | None:
    """The new job's id, or None; a refusal is noted as 'STATUS retry-after=SECONDS' (0 when nothing answered)."""
    body = {"name": name, "command": ["train"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}
    try:
        response = client.post("/api/v1/jobs/", json=body)
    except httpx.HTTPError:
        status, retry_after = 0, ""
    else:
        if response.status_code == 201:
            return int(response.json()["id"])
        status, retry_after = response.status_code, response.headers.get("Retry-After", "")
    if refusals is not None:
        refusals.append(f"{status} retry-after={retry_after}")
    return None


def submit_until_saved(client: httpx.Client, db: str, name: str, failures: list[str]) -> int | None:
    """Submit; on an error, look the name up first (never submit twice what was saved), then try again."""
    for _ in range(5):
        job_id = submit(client, name, failures)
        if job_id is not None:
            return job_id
        saved = query(db, "SELECT id FROM jobs_job WHERE name = %s", name)
        if saved:
            return int(saved[0][0])
        time.sleep(0.5)
    return None


def test_a_postgres_restart_is_survived_without_restarting_the_portal(world: tuple[Stack, OwnPostgres, str]) -> None:
    stack, pg, db = world
    token = stack.credentials(["alice"])["alice"]["token"]
    client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Token {token}"}, timeout=20)
    acknowledged = [submit(client, f"before-{i}") for i in range(8)]
    pg.stop()
    down_status = stack.health()[0]
    down_refusals: list[str] = []
    refused = submit(client, "while-down", down_refusals)
    started = time.monotonic()
    pg.start()
    wait_for(lambda: stack.health()[0] == 200, 60, "/healthz 200 after the restart")
    back_after = time.monotonic() - started
    pg.restart()  # and once more the way an operator does it, while the portal is busy
    failures: list[str] = []  # a request that met a connection the restart broke answers 503, having saved nothing
    acknowledged += [submit_until_saved(client, db, f"after-{i}", failures) for i in range(8)]
    wait_for(lambda: stack.health()[0] == 200, 60, "/healthz 200 after the second restart")
    try:
        wait_for(lambda: set(job_states(db).values()) <= DONE and len(job_states(db)) >= 16, 75, "every job running or done", 0.1)
        recovery_s = time.monotonic() - started
    except AssertionError:
        print(job_states(db), stack.log_tail())
        raise
    client.close()

    assert down_status in (0, 503), down_status
    assert refused is None, "a submit while the database is down cannot have been saved"
    assert down_refusals == ["503 retry-after=5"], down_refusals
    assert all(f == "503 retry-after=5" for f in failures), failures  # never a 500
    assert None not in acknowledged, "a submit after the restart failed"
    states = job_states(db)
    assert set(acknowledged) == set(states) and set(states.values()) <= DONE, states
    assert max(copies_on_grid(db).values()) == 1 and set(copies_on_grid(db)) == set(states)
    assert max(admissions(db).values()) == 1
    alive = [name for name, process in stack.processes.items() if process.poll() is None]
    assert sorted(alive) == ["beat", "web", "worker"], "a portal process died with the database"
    names = query(db, "SELECT count(DISTINCT name), count(*) FROM jobs_job")[0]
    assert names[0] == names[1]
    assert len(failures) <= 4, failures  # each process's pool hands out at most its few broken connections once
    print(
        f"drill postgres-restart: 2 restarts (stop/start, restart -m fast); /healthz {down_status} while down, 200 again "
        f"{back_after:.1f} s after start; {len(failures)} requests answered 503 with Retry-After on a broken pooled connection (nothing saved); "
        f"{len(states)} jobs, 0 lost, 0 twice; no portal process restarted; every job running or done {recovery_s:.1f} s "
        "after the first start"
    )
    print("drill-result " + json.dumps({"drill": "postgres-restart", "recovery_s": round(recovery_s, 2)}))
