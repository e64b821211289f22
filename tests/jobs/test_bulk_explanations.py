"""Waiting jobs' explanations are written in bulk: only changed rows, only while the job is still in the
state the cycle read, with dates and nulls intact, on PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from django.db import connection
from django.test.utils import CaptureQueriesContext

from cluster.models import Node
from cluster.simulator.backend import SimulatorBackend
from cluster.states import NodeState
from jobs import bulk, services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("reason", "reason_detail", "team_position", "pool_position", "estimated_start")


def write(rows: Sequence[tuple[object, ...]]) -> None:
    with connection.cursor() as cursor:
        for statement in bulk.update_rows(Job, COLUMNS, rows, guard="state"):
            cursor.execute(statement.text, statement.params)


def test_rows_are_written_only_while_their_job_keeps_its_state(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job]
) -> None:
    Node.objects.update(state=NodeState.CORDONED)
    waiting, moved = submit(alice, name="a"), submit(alice, name="b")
    Job.objects.filter(pk=moved.pk).update(state=JobState.CANCELLED)
    start = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    write([(waiting.pk, JobState.PENDING, "quota", "over the team's limit", 3, 7, start),
           (moved.pk, JobState.PENDING, "quota", "stale", 1, 1, None)])  # fmt: skip
    waiting.refresh_from_db()
    moved.refresh_from_db()
    assert (waiting.reason, waiting.reason_detail, waiting.team_position, waiting.pool_position) == (
        "quota",
        "over the team's limit",
        3,
        7,
    )
    assert waiting.estimated_start == start
    assert moved.reason_detail != "stale"  # cancelled meanwhile: untouched
    write([(waiting.pk, JobState.PENDING, "capacity", "", None, None, None)])
    again = Job.objects.get(pk=waiting.pk)
    assert (again.reason, again.team_position, again.estimated_start) == ("capacity", None, None)


def test_more_rows_than_one_statement_holds(grid: SimulatorBackend, alice: User) -> None:
    Node.objects.update(state=NodeState.CORDONED)
    body = {"name": "sweep", "gpu_model": "a100", "gpus_per_node": 1, "walltime": "1:00:00", "command": ["true"]}
    jobs = services.submit(alice, {**body, "array": "0-599"}) + services.submit(alice, {**body, "array": "0-409"})
    assert len(jobs) > bulk.UPDATE_CHUNK
    rows = [(j.pk, JobState.PENDING, "capacity", f"row {j.pk}", i + 1, i + 1, None) for i, j in enumerate(jobs)]
    assert len(bulk.update_rows(Job, COLUMNS, rows, guard="state")) == 2
    write(rows)
    found = dict(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("pk", "team_position"))
    assert found == {j.pk: i + 1 for i, j in enumerate(jobs)}


def test_a_cycle_writes_what_changed_and_nothing_else(grid: SimulatorBackend, alice: User, submit: Callable[..., Job]) -> None:
    Node.objects.update(state=NodeState.CORDONED)
    first, second = submit(alice, name="first"), submit(alice, name="second")
    services.run_admission_cycle()
    assert [j.team_position for j in Job.objects.filter(pk__in=[first.pk, second.pk]).order_by("pk")] == [1, 2]
    with CaptureQueriesContext(connection) as again:
        services.run_admission_cycle()  # nothing moved: no row to write
    assert not [q for q in again.captured_queries if q["sql"].startswith("WITH v")]
    Job.objects.filter(pk=second.pk).update(reason_detail="marker")
    with CaptureQueriesContext(connection) as changed:
        services.run_admission_cycle()
    writes = [q for q in changed.captured_queries if q["sql"].startswith("WITH v")]
    assert len(writes) == 1 and Job.objects.get(pk=second.pk).reason_detail != "marker"


def test_the_embedded_sqlite_database_takes_the_bulk_write(tmp_path: Path) -> None:
    script = """
import django
django.setup()
from datetime import UTC, datetime
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import connection
assert connection.vendor == "sqlite", connection.vendor
from cluster import services as cluster_services
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cluster.models import Node
from jobs import services as job_services
from jobs.models import Job
from portal.models import Membership, Team, User
from tests.jobs.test_bulk_explanations import write
cluster_services.sync_nodes()
Node.objects.update(state="cordoned")
team = Team.objects.create(slug="embedded", name="Embedded")
user = User.objects.create_user("sqlite-user", password="x")
Membership.objects.create(user=user, team=team)
jobs = job_services.submit(user, {"name": "a", "gpu_model": "a100", "gpus_per_node": 1, "walltime": "1:00:00",
                                  "command": ["true"], "array": "0-2"})
start = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
write([(j.pk, "pending", "quota", "detail", i + 1, 9, start if i else None) for i, j in enumerate(jobs)])
got = [(j.team_position, j.pool_position, j.estimated_start) for j in Job.objects.order_by("id")]
assert got == [(1, 9, None), (2, 9, start), (3, 9, start)], got
job_services.run_admission_cycle()
assert all(j.team_position for j in Job.objects.all())
print("bulk ok")
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "grid.settings", "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
           "PORTAL_DATA_DIR": str(tmp_path), "DEBUG": "true", "PYTHONPATH": str(ROOT)}  # fmt: skip
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bulk ok" in done.stdout
